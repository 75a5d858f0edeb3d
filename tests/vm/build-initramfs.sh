#!/bin/sh
# Builds the initramfs of qpool's device-mapper test VM.
#
# Usage: tests/vm/build-initramfs.sh OUT
#
# OUT gets three gzip'd cpio archives one after the other (the kernel unpacks
# them in order, later files replacing earlier ones):
#   1. base: busybox, lvm, dmsetup, cryptsetup, pdata_tools (thin_check...),
#      mke2fs, their libraries, the device-mapper, crypto and virtio modules of
#      the host's Debian kernel with modules.dep, and /etc/lvm/lvm.conf for
#      running without udev.  Cached under $(vm_cache) and rebuilt only when
#      the kernel, a package version or this script changes.
#   2. libraries of qpool (cached by their list: libxml2 pulls in ICU).
#   3. rebuilt each run: /init (tests/vm/init.sh), qpool (and qpoold when
#      built) as /bin/qpool, tests/lib.sh, tests/integration/conformance.sh
#      (also as /tests/conformance.sh), tests/vm/vmlib.sh and every
#      tests/vm/guest/*.sh, at the same paths under /tests.
#
# Environment:
#   QPOOL                the qpool binary (default: ./qpool at the top)
#   QP_VM_KVER           kernel version (default: newest with modules)
#   QP_VM_CACHE          cache folder (default: ${TMPDIR:-/tmp}/qpool-vm-cache)
#   QP_VM_EXTRA_MODULES  more kernel modules for the base image
#   QP_VM_EXTRA_BINS     more host programs (absolute paths) for /sbin
set -eu

TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/tests/vm/common.sh"

[ $# -eq 1 ] || {
	echo "usage: $0 OUT" >&2
	exit 2
}
OUT=$1
QPOOL=${QPOOL:-$TOP/qpool}
[ -x "$QPOOL" ] || {
	echo "build-initramfs: '$QPOOL' is not built" >&2
	exit 1
}

why=$(vm_missing)
[ -z "$why" ] || {
	echo "build-initramfs: $why" >&2
	exit 1
}
KV=$(vm_kver)
CACHE=$(vm_cache)
mkdir -p "$CACHE"

MODULES="virtio_pci virtio_blk loop dm-mod dm-thin-pool dm-snapshot dm-crypt xts
	algif_skcipher algif_hash ext4 ${QP_VM_EXTRA_MODULES:-}"
BINS="lvm dmsetup cryptsetup pdata_tools mke2fs"
LVM_CMDS="pvcreate pvremove pvs pvscan pvchange pvresize pvdisplay vgcreate vgremove vgs
	vgchange vgscan vgextend vgreduce vgdisplay vgrename lvcreate lvremove lvs lvchange
	lvextend lvresize lvreduce lvrename lvconvert lvdisplay lvscan"
THIN_CMDS="thin_check thin_repair thin_dump thin_restore thin_metadata_size thin_ls
	thin_rmap thin_delta thin_trim"

