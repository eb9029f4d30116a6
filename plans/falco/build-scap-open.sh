#!/bin/sh
# kmatrix "scap-open" builder (Debian bullseye: the oldest glibc of the matrix, so the binary
# runs on every newer distro too).
# Outputs in $KMATRIX_OUT:
#   scap-open      libscap's example with the modern probe skeleton (from the skeleton builder)
#                  embedded and the libbpf builder's libbpf linked statically (libelf/zlib/glibc dynamic)
#   driver/        the configured kmod Kbuild dir: make -C driver  ->  driver/scap.ko
#   bpf/           libs <= 0.23 only, the configured legacy probe Kbuild dir: make -C bpf -> probe.o
#   configure.log  cmake's configure output
# Both Kbuild dirs come from the same configure as scap-open, so their API/schema versions match.
set -eu
LIBS=$KMATRIX_SRC/libs
SKEL=$KMATRIX_ARTIFACTS/skeleton
LIBBPF=$KMATRIX_ARTIFACTS/libbpf
VERSION=${LIBS_VERSION:-0.0.0-kmatrix}
BUILD=$(mktemp -d "${TMPDIR:-/var/tmp}/falco-scap-open.XXXXXX")
# The legacy probe exists up to libs 0.23.x (removed in 0.24.0).
BPF_ARGS=
[ -d "$LIBS/driver/bpf" ] && BPF_ARGS=-DBUILD_BPF=ON
set -x

# On aarch64, bookworm's libbpf.a (gcc 12, outline atomics) calls a libgcc helper that bullseye's
# gcc 10 lacks; the example runner's small definition of it is linked in (an object, so it always is).
COMPAT=
if [ "$(uname -m)" = aarch64 ]; then
	gcc -O2 -c "$KMATRIX_SRC/drivers/runner/libgcc-compat.c" -o "$BUILD/libgcc-compat.o"
	COMPAT=$BUILD/libgcc-compat.o
fi

# Configure through our wrapper: libs' top level needs libsinsp's deps and CMake >= 3.24.
if ! cmake -S "$KMATRIX_SRC/falco/libscap-only" -B "$BUILD" \
	-DLIBS_DIR="$LIBS" \
	-DFALCOSECURITY_LIBS_VERSION="$VERSION" -DDRIVER_VERSION="$VERSION" \
	-DUSE_BUNDLED_DEPS="${USE_BUNDLED_DEPS:-OFF}" -DUSE_BUNDLED_LIBBPF=OFF -DCREATE_TEST_TARGETS=OFF -DBUILD_LIBSCAP_GVISOR=OFF \
	-DBUILD_DRIVER=ON $BPF_ARGS \
	-DBUILD_LIBSCAP_MODERN_BPF=ON -DMODERN_BPF_SKEL_DIR="$SKEL/skel_dir" \
	-DLIBBPF_INCLUDE="$LIBBPF/include" -DLIBBPF_LIB="$LIBBPF/lib/libbpf.a" \
	-DCMAKE_EXE_LINKER_FLAGS="$COMPAT" \
	>"$KMATRIX_OUT/configure.log" 2>&1; then
	cat "$KMATRIX_OUT/configure.log"
	exit 1
fi
cat "$KMATRIX_OUT/configure.log"

# Only scap-open: "all" would also build the kmod/probe against this VM's kernel.
cmake --build "$BUILD" --target scap-open --parallel "$(nproc)"

cp "$BUILD/libscap/examples/01-open/scap-open" "$KMATRIX_OUT/"
cp -R "$BUILD/driver/src" "$KMATRIX_OUT/driver"
if [ -n "$BPF_ARGS" ]; then
	cp -R "$BUILD/driver/bpf/src" "$KMATRIX_OUT/bpf"
fi
rm -rf "$BUILD"
ldd "$KMATRIX_OUT/scap-open"
"$KMATRIX_OUT/scap-open" --help >/dev/null
ls -l "$KMATRIX_OUT" "$KMATRIX_OUT/driver"
