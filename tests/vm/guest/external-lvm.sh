#!/bin/sh
# Guest script: an lvm_thin pool on an external LUKS2 drive (a volume group
# with a thin pool inside), named by the LUKS UUID and unlocked with a key
# file:
#   wrong key         refused, nothing opened or activated
#   add / detach      the group's UUID is recorded; the pool is locked after
#                     detach, online after attach, committed data intact
#   same name         a different volume group of the same name on another
#                     drive is never used: the pool reads offline, attach
#                     refuses it
#   plain             a drive without LUKS, named by its path: detached, its
#                     group is inactive and the pool reads offline
#   unplug            the disk is removed through qemu's monitor while a VM
#                     on the pool runs: writes fail with I/O errors, qpool
#                     keeps working (state offline, VM start refused with
#                     "pool 'lext' is offline", VMs on other pools start)
#   replug            the disk comes back under another name: attach clears
#                     the dead devices, the committed volumes are intact,
#                     the running VM stops
# The disk is qemu's disk$EXTERNAL_LVM_DISK_N, else the last of the VM's
# disks; $EXTERNAL_LVM_OTHER (a block device, optional) gets the group of
# the same name.
. /tests/vm/vmlib.sh

set -u
[ -n "${QP_VM_HOST_DIR:-}" ] || . /vm/env 2>/dev/null || true
exec 3>&1
MiB=1048576
T=$TEST_TMP/external-lvm
R=$T/root
N=${EXTERNAL_LVM_DISK_N:-$((${QP_VM_NDISKS:-1} - 1))}
D=$(vm_disk_dev "$N")
rm -rf "$T"
mkdir -p "$T" "$R"

state() {
	q pool info lext | awk '$1 == "state" { print $2 }'
}

# esum VM: checksum of the first MiB of VM's committed private volume.
esum() {
	q volume export "$1:private" - 2>/dev/null | head -c "$MiB" | sha256sum | cut -d' ' -f1
}

# Device-mapper devices of group xe.
xe_devs() {
	dmsetup ls 2>/dev/null | awk '$1 ~ /^xe-/ { print $1 }'
}

if [ ! -b "$D" ]; then
	vm_skip vm/external-lvm "no disk $D"
	exit 0
fi

printf 'right key' >"$T/key"
printf 'wrong key' >"$T/bad"
t_format() {
	vm_luks_open "$T/key" "$D" xefmt || return 1
	pvcreate -q /dev/mapper/xefmt && vgcreate -q xe /dev/mapper/xefmt &&
		lvcreate -q -T -L 96M xe/pool || return 1
	vgchange -q -an xe && cryptsetup close xefmt
}
vm_step vm/external-lvm/format sub t_format || exit 1
U=$(cryptsetup luksUUID "$D")
OPTS="device=UUID=$U,volume_group=xe,thin_pool=pool"

t_wrong_key() {
	fails "wrong key" pool add lext lvm_thin -o "$OPTS,key_file=$T/bad"
	[ ! -e /dev/mapper/qpool-lext ] || die "mapping opened"
	[ -z "$(xe_devs)" ] || die "group activated: $(xe_devs)"
	fails "does not exist" pool info lext
}
vm_step vm/external-lvm/wrong-key sub t_wrong_key

t_add_detach() {
	ok pool add lext lvm_thin -o "$OPTS,key_file=$T/key"
	[ "$(state)" = online ] || die "state $(state) after add"
	grep -q 'vg_uuid="[A-Za-z0-9-]\{38\}"' "$R/qubes.xml" || die "no vg_uuid recorded"
	ok vm create --class StandaloneVM --pool lext keep
	ok vm create --class StandaloneVM --pool lext run
	ok vm create --class StandaloneVM other
	for vm in keep run; do
		ok vm start $vm
		p=$(awk '$1 == "private" { print $2 }' "$T/out")
		head -c "$MiB" /dev/urandom | dd of="$p" conv=notrunc,fsync 2>/dev/null
		ok vm stop $vm
		esum $vm >"$T/$vm.sum"
	done
	ok pool detach lext
	[ "$(state)" = locked ] || die "state $(state) after detach"
	[ ! -e /dev/mapper/qpool-lext ] || die "mapping left open"
	[ -z "$(xe_devs)" ] || die "group still active: $(xe_devs)"
	fails "pool 'lext' is locked" vm start keep
	ok pool attach lext
	[ "$(state)" = online ] || die "state $(state) after attach"
	[ "$(esum keep)" = "$(cat "$T/keep.sum")" ] || die "data changed"
}
vm_step vm/external-lvm/add-detach sub t_add_detach || exit 1

