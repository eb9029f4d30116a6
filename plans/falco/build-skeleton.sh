#!/bin/sh
# kmatrix "skeleton" builder (Debian bookworm + bookworm-backports' libbpf-dev and bpftool), a cross
# builder: it runs on the host's architecture and builds the skeleton for $KMATRIX_ARCH. It builds
# libs' ProbeSkeleton target: the modern BPF probe compiled with clang and turned into
# skel_dir/bpf_probe.skel.h by bpftool. BPF objects are the same whatever clang runs on; only the
# target's vmlinux.h and __TARGET_ARCH_* differ, and libs picks those from `uname -m` (0.23.x) or
# CMAKE_SYSTEM_PROCESSOR (later), so for another architecture a `uname` answering it is put first
# on PATH. The libbpf to link comes from the "libbpf" builder, built for the target architecture.
# USE_BUNDLED_DEPS=ON (the plan's variable) lets libs download its other dependencies; libbpf
# stays Debian's either way, so skeleton and scap-open agree on it.
# Env: KMATRIX_SRC (libs/, falco/), KMATRIX_OUT, KMATRIX_ARCH; optional LIBS_VERSION, and
# LIBBPF_INCLUDE / LIBBPF_LIB / BPFTOOL to use a libbpf or bpftool outside the standard paths.
set -eu
# Exit 78 (EX_CONFIG, the plan's environmentExitCodes): this builder's environment is wrong (a tool
# missing or too old), not the libs code it builds.
env_fail() {
	echo "$*" >&2
	exit 78
}
LIBS=$KMATRIX_SRC/libs
HOST_ARCH=$(uname -m)
TARGET_ARCH=${KMATRIX_ARCH:-$HOST_ARCH}
# Debian's libbpf-dev paths (backports' 1.4.x replaces bookworm's 1.1 there), or lib64/lib on other
# distributions; configuring needs a libbpf.a to exist, the skeleton itself does not link it.
LIBBPF_INCLUDE=${LIBBPF_INCLUDE:-/usr/include}
if [ -z "${LIBBPF_LIB:-}" ]; then
	for d in "/usr/lib/$HOST_ARCH-linux-gnu" /usr/lib64 /usr/lib /usr/local/lib64 /usr/local/lib; do
		[ -f "$d/libbpf.a" ] && LIBBPF_LIB=$d/libbpf.a && break
	done
fi
LIBBPF_LIB=${LIBBPF_LIB:-/usr/lib/$HOST_ARCH-linux-gnu/libbpf.a}
BPFTOOL=${BPFTOOL:-$(command -v bpftool || echo /usr/sbin/bpftool)}
BUILD=$(mktemp -d "${TMPDIR:-/var/tmp}/falco-skeleton.XXXXXX")
if [ "$TARGET_ARCH" != "$HOST_ARCH" ]; then
	mkdir "$BUILD/bin"
	cat >"$BUILD/bin/uname" <<SHIM
#!/bin/sh
[ "\$*" = -m ] && { echo $TARGET_ARCH; exit 0; }
exec /bin/uname "\$@"
SHIM
	chmod +x "$BUILD/bin/uname"
	PATH=$BUILD/bin:$PATH
fi
set -x

# The probe needs libbpf >= 1.2 (PT_REGS_PARM6_CORE_SYSCALL): fail early and clearly.
[ -f "$LIBBPF_INCLUDE/bpf/libbpf_version.h" ] ||
	env_fail "no libbpf headers in $LIBBPF_INCLUDE/bpf: libs' modern probe needs libbpf-dev >= 1.2"
LIBBPF_VERSION=$(awk '/define LIBBPF_(MAJOR|MINOR)_VERSION/ {printf "%s%s", sep, $3; sep = "."}' \
	"$LIBBPF_INCLUDE/bpf/libbpf_version.h")
case $LIBBPF_VERSION in
0.* | 1.[01]) env_fail "libbpf $LIBBPF_VERSION is too old: libs' modern probe needs >= 1.2" ;;
esac
command -v "$BPFTOOL" >/dev/null || env_fail "no bpftool ($BPFTOOL): libs' modern probe needs it for its skeleton"
command -v clang >/dev/null || env_fail "no clang: libs' modern probe is compiled with it"
"$BPFTOOL" version
clang --version | head -n 1
uname -m

cmake -S "$KMATRIX_SRC/falco/libscap-only" -B "$BUILD" \
	-DLIBS_DIR="$LIBS" \
	-DFALCOSECURITY_LIBS_VERSION="${LIBS_VERSION:-0.0.0-kmatrix}" \
	-DDRIVER_VERSION="${LIBS_VERSION:-0.0.0-kmatrix}" \
	-DUSE_BUNDLED_DEPS="${USE_BUNDLED_DEPS:-OFF}" -DUSE_BUNDLED_LIBBPF=OFF -DCREATE_TEST_TARGETS=OFF -DBUILD_LIBSCAP_GVISOR=OFF \
	-DBUILD_LIBSCAP_MODERN_BPF=ON \
	-DLIBBPF_INCLUDE="$LIBBPF_INCLUDE" -DLIBBPF_LIB="$LIBBPF_LIB" \
	-DMODERN_BPFTOOL_EXE="$BPFTOOL" \
	>"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; exit 1; }
cat "$BUILD/configure.log"
# A skeleton for another architecture would only show later, as the modern probe failing in every
# machine: refuse it here, where it is this builder's fault.
case $TARGET_ARCH in x86_64) BPF_ARCH=x86 ;; aarch64) BPF_ARCH=arm64 ;; *) BPF_ARCH=$TARGET_ARCH ;; esac
if ! grep -q "Target arch: $BPF_ARCH\$" "$BUILD/configure.log"; then
	env_fail "libs configured its modern probe for another architecture than $TARGET_ARCH (its 'Target arch' above)"
fi
cmake --build "$BUILD" --target ProbeSkeleton --parallel "$(nproc)"

mkdir -p "$KMATRIX_OUT/skel_dir"
cp "$BUILD/skel_dir/bpf_probe.skel.h" "$KMATRIX_OUT/skel_dir/"
rm -rf "$BUILD"
ls -lR "$KMATRIX_OUT"