# which NAME: the host path of a program (sbin folders too).
which_bin() {
	case $1 in
	/*)
		printf '%s\n' "$1"
		return 0
		;;
	esac
	for d in /usr/sbin /sbin /usr/bin /bin; do
		[ -x "$d/$1" ] && {
			printf '%s\n' "$d/$1"
			return 0
		}
	done
	echo "build-initramfs: '$1' is not installed" >&2
	return 1
}

# copy_libs ROOT FILE...: the shared libraries of FILEs (and the loader).
copy_libs() {
	_r=$1
	shift
	for _l in $(ldd "$@" 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u) \
		/lib64/ld-linux-x86-64.so.2; do
		mkdir -p "$_r${_l%/*}"
		cp -L "$_l" "$_r$_l"
	done
}

# pack ROOT OUT: a gzip'd newc cpio of ROOT, written atomically.
pack() {
	(cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qpool-initramfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. base (cached) --------------------------------------------------------

bin_paths=
for b in $BINS ${QP_VM_EXTRA_BINS:-}; do
	bin_paths="$bin_paths $(which_bin "$b")"
done
versions=$(dpkg-query -W -f='${Package}=${Version}\n' busybox-static lvm2 dmsetup \
	thin-provisioning-tools cryptsetup-bin e2fsprogs "linux-image-$KV" 2>/dev/null || true)
key=$(printf '%s\n%s\n%s\n%s\n' "$KV" "$versions" "$MODULES" "$bin_paths" |
	cat - "$0" | cksum | awk '{ print $1 }')
BASE=$CACHE/base-$KV-$key.cpio.gz

if [ ! -s "$BASE" ]; then
	R=$WORK/base
	mkdir -p "$R/bin" "$R/sbin" "$R/etc/lvm" "$R/proc" "$R/sys" "$R/dev" "$R/run" \
		"$R/tmp" "$R/mnt" "$R/root" "$R/lib64" "$R/usr/bin" "$R/usr/sbin"
	cp /bin/busybox "$R/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
	done
	for p in $bin_paths; do
		rm -f "$R/sbin/${p##*/}"
		cp -L "$p" "$R/sbin/"
	done
	for c in $LVM_CMDS; do
		ln -s lvm "$R/sbin/$c"
	done
	for c in $THIN_CMDS; do
		ln -s pdata_tools "$R/sbin/$c"
	done
	for c in mkfs.ext4 mkfs.ext2; do
		ln -s mke2fs "$R/sbin/$c"
	done
	# shellcheck disable=SC2086 # a list of paths
	copy_libs "$R" $bin_paths
	# glibc loads it at run time (thread cancellation in lvm).
	l=/lib/x86_64-linux-gnu/libgcc_s.so.1
	if [ -e "$l" ]; then
		mkdir -p "$R${l%/*}"
		cp -L "$l" "$R$l"
	fi

	# Modules with their dependencies, in load order.
	# shellcheck disable=SC2086 # a list of names
	order=$(for m in $MODULES; do modprobe -S "$KV" --show-depends "$m"; done |
		awk '$1 == "insmod" && !s[$2]++ { print $2 }')
	for f in $order; do
		mkdir -p "$R${f%/*}"
		cp "$f" "$R$f"
	done
	for f in modules.order modules.builtin modules.builtin.modinfo; do
		[ -e "/lib/modules/$KV/$f" ] && cp "/lib/modules/$KV/$f" "$R/lib/modules/$KV/"
	done
	depmod -b "$R" "$KV"
	printf '%s\n' "$order" >"$R/modules.list"

	cat >"$R/etc/lvm/lvm.conf" <<'EOF'
# The test VM has no udev, no lvmetad/lvmpolld, no dmeventd.
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
global {
	use_lvmpolld = 0
	event_activation = 0
	thin_check_executable = "/sbin/thin_check"
	thin_repair_executable = "/sbin/thin_repair"
	thin_dump_executable = "/sbin/thin_dump"
}
devices {
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
	use_devicesfile = 0
}
backup {
	backup = 0
	archive = 0
}
EOF
	echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
	echo "root:x:0:" >"$R/etc/group"
	pack "$R" "$BASE"
fi

# ---- 2. qpool's libraries (cached by their list) ---------------------------

progs=$QPOOL
qpoold=$(dirname "$QPOOL")/qpoold
[ -x "$qpoold" ] && progs="$progs $qpoold"
# shellcheck disable=SC2086 # one or two paths
libs=$(ldd $progs 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u)
lkey=$(printf '%s\n' "$libs" | xargs ls -lL 2>/dev/null | cksum | awk '{ print $1 }')
LIBS=$CACHE/libs-$lkey.cpio.gz
if [ ! -s "$LIBS" ]; then
	L=$WORK/libs
	mkdir -p "$L"
	# shellcheck disable=SC2086
	copy_libs "$L" $progs
	pack "$L" "$LIBS"
fi

# ---- 3. qpool and the tests (every run) ----------------------------------

T=$WORK/top
mkdir -p "$T/bin" "$T/tests/integration" "$T/tests/vm/guest"
cp "$TOP/tests/vm/init.sh" "$T/init"
chmod 0755 "$T/init"
cp -L "$QPOOL" "$T/bin/qpool"
[ -x "$qpoold" ] && cp -L "$qpoold" "$T/bin/qpoold"
cp "$TOP/tests/lib.sh" "$T/tests/lib.sh"
cp "$TOP/tests/integration/conformance.sh" "$T/tests/integration/conformance.sh"
ln -s integration/conformance.sh "$T/tests/conformance.sh"
cp "$TOP/tests/vm/vmlib.sh" "$T/tests/vm/vmlib.sh"
for g in "$TOP"/tests/vm/guest/*.sh; do
	[ -f "$g" ] && cp "$g" "$T/tests/vm/guest/"
done
pack "$T" "$WORK/top.cpio.gz"

cat "$BASE" "$LIBS" "$WORK/top.cpio.gz" >"$OUT"
# Keeps the cache small: what no run used for two days goes.
touch "$BASE" "$LIBS"
find "$CACHE" -name '*.cpio.gz' -mtime +2 -exec rm -f {} + 2>/dev/null || true
