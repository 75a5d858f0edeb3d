#!/bin/sh
# Guest script: ephemeral volatile volumes (dm-crypt in plain mode with a
# random key that is never stored), for both drivers:
#   lvm_thin      a pool with ephemeral_volatile=True on a VG of its own
#   file-reflink  a pool with ephemeral_volatile=True in a folder of /tmp
# Each: `vm start` gives /dev/mapper/...@crypt for volatile; a marker written
# there is not in the backing LV or file in plaintext; after stop the
# mapping, the loop device and the backing are gone, and the next start
# shows zeros at the marker; `ephemeral False` gives the plain device back;
# crash recovery closes a mapping left behind.  Then `volume config
# VM:volatile ephemeral True` on pools without ephemeral_volatile.
#
# The VG is on $EPHEMERAL_DISK when set, else on a loop device over a sparse
# file in /tmp (needs the loop module: QP_VM_EXTRA_MODULES=loop).
#	QP_VM_EXTRA_MODULES=loop tests/vm/run.sh tests/vm/guest/ephemeral.sh
. /tests/vm/vmlib.sh

set -u
MiB=1048576
T=$TEST_TMP/ephemeral
R=$T/root
VG=ephvg
rm -rf "$T"
mkdir -p "$T" "$R"

# dev VOL: path of VOL in the last `start` output.
dev() {
	awk -v v="$1" '$1 == v { print $2 }' "$T/att"
}

start() {
	ok vm start "$1"
	cp "$T/out" "$T/att"
}

# has_marker FILE OFF_MIB: whether the marker is in 1 MiB of FILE at OFF_MIB.
has_marker() {
	dd if="$1" bs=$MiB skip="$2" count=1 2>/dev/null | strings | grep -q "$MARK"
}

# zeros FILE: whether the first 64 KiB of FILE are zeros.
zeros() {
	dd if="$1" bs=65536 count=1 2>/dev/null | cmp -s - "$T/zero64k"
}

# mapping_gone NAME: no device-mapper device NAME, no node.
mapping_gone() {
	! dmsetup info "$1" >/dev/null 2>&1 && [ ! -e "/dev/mapper/$1" ]
}

MARK="qpool-ephemeral-marker-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
dd if=/dev/zero of="$T/zero64k" bs=65536 count=1 2>/dev/null
yes "$MARK" | head -c $MiB >"$T/mark"

[ -e /dev/loop-control ] || modprobe loop >/dev/null 2>&1 || true
HAVE_LOOP=0
[ -e /dev/loop-control ] && HAVE_LOOP=1

# BACKING: the path of the volatile LV or image of VM app in the pool under
# test (set by each driver's part); BACKING_IS_FILE: 1 for file-reflink.

