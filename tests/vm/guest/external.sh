#!/bin/sh
# Guest script: a file-reflink pool on an external LUKS2 drive (ext4 inside,
# setup_check=False), named by the LUKS UUID and unlocked with a key file:
#   wrong key         refused, nothing opened or mounted
#   add / detach      the pool is locked after detach, online after attach,
#                     committed data intact
#   unplug            the disk is removed through qemu's monitor while a VM
#                     on the pool runs: writes fail with I/O errors, qpool
#                     keeps working (state offline, VM start refused with
#                     "pool 'ext' is offline", VMs on other pools start)
#   replug            the host adds the disk back (drive_add + device_add
#                     when QP_VM_HOST_DIR is known): attach, the committed
#                     volumes are intact, the running VM stops
# The disk is $EXTERNAL_DISK (qemu id disk$EXTERNAL_DISK_N), else the last
# one of the VM's disks.
. /tests/vm/vmlib.sh

set -u
# The host's settings (QP_VM_HOST_DIR is not exported by init).
[ -n "${QP_VM_HOST_DIR:-}" ] || . /vm/env 2>/dev/null || true
# vm_step sends a step's output to a log: `### HOST:` requests go to fd 3,
# the console.
exec 3>&1
MiB=1048576
T=$TEST_TMP/external
R=$T/root
N=${EXTERNAL_DISK_N:-$((${QP_VM_NDISKS:-1} - 1))}
D=${EXTERNAL_DISK:-$(vm_disk_dev "$N")}
rm -rf "$T"
mkdir -p "$T" "$R"

state() {
	q pool info ext | awk '$1 == "state" { print $2 }'
}

sum() {
	head -c "$MiB" "$1" | sha256sum | cut -d' ' -f1
}

if [ ! -b "$D" ]; then
	vm_skip vm/external "no disk $D"
	exit 0
fi

printf 'right key' >"$T/key"
printf 'wrong key' >"$T/bad"
t_format() {
	vm_luks_open "$T/key" "$D" extfmt || return 1
	mkfs.ext4 -q /dev/mapper/extfmt || return 1
	cryptsetup close extfmt
}
vm_step vm/external/format sub t_format || exit 1
U=$(cryptsetup luksUUID "$D")
OPTS="device=UUID=$U,dir_path=$T/mnt,setup_check=False"

t_wrong_key() {
	fails "wrong key" pool add ext file-reflink -o "$OPTS,key_file=$T/bad"
	[ ! -e /dev/mapper/qpool-ext ] || die "mapping opened"
	! grep -q " $T/mnt " /proc/mounts || die "mounted"
	fails "does not exist" pool info ext
}
vm_step vm/external/wrong-key sub t_wrong_key

t_add_detach() {
	ok pool add ext file-reflink -o "$OPTS,key_file=$T/key"
	[ "$(state)" = online ] || die "state $(state) after add"
	ok vm create --class StandaloneVM --pool ext keep
	ok vm create --class StandaloneVM --pool ext run
	ok vm create --class StandaloneVM other
	for vm in keep run; do
		ok vm start $vm
		p=$(awk '$1 == "private" { print $2 }' "$T/out")
		head -c "$MiB" /dev/urandom | dd of="$p" conv=notrunc 2>/dev/null
		ok vm stop $vm
	done
	sum "$T/mnt/appvms/keep/private.img" >"$T/keep.sum"
	sum "$T/mnt/appvms/run/private.img" >"$T/run.sum"
	ok pool detach ext
	[ "$(state)" = locked ] || die "state $(state) after detach"
	[ ! -e /dev/mapper/qpool-ext ] || die "mapping left open"
	fails "pool 'ext' is locked" vm start keep
	ok pool attach ext
	[ "$(state)" = online ] || die "state $(state) after attach"
	[ "$(sum "$T/mnt/appvms/keep/private.img")" = "$(cat "$T/keep.sum")" ] || die "data changed"
}
vm_step vm/external/add-detach sub t_add_detach || exit 1

t_unplug() {
	ok vm start run
	p=$(awk '$1 == "private" { print $2 }' "$T/out")
	fails "in use by running VM 'run'" pool detach ext
	vm_unplug "$N" 30 >&3 || die "$D still present"
	# Writes through the page cache may succeed; fsync must not.
	if dd if=/dev/urandom of="$p" bs=1M count=4 conv=notrunc,fsync 2>/dev/null; then
		die "writes to the running copy still succeed"
	fi
	sleep 1
	[ "$(state)" = offline ] || die "state $(state) after unplug"
	fails "pool 'ext' is offline" vm start keep
	ok vm start other
	ok vm stop other
	fails "pool 'ext' is offline" vm stop run
	grep -q '<pool name="ext"' "$R/qubes.xml" || die "pool lost"
}
vm_step vm/external/unplug sub t_unplug || exit 1

if [ -z "${QP_VM_HOST_DIR:-}" ]; then
	vm_skip vm/external/replug "the host's disk folder is not known (QP_VM_HOST_DIR)"
	exit 0
fi

t_replug() {
	new=$(vm_replug "$N" 2>&3) || die "the disk did not come back"
	echo "  # the disk came back as /dev/$new"
	ok pool attach ext
	[ "$(state)" = online ] || die "state $(state) after attach"
	[ "$(sum "$T/mnt/appvms/keep/private.img")" = "$(cat "$T/keep.sum")" ] ||
		die "committed volume keep:private changed"
	[ "$(sum "$T/mnt/appvms/run/private.img")" = "$(cat "$T/run.sum")" ] ||
		die "committed volume run:private changed"
	ok vm stop run
	ok vm start keep
	ok vm stop keep
	ok pool detach ext
}
vm_step vm/external/replug sub t_replug
vm_status
