#!/bin/sh
# Installs the Debian packages qpool needs to build, test and run its demo.
#
# Usage: scripts/install-deps.sh [EXTRA_PACKAGE...]
#
# Only packages that are not installed yet are asked for; `apt-get update`
# runs once, and only when something is missing.  Set QPOOL_SKIP_DEPS=1 to do
# nothing (for machines where the packages come from elsewhere).
set -eu

# Build: compiler, pkg-config and the libraries the code links against.
BUILD_PKGS="build-essential pkg-config libxml2-dev libssl-dev zlib1g-dev libzstd-dev
	libblkid-dev libfuse3-dev libcryptsetup-dev"
# Tests and demo: real filesystems on loop devices, FUSE, valgrind.
TEST_PKGS="fuse3 btrfs-progs xfsprogs e2fsprogs util-linux valgrind"
# Later tiers add theirs here (qemu, lvm2, scrypt...).
# Backups: the scrypt tool for interop tests, clang for the libFuzzer targets.
EXTRA_PKGS="scrypt clang"
# Backups: the real tools the interop tests and the benchmark run against.
EXTRA_PKGS="$EXTRA_PKGS gzip zstd tar xz-utils bzip2"
# qpoold: qemu-img/qemu-io as the FUSE tests' consumer, fio for bench/fuse-io.sh,
# python3 for the read-ahead test's O_DIRECT reader and the benchmark's tables.
EXTRA_PKGS="$EXTRA_PKGS qemu-utils fio python3"
# Device-mapper test VM (tests/vm/): qemu TCG booting Debian's kernel with a
# busybox initramfs holding lvm2, thin-provisioning-tools and cryptsetup.
EXTRA_PKGS="$EXTRA_PKGS qemu-system-x86 linux-image-amd64 busybox-static lvm2
	thin-provisioning-tools cryptsetup-bin cpio kmod"

PKGS="$BUILD_PKGS $TEST_PKGS $EXTRA_PKGS $*"

if [ "${QPOOL_SKIP_DEPS:-0}" = 1 ]; then
	exit 0
fi

missing=""
for p in $PKGS; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done

if [ -z "$missing" ]; then
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "install-deps: missing packages:$missing (run as root to install them)" >&2
		exit 1
	fi
fi

echo "install-deps: installing$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086 # the list is split on purpose
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
