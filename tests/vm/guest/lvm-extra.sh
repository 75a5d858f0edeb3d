#!/bin/sh
# Guest script: lvm_thin tests beyond the conformance suite.
#   two-pools      two pools in two volume groups (on two devices), clones
#                  between them and from a file-reflink pool (sparse copies)
#   out-of-space   a thin pool that runs out of data space: writes fail,
#                  the commit is refused with a clear message, the committed
#                  data stays intact, and all is well after an lvextend
#   crash-cleanup  a simulated crash (LVs deactivated, new boot id) with a
#                  started AppVM, DispVM and template and a stale -import:
#                  disposable copies and staging are removed, dirty origins
#                  resumed
#   failed-start   a start that fails on a later volume (an open LV where its
#                  volatile volume goes) leaves no running copy of the
#                  earlier ones
#
# The two devices are halves of one disk (device-mapper linear targets), so
# the script needs one free disk: $LVM_EXTRA_DISK, else the last of the VM's
# disks.  Run it in a VM of its own, or give the VM a disk for it:
#	tests/vm/run.sh --disk 4G tests/vm/guest/lvm-extra.sh
. /tests/vm/vmlib.sh

set -u
MiB=1048576
T=$TEST_TMP/lvm-extra
R=$T/root
rm -rf "$T"
mkdir -p "$T" "$R"

sum() {
	sha256sum | awk '{ print $1 }'
}

rand() {
	dd if=/dev/urandom of="$T/$1" bs=$MiB count="$2" 2>/dev/null
}

# dev VM VOL: path of VOL in the last `ok vm start VM` output.
dev() {
	awk -v v="$2" '$1 == v { print $2 }' "$T/att.$1"
}

start() {
	ok vm start "$1"
	cp "$T/out" "$T/att.$1"
}

# put PATH OFF_MIB FILE
put() {
	dd if="$T/$3" of="$1" bs=$MiB seek="$2" conv=notrunc,fsync 2>"$T/dd.err" ||
		die "cannot write '$1': $(cat "$T/dd.err")"
}

# esum VM:VOL MIB: checksum of the first MIB MiB of the committed content.
esum() {
	q volume export "$1" - 2>/dev/null | head -c $(($2 * MiB)) | sum
}

lvnames() {
	lvs --noheadings -o lv_name "$1" 2>/dev/null | awk '{ print $1 }'
}

has_lv() {
	lvnames "$1" | grep -qx "$2"
}

# ---- devices ----------------------------------------------------------------

D=${LVM_EXTRA_DISK:-}
[ -n "$D" ] || for D in $QP_VM_DISKS; do :; done
if [ -z "$D" ] || [ ! -b "$D" ]; then
	vm_skip lvm-extra "no disk"
	exit 0
fi
if pvs --noheadings -o pv_name 2>/dev/null | grep -q "$D"; then
	vm_skip lvm-extra "$D is in use by LVM (give the VM another disk)"
	exit 0
fi
sz=$(blockdev --getsz "$D")
# The halves start 1 MiB in, so that LVM scanning the disk itself finds no
# PV label at its start (it would see the first half's PV twice).
half=$(((sz - 2048) / 2))
vm_step lvm-extra/devices sh -c "
	dmsetup create lvx-a --table '0 $half linear $D 2048' &&
	dmsetup create lvx-b --table '0 $half linear $D $((2048 + half))' &&
	pvcreate -y /dev/mapper/lvx-a /dev/mapper/lvx-b &&
	vgcreate xa /dev/mapper/lvx-a && vgcreate xb /dev/mapper/lvx-b &&
	lvcreate -T -L 600M xa/pool && lvcreate -T -L 600M xb/pool &&
	lvcreate -T -L 32M xa/small && lvchange --errorwhenfull y xa/small" || exit 1
ok pool add pa lvm_thin -o volume_group=xa,thin_pool=pool
ok pool add pb lvm_thin -o volume_group=xb,thin_pool=pool

# ---- two pools in two volume groups -----------------------------------------

