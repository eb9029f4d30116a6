#!/bin/sh
# kmatrix "libbpf" builder (Debian bookworm + bookworm-backports' libbpf 1.4), once per architecture:
# ships the libbpf the skeleton is generated with, headers and static library, built for this
# machine's architecture, for the scap-open builder to link statically (a skeleton run against an
# older libbpf crashes scap-open; bullseye's is 0.3). Debian's libbpf-dev takes the kernel UAPI
# headers (linux/bpf.h, ...) from linux-libc-dev; libpman needs newer ones than bullseye's
# (BPF_FUNC_loop, 5.17), so ship this distro's too, as libbpf's own "install_uapi_headers" would.
# Outputs in $KMATRIX_OUT: include/bpf/*.h, include/linux/{bpf,bpf_common,btf}.h, lib/libbpf.a
set -eu
# Exit 78 (EX_CONFIG, the plan's environmentExitCodes): this builder's environment is wrong (libbpf
# missing or too old), not the libs code the plan tests.
env_fail() {
	echo "$*" >&2
	exit 78
}
# Debian's multiarch directory, or lib64/lib elsewhere (Falco's CentOS/Fedora-based builder images).
LIB=
for d in "/usr/lib/$(uname -m)-linux-gnu" /usr/lib64 /usr/lib /usr/local/lib64 /usr/local/lib; do
	[ -f "$d/libbpf.a" ] && LIB=$d/libbpf.a && break
done
set -x
[ -f /usr/include/bpf/libbpf_version.h ] && [ -f "$LIB" ] ||
	env_fail "no libbpf headers or libbpf.a: install libbpf-dev (libbpf-static elsewhere) >= 1.2"
grep -E 'define LIBBPF_(MAJOR|MINOR)_VERSION' /usr/include/bpf/libbpf_version.h
# The skeleton builder's libbpf (>= 1.2); an older one here would crash scap-open, not fail a build.
LIBBPF_VERSION=$(awk '/define LIBBPF_(MAJOR|MINOR)_VERSION/ {printf "%s%s", sep, $3; sep = "."}' \
	/usr/include/bpf/libbpf_version.h)
case $LIBBPF_VERSION in
0.* | 1.[01]) env_fail "libbpf $LIBBPF_VERSION is too old: libs' modern probe needs >= 1.2" ;;
esac
mkdir -p "$KMATRIX_OUT/lib" "$KMATRIX_OUT/include/bpf" "$KMATRIX_OUT/include/linux"
cp /usr/include/bpf/*.h "$KMATRIX_OUT/include/bpf/"
cp /usr/include/linux/bpf.h /usr/include/linux/bpf_common.h /usr/include/linux/btf.h "$KMATRIX_OUT/include/linux/"
cp "$LIB" "$KMATRIX_OUT/lib/libbpf.a"