t_same_name() {
	O=$EXTERNAL_LVM_OTHER
	ok pool detach lext
	pvcreate -q -ff -y "$O" && vgcreate -q xe "$O" && lvcreate -q -T -L 16M xe/pool ||
		die "cannot make the other group"
	[ "$(state)" = offline ] || die "state $(state) with another 'xe'"
	fails "pool 'lext' is offline" vm start keep
	fails "not used" pool attach lext
	[ "$(state)" != online ] || die "online on another group"
	vgchange -q -an xe && vgremove -q -f xe && pvremove -q -ff -y "$O" ||
		die "cannot remove the other group"
	cryptsetup close qpool-lext 2>/dev/null
	ok pool attach lext
	[ "$(state)" = online ] || die "state $(state) after attach"
	[ "$(esum keep)" = "$(cat "$T/keep.sum")" ] || die "data changed"
}
t_plain() {
	O=$EXTERNAL_LVM_OTHER
	pvcreate -q -ff -y "$O" && vgcreate -q xp "$O" && lvcreate -q -T -L 16M xp/pool ||
		die "cannot make the plain group"
	ok pool add plain lvm_thin -o "device=$O,volume_group=xp,thin_pool=pool"
	ok vm create --class StandaloneVM --pool plain pv
	ok pool detach plain
	[ "$(q pool info plain | awk '$1 == "state" { print $2 }')" = offline ] ||
		die "state of the detached plain pool: $(q pool info plain)"
	fails "pool 'plain' is offline" vm start pv
	ok pool attach plain
	ok vm start pv
	ok vm stop pv
	ok vm remove pv
	ok pool detach plain
	ok pool remove plain
	vgremove -q -f xp && pvremove -q -ff -y "$O" || die "cannot remove the plain group"
}
if [ -b "${EXTERNAL_LVM_OTHER:-}" ]; then
	vm_step vm/external-lvm/same-name sub t_same_name || exit 1
	vm_step vm/external-lvm/plain sub t_plain || exit 1
else
	vm_skip vm/external-lvm/same-name "no second disk (EXTERNAL_LVM_OTHER)"
	vm_skip vm/external-lvm/plain "no second disk (EXTERNAL_LVM_OTHER)"
fi

t_unplug() {
	ok vm start run
	p=$(awk '$1 == "private" { print $2 }' "$T/out")
	fails "in use by running VM 'run'" pool detach lext
	vm_unplug "$N" 30 >&3 || die "$D still present"
	if dd if=/dev/urandom of="$p" bs=1M count=4 conv=notrunc,fsync 2>/dev/null; then
		die "writes to the running copy still succeed"
	fi
	[ "$(state)" = offline ] || die "state $(state) after unplug"
	fails "pool 'lext' is offline" vm start keep
	ok vm start other
	ok vm stop other
	fails "pool 'lext' is offline" vm stop run
	grep -q '<pool name="lext"' "$R/qubes.xml" || die "pool lost"
}
vm_step vm/external-lvm/unplug sub t_unplug || exit 1

if [ -z "${QP_VM_HOST_DIR:-}" ]; then
	vm_skip vm/external-lvm/replug "the host's disk folder is not known (QP_VM_HOST_DIR)"
	exit 0
fi

t_replug() {
	new=$(vm_replug "$N" 2>&3) || die "the disk did not come back"
	echo "  # the disk came back as /dev/$new"
	[ -n "$(xe_devs)" ] || die "no devices left by the vanished drive"
	ok pool attach lext
	[ "$(state)" = online ] || die "state $(state) after attach"
	[ "$(esum keep)" = "$(cat "$T/keep.sum")" ] || die "committed volume keep:private changed"
	[ "$(esum run)" = "$(cat "$T/run.sum")" ] || die "committed volume run:private changed"
	ok vm stop run
	ok vm start keep
	ok vm stop keep
	ok pool detach lext
	[ -z "$(xe_devs)" ] || die "group still active after detach: $(xe_devs)"
}
vm_step vm/external-lvm/replug sub t_replug
vm_status