t_two_pools() {
	ok vm create --class TemplateVM -P pa ta
	ok vm create --class TemplateVM -P pb tb
	ok vm create --class TemplateVM -P pa tc
	has_lv xa vm-ta-private && has_lv xb vm-tb-private || die "LVs not in their own VGs"
	# sizes are multiples of 4 MiB, the extent size
	rand p1 8
	want=$(sum <"$T/p1")
	start ta
	put "$(dev ta private)" 0 p1
	ok vm stop ta
	ok volume clone ta:private tb:private -f
	[ "$(esum tb:private 8)" = "$want" ] || die "clone across VGs differs"
	start tb
	[ "$(dd if="$(dev tb private)" bs=$MiB count=8 2>/dev/null | sum)" = "$want" ] ||
		die "cloned data not seen at start"
	ok vm stop tb
	ok volume clone tb:private tc:private -f
	[ "$(esum tc:private 8)" = "$want" ] || die "clone back differs"
	# the copy is sparse: a 2 GiB volume with 8 MiB of data
	u=$(q volume info tc:private usage)
	[ "$u" -lt $((64 * MiB)) ] || die "clone across pools is not sparse: usage $u"
	# from a file-reflink pool (plain copies on tmpfs)
	rand p2 8
	ok pool add fr file-reflink -o dir_path=$T/fr,setup_check=False
	ok vm create --class TemplateVM -P fr tf
	ok volume import tf:private "$T/p2"
	ok volume clone tf:private ta:private -f
	[ "$(esum ta:private 8)" = "$(sum <"$T/p2")" ] || die "clone from file-reflink differs"
	ok volume info ta:private size
	[ "$(cat "$T/out")" = $((8 * MiB)) ] || die "size after clone: $(cat "$T/out")"
	ok pool info pa
	grep -q '^size *629145600$' "$T/out" || die "pool size: $(cat "$T/out")"
	grep -q '^metadata_size ' "$T/out" || die "no metadata_size: $(cat "$T/out")"
	for vm in tf tc tb ta; do ok vm remove "$vm"; done
	[ -z "$(lvnames xa | grep '^vm-')$(lvnames xb | grep '^vm-')" ] ||
		die "LVs left after removing the VMs: $(lvnames xa) $(lvnames xb)"
}

# ---- a thin pool out of data space --------------------------------------------

t_out_of_space() {
	ok pool add ps lvm_thin -o volume_group=xa,thin_pool=small
	ok vm create --class TemplateVM -P ps ts
	ok vm create --class TemplateVM -P ps ts2
	rand m 4
	start ts
	put "$(dev ts private)" 0 m
	ok vm stop ts
	want=$(sum <"$T/m")
	start ts
	p=$(dev ts private)
	if dd if=/dev/urandom of="$p" bs=$MiB seek=8 count=64 conv=fsync 2>"$T/dd.err"; then
		die "64 MiB fitted in a 32 MiB thin pool"
	fi
	echo "  # dd: $(tail -n 1 "$T/dd.err")"
	q vm stop ts >/dev/null 2>"$T/err" && die "commit into a full thin pool succeeded"
	echo "  # $(cat "$T/err")"
	grep -q "thin pool 'xa/small' is out of data space" "$T/err" || die "unclear message"
	[ "$(esum ts:private 4)" = "$want" ] || die "committed data lost"
	q vm create --class TemplateVM -P ps ts3 >/dev/null 2>"$T/err" && die "create in a full pool"
	grep -q "out of data space" "$T/err" || die "unclear create message: $(cat "$T/err")"
	q volume import ts2:private "$T/m" >/dev/null 2>"$T/err" && die "import into a full pool"
	grep -q "out of data space" "$T/err" || die "unclear import message: $(cat "$T/err")"
	lvextend -L +96M xa/small >/dev/null 2>&1 || die "lvextend failed"
	ok vm stop ts
	ok volume revert ts:private
	[ "$(esum ts:private 4)" = "$want" ] || die "committed data not back after revert"
	ok vm remove ts2
	ok vm remove ts
	ok pool remove ps
}