# t_ephemeral DRIVER POOL: the checks, for VM app (AppVM of tpl) in POOL.
t_ephemeral() {
	drv=$1
	ok vm create --class TemplateVM -P "$2" tpl
	ok vm create --class AppVM --template tpl -P "$2" app
	ok volume info app:volatile ephemeral
	[ "$(cat "$T/out")" = True ] ||
		die "volatile in a pool with ephemeral_volatile=True: ephemeral $(cat "$T/out")"
	ok volume info app:private ephemeral
	[ "$(cat "$T/out")" = False ] || die "private is ephemeral"
	loops0=$(losetup -a 2>/dev/null | wc -l)

	start app
	d=$(dev volatile)
	case $d in
	/dev/mapper/*@crypt) ;;
	*) die "volatile is served as '$d', not through dm-crypt" ;;
	esac
	name=${d#/dev/mapper/}
	[ -b "$d" ] || die "'$d' is not a block device"
	[ "$(dev private)" != "$d" ] || die "private and volatile share '$d'"
	cryptsetup status "$name" >"$T/status" 2>&1 || die "cryptsetup status: $(cat "$T/status")"
	grep -q 'type: *PLAIN' "$T/status" || die "not plain: $(cat "$T/status")"
	grep -q 'cipher: *aes-xts-plain64' "$T/status" || die "cipher: $(cat "$T/status")"
	grep -q 'keysize: *512 bits' "$T/status" || die "key size: $(cat "$T/status")"
	zeros "$d" || die "the first 64 KiB of '$d' are not zeros"
	[ -e "$BACKING" ] || die "backing '$BACKING' missing while running"
	if [ "$BACKING_IS_FILE" = 1 ]; then
		losetup -a | grep -q "$BACKING" || die "no loop device for '$BACKING'"
	fi
	# the marker at 0 and at 1 MiB (past the zeroed start)
	dd if="$T/mark" of="$d" bs=$MiB seek=0 conv=notrunc,fsync 2>/dev/null &&
		dd if="$T/mark" of="$d" bs=$MiB seek=1 conv=notrunc,fsync 2>/dev/null ||
		die "cannot write '$d'"
	has_marker "$d" 0 && has_marker "$d" 1 || die "marker not read back through '$d'"
	has_marker "$BACKING" 0 && die "marker in plaintext in '$BACKING' at 0"
	has_marker "$BACKING" 1 && die "marker in plaintext in '$BACKING' at 1 MiB"
	dd if="$BACKING" bs=$MiB count=2 of="$T/cipher" 2>/dev/null
	cmp -s "$T/cipher" "$T/mark" && die "backing holds the plaintext"
	vm_pass "vm/ephemeral/$drv/encrypted"

	ok vm stop app
	mapping_gone "$name" || die "mapping '$name' still there after stop"
	[ ! -e "$BACKING" ] || die "backing '$BACKING' still there after stop"
	[ "$(losetup -a 2>/dev/null | wc -l)" = "$loops0" ] ||
		die "loop device left after stop: $(losetup -a)"
	strings "$T/cipher" | grep -q "$MARK" && die "marker in the saved ciphertext"
	start app
	[ "$(dev volatile)" = "$d" ] || die "second start: '$(dev volatile)', was '$d'"
	zeros "$d" || die "marker offset is not zeros after a new start"
	has_marker "$d" 1 && die "marker readable after a new start"
	ok vm stop app
	mapping_gone "$name" || die "mapping '$name' still there after the second stop"
	vm_pass "vm/ephemeral/$drv/gone-after-stop"

	# turned off per volume: the plain LV or file again
	ok volume config app:volatile ephemeral False
	start app
	case $(dev volatile) in
	/dev/mapper/*@crypt) die "ephemeral False still served through dm-crypt" ;;
	esac
	mapping_gone "$name" || die "mapping '$name' exists with ephemeral False"
	ok vm stop app
	ok volume config app:volatile ephemeral True
	vm_pass "vm/ephemeral/$drv/off"

	# a crash: a new boot finds the VM started; recovery closes the mapping
	QPOOL_BOOT_ID=eph-boot-1 q vm start app >"$T/att" 2>"$T/err" ||
		die "start: $(cat "$T/err")"
	[ "$(dev volatile)" = "$d" ] || die "crash start: '$(dev volatile)'"
	# any command that writes the state recovers
	QPOOL_BOOT_ID=eph-boot-2 q volume config app:volatile ephemeral True >/dev/null 2>"$T/err" ||
		die "recovery: $(cat "$T/err")"
	mapping_gone "$name" || die "mapping '$name' left after recovery"
	[ ! -e "$BACKING" ] || die "backing '$BACKING' left after recovery"
	[ "$(losetup -a 2>/dev/null | wc -l)" = "$loops0" ] ||
		die "loop device left after recovery: $(losetup -a)"
	vm_pass "vm/ephemeral/$drv/recover"

	ok vm remove app
	ok vm remove tpl
}

# t_per_volume DRIVER POOL: ephemeral set on one volume of a plain pool.
t_per_volume() {
	ok vm create --class StandaloneVM -P "$2" sa
	ok volume info sa:volatile ephemeral
	[ "$(cat "$T/out")" = False ] || die "volatile of a plain pool is ephemeral"
	start sa
	case $(dev volatile) in
	/dev/mapper/*@crypt) die "plain pool serves volatile through dm-crypt" ;;
	esac
	ok vm stop sa
	q volume config sa:private ephemeral True >/dev/null 2>"$T/err" &&
		die "private accepted ephemeral True"
	ok volume config sa:volatile ephemeral True
	start sa
	d=$(dev volatile)
	case $d in
	/dev/mapper/*@crypt) ;;
	*) die "volatile with ephemeral True is served as '$d'" ;;
	esac
	dd if="$T/mark" of="$d" bs=$MiB seek=1 conv=notrunc,fsync 2>/dev/null || die "cannot write '$d'"
	ok vm stop sa
	mapping_gone "${d#/dev/mapper/}" || die "mapping left after stop"
	ok vm remove sa
	vm_pass "vm/ephemeral/$1/per-volume"
}

# ---- lvm_thin -----------------------------------------------------------------

D=${EPHEMERAL_DISK:-}
if [ -z "$D" ] && [ "$HAVE_LOOP" = 1 ]; then
	truncate -s 768M "$T/pv.img"
	losetup -f "$T/pv.img" && D=$(losetup -a | awk -F: -v f="$T/pv.img" 'index($0, f) { print $1 }')
fi
if [ -z "$D" ] || [ ! -b "$D" ]; then
	vm_skip vm/ephemeral/lvm_thin "no disk (set EPHEMERAL_DISK or load the loop module)"
else
	vm_step vm/ephemeral/lvm_thin/vg sh -c "
		pvcreate -y '$D' && vgcreate $VG '$D' && lvcreate -T -L 512M $VG/pool" || exit 1
	ok pool add el lvm_thin -o volume_group=$VG,thin_pool=pool,ephemeral_volatile=True
	ok pool add pl lvm_thin -o volume_group=$VG,thin_pool=pool
	BACKING=/dev/mapper/$VG-vm--app--volatile
	BACKING_IS_FILE=0
	(t_ephemeral lvm_thin el) || vm_fail vm/ephemeral/lvm_thin
	(t_per_volume lvm_thin pl) || vm_fail vm/ephemeral/lvm_thin/per-volume
	q pool remove el >/dev/null 2>&1
	q pool remove pl >/dev/null 2>&1
	vgremove -y -f $VG >/dev/null 2>&1
	pvremove -y "$D" >/dev/null 2>&1
	case $D in /dev/loop*) losetup -d "$D" ;; esac
fi

# ---- file-reflink -------------------------------------------------------------

if [ "$HAVE_LOOP" != 1 ]; then
	vm_skip vm/ephemeral/file-reflink "no loop devices (QP_VM_EXTRA_MODULES=loop)"
else
	R=$T/root-reflink
	mkdir -p "$T/fe" "$T/fp" "$R"
	ok pool add fe file-reflink -o dir_path=$T/fe,setup_check=False,ephemeral_volatile=True
	ok pool add fp file-reflink -o dir_path=$T/fp,setup_check=False
	BACKING=$T/fe/appvms/app/volatile-dirty.img
	BACKING_IS_FILE=1
	(t_ephemeral file-reflink fe) || vm_fail vm/ephemeral/file-reflink
	(t_per_volume file-reflink fp) || vm_fail vm/ephemeral/file-reflink/per-volume
fi
rm -rf "$T"
vm_status
