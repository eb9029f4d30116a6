#!/bin/sh
# kmatrix "skeleton" builder (Debian bookworm + bookworm-backports libbpf-dev/bpftool).
# Builds libs' ProbeSkeleton target: the modern BPF probe compiled with clang and turned into
# skel_dir/bpf_probe.skel.h by bpftool. It also ships the exact libbpf (headers + static lib) the
# skeleton was generated for: a skeleton run against an older libbpf crashes scap-open, so the
# scap-open builder links this one statically. Debian's libbpf-dev takes the kernel UAPI headers
# (linux/bpf.h, ...) from linux-libc-dev; libpman needs newer ones than bullseye's (BPF_FUNC_loop,
# 5.17), so ship this distro's too, as libbpf's own "install_uapi_headers" would.
# USE_BUNDLED_DEPS=ON (the plan's variable) lets libs download its other dependencies; libbpf
# stays the one shipped here either way, so skeleton and scap-open agree on it.
# Env: KMATRIX_SRC (libs/, falco/), KMATRIX_OUT, KMATRIX_ARCH; optional LIBS_VERSION, and
# LIBBPF_INCLUDE / LIBBPF_LIB / BPFTOOL to use a libbpf or bpftool outside the standard paths.
set -eu
LIBS=$KMATRIX_SRC/libs
ARCH=${KMATRIX_ARCH:-$(uname -m)}
# Debian's libbpf-dev paths (backports' 1.4.x replaces bookworm's 1.1 there).
LIBBPF_INCLUDE=${LIBBPF_INCLUDE:-/usr/include}
LIBBPF_LIB=${LIBBPF_LIB:-/usr/lib/$ARCH-linux-gnu/libbpf.a}
BPFTOOL=${BPFTOOL:-$(command -v bpftool || echo /usr/sbin/bpftool)}
BUILD=$(mktemp -d "${TMPDIR:-/var/tmp}/falco-skeleton.XXXXXX")
set -x

# The probe needs libbpf >= 1.2 (PT_REGS_PARM6_CORE_SYSCALL): fail early and clearly.
grep -E 'define LIBBPF_(MAJOR|MINOR)_VERSION' "$LIBBPF_INCLUDE/bpf/libbpf_version.h"
"$BPFTOOL" version
clang --version | head -n 1

cmake -S "$KMATRIX_SRC/falco/libscap-only" -B "$BUILD" \
	-DLIBS_DIR="$LIBS" \
	-DFALCOSECURITY_LIBS_VERSION="${LIBS_VERSION:-0.0.0-kmatrix}" \
	-DDRIVER_VERSION="${LIBS_VERSION:-0.0.0-kmatrix}" \
	-DUSE_BUNDLED_DEPS="${USE_BUNDLED_DEPS:-OFF}" -DUSE_BUNDLED_LIBBPF=OFF -DCREATE_TEST_TARGETS=OFF -DBUILD_LIBSCAP_GVISOR=OFF \
	-DBUILD_LIBSCAP_MODERN_BPF=ON \
	-DLIBBPF_INCLUDE="$LIBBPF_INCLUDE" -DLIBBPF_LIB="$LIBBPF_LIB" \
	-DMODERN_BPFTOOL_EXE="$BPFTOOL"
cmake --build "$BUILD" --target ProbeSkeleton --parallel "$(nproc)"

mkdir -p "$KMATRIX_OUT/skel_dir" "$KMATRIX_OUT/libbpf/lib" \
	"$KMATRIX_OUT/libbpf/include/bpf" "$KMATRIX_OUT/libbpf/include/linux"
cp "$BUILD/skel_dir/bpf_probe.skel.h" "$KMATRIX_OUT/skel_dir/"
cp "$LIBBPF_INCLUDE"/bpf/*.h "$KMATRIX_OUT/libbpf/include/bpf/"
cp /usr/include/linux/bpf.h /usr/include/linux/bpf_common.h /usr/include/linux/btf.h \
	"$KMATRIX_OUT/libbpf/include/linux/"
cp "$LIBBPF_LIB" "$KMATRIX_OUT/libbpf/lib/libbpf.a"
rm -rf "$BUILD"
ls -lR "$KMATRIX_OUT"