# ---- cleanup after a simulated crash ----------------------------------------------

t_crash_cleanup() {
	export QPOOL_BOOT_ID=boot-1
	ok vm create --class TemplateVM -P pa ct
	ok vm create --class AppVM --template ct -P pa ca
	ok vm create --class DispVM --template ca -P pa cd
	rand tp 2
	rand ap 2
	start ct
	start ca
	start cd
	put "$(dev ct private)" 1 tp
	put "$(dev ca private)" 1 ap
	lvcreate -q -T xa/pool -V 8M -n vm-ct-root-import >/dev/null 2>&1 || die "cannot make a stale import"
	for lv in vm-cd-root-snap vm-cd-private-snap vm-cd-volatile vm-ca-root-snap vm-ca-volatile \
		vm-ca-private-snap vm-ct-private-snap; do
		has_lv xa $lv || die "$lv missing while running"
	done
	# the machine goes down: every LV inactive, a new boot
	vgchange -an xa >/dev/null 2>&1 || die "cannot deactivate xa"
	export QPOOL_BOOT_ID=boot-2
	ok vm start ct
	cp "$T/out" "$T/att.ct"
	for lv in vm-cd-root-snap vm-cd-private-snap vm-cd-volatile vm-ca-root-snap vm-ca-volatile \
		vm-ct-root-import; do
		has_lv xa $lv && die "leftover $lv not removed"
	done
	has_lv xa vm-ca-private-snap || die "dirty private of the AppVM not kept"
	[ "$(dd if="$(dev ct private)" bs=$MiB skip=1 count=2 2>/dev/null | sum)" = "$(sum <"$T/tp")" ] ||
		die "template private not resumed"
	start ca
	[ "$(dd if="$(dev ca private)" bs=$MiB skip=1 count=2 2>/dev/null | sum)" = "$(sum <"$T/ap")" ] ||
		die "app private not resumed"
	ok vm stop ca
	ok vm stop ct
	[ "$(q volume export ca:private - | head -c $((3 * MiB)) | tail -c $((2 * MiB)) | sum)" = "$(sum <"$T/ap")" ] ||
		die "resumed app private not committed"
	s=$(lvnames xa | grep -E -- '^vm-c.*-(snap|import)$')
	[ -z "$s" ] || die "stray LVs: $s"
	unset QPOOL_BOOT_ID
}

# ---- a start that fails on a later volume ------------------------------------

t_failed_start() {
	ok vm create --class TemplateVM -P pa ft
	lvcreate -q -T xa/pool -V 8M -n vm-ft-volatile >/dev/null 2>&1 || die "cannot make the obstacle"
	sleep 300 <"/dev/xa/vm-ft-volatile" &
	holder=$!
	n=0
	until [ "$(dmsetup info -c --noheadings -o open xa-vm--ft--volatile 2>/dev/null | tr -d ' ')" = 1 ]; do
		n=$((n + 1))
		[ $n -lt 50 ] || die "the obstacle is not held open"
		sleep 0.1
	done
	q vm start ft >/dev/null 2>"$T/err"
	rc=$?
	kill $holder
	wait $holder 2>/dev/null
	[ $rc = 1 ] || die "start with an open volatile LV: exit status $rc"
	echo "  # $(cat "$T/err")"
	for lv in vm-ft-root-snap vm-ft-private-snap; do
		has_lv xa $lv && die "running copy $lv left by the failed start"
	done
	ok volume info ft:private is_dirty
	[ "$(cat "$T/out")" = False ] || die "private dirty after the failed start"
	ok vm start ft
	ok vm stop ft
	ok vm remove ft
}

for t in two-pools out-of-space crash-cleanup failed-start; do
	fn=t_$(echo $t | tr - _)
	if ($fn) >"$T/log.$t" 2>&1; then
		vm_pass lvm-extra/$t
		grep '^  # ' "$T/log.$t"
	else
		vm_fail lvm-extra/$t
		tail -n 20 "$T/log.$t" | sed 's/^/  # /'
	fi
done
vm_status
