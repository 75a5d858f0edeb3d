#!/bin/sh
# Pools on external drives (file-reflink): btrfs on a loop device found by
# UUID and by LABEL and mounted by `qpool pool attach`, the loop device
# detached and attached again under another name, an offline pool (VM start
# refused, other pools unaffected, nothing lost), a plain folder left where
# the drive was mounted, two drives with the same label, a wrong LUKS key,
# and the refusals of `pool remove` and `pool detach`.  Needs root and
# loop devices; LUKS activation needs device-mapper and is in the test VM
# (tests/vm/guest/external.sh).
. "$(dirname "$0")/../lib.sh"

qp_require_root
qp_require_cmd losetup mkfs.btrfs blkid

# new_drive LABEL MB: a btrfs image with LABEL on a loop device; prints
# "IMAGE LOOPDEV".
new_drive() {
	_img=$(mktemp "$TEST_TMP/drive.XXXXXX") || return 1
	truncate -s "${2}M" "$_img" || return 1
	mkfs.btrfs -q -f -L "$1" "$_img" >/dev/null 2>&1 || return 1
	_qp_record img "$_img"
	_dev=$(losetup -f --show "$_img") || return 1
	echo "$_img $_dev"
}

state_of() {
	qp pool info "$1" | awk '$1 == "state" { print $2 }'
}

# Writes 1 MiB of random data into the running copy of VM:VOLUME, stops
# the VM and prints the sha256 of the committed image's first MiB.
write_and_stop() {
	_p=$(qp vm start "$1" | awk -v v="$2" '$1 == v { print $2 }')
	[ -n "$_p" ] || _qp_failed "no path for $1:$2"
	head -c 1048576 /dev/urandom | dd of="$_p" conv=notrunc 2>/dev/null
	assert_ok qp vm stop "$1"
	sum_of "$(dirname "$_p")/$2.img"
}

# sha256 of the first MiB (the images are sparse 2 GiB files).
sum_of() {
	head -c 1048576 "$1" | sha256sum | cut -d' ' -f1
}

t_by_uuid() {
	set -- $(new_drive qpext-u 256) || skip "cannot make a btrfs loop device"
	img=$1
	uuid=$(blkid -o value -s UUID "$2")
	mnt=$TEST_TMP/mnt-u
	assert_ok qp pool add ext file-reflink -o "device=UUID=$uuid,dir_path=$mnt"
	assert_eq "$(state_of ext)" online "state after add"
	grep -q "fs_uuid=\"$uuid\"" "$QPOOL_ROOT/qubes.xml" || _qp_failed "fs_uuid not recorded"
	assert_ok qp vm create --class StandaloneVM --pool ext sa
	sum=$(write_and_stop sa private)
	assert_ok qp vm start sa
	assert_stderr_matches "is in use by running VM 'sa'" qp pool detach ext
	assert_ok qp vm stop sa
	assert_ok qp pool detach ext
	assert_eq "$(state_of ext)" offline "state after detach"
	# The drive comes back under another loop device name.
	losetup -d "$2"
	busy=$(losetup -f --show "$TEST_TMP/busy.img" 2>/dev/null ||
		{ truncate -s 1M "$TEST_TMP/busy.img" && losetup -f --show "$TEST_TMP/busy.img"; })
	_qp_record img "$TEST_TMP/busy.img"
	dev2=$(losetup -f --show "$img")
	[ "$dev2" != "$2" ] || _qp_failed "the drive came back under the same name $dev2"
	assert_ok qp pool attach ext
	assert_eq "$(state_of ext)" online "state after attach on $dev2"
	assert_eq "$(sum_of "$mnt/appvms/sa/private.img")" "$sum" \
		"committed private image"
	assert_ok qp vm start sa
	assert_ok qp vm stop sa
	assert_ok qp pool detach ext
	losetup -d "$busy" "$dev2"
}

t_by_label_offline() {
	set -- $(new_drive qpext-l 256) || skip "cannot make a btrfs loop device"
	mnt=$TEST_TMP/mnt-l
	assert_ok qp pool add ext file-reflink -o "device=LABEL=qpext-l,dir_path=$mnt"
	assert_ok qp vm create --class StandaloneVM --pool ext sa
	assert_ok qp vm create --class StandaloneVM other
	sum=$(write_and_stop sa private)
	assert_ok qp pool detach ext
	cp "$QPOOL_ROOT/qubes.xml" "$TEST_TMP/xml.before"
	assert_eq "$(state_of ext)" offline "state while detached"
	# The folder left where the drive was mounted is never written into.
	assert_stderr_matches "pool 'ext' is offline" qp vm start sa
	assert_stderr_matches "pool 'ext' is offline" qp volume revert sa:private
	assert_stderr_matches "pool 'ext' is offline" qp vm remove sa
	assert_eq "$(ls -A "$mnt")" "" "content of the unmounted mount point"
	assert_ok qp vm start other
	assert_ok qp vm stop other
	assert_stderr_matches "pool 'ext' is in use by volume" qp pool remove ext
	grep -q '<pool name="ext"' "$QPOOL_ROOT/qubes.xml" || _qp_failed "pool 'ext' lost"
	grep -q 'vid="appvms/sa/private"' "$QPOOL_ROOT/qubes.xml" || _qp_failed "volume lost"
	assert_ok qp pool attach ext
	assert_ok qp pool attach ext
	assert_eq "$(sum_of "$mnt/appvms/sa/private.img")" "$sum" \
		"committed private image"
	assert_ok qp vm remove sa
	assert_ok qp pool detach ext
	assert_ok qp pool remove ext
	losetup -d "$2"
}

# A pool without device on a filesystem the user mounts: fs_uuid recorded;
# unmounted, its folder is a plain folder of the root filesystem.
t_plain_folder() {
	mnt=$(qp_mkfs_loop btrfs 256) || skip
	assert_ok qp pool add ext file-reflink -o "dir_path=$mnt/pool"
	grep -q 'fs_uuid=' "$QPOOL_ROOT/qubes.xml" || _qp_failed "fs_uuid not recorded"
	assert_ok qp vm create --class StandaloneVM --pool ext sa
	sum=$(write_and_stop sa private)
	umount "$mnt"
	mkdir -p "$mnt/pool/appvms"
	assert_eq "$(state_of ext)" offline "state with a plain folder"
	assert_stderr_matches "pool 'ext' is offline" qp vm start sa
	assert_stderr_matches "names no device" qp pool attach ext
	assert_eq "$(find "$mnt" | wc -l)" 3 "files in the plain folder"
	rm -rf "${mnt:?}/pool"
	mount -o loop "$TEST_TMP/btrfs.0.img" "$mnt"
	assert_eq "$(state_of ext)" online "state after mounting again"
	assert_eq "$(sum_of "$mnt/pool/appvms/sa/private.img")" "$sum" \
		"committed private image"
}

t_same_label() {
	set -- $(new_drive qpext-d 128) || skip "cannot make a btrfs loop device"
	a=$2
	set -- $(new_drive qpext-d 128) || skip "cannot make a btrfs loop device"
	assert_stderr_matches "label 'qpext-d' matches 2 devices; use device=UUID=" \
		qp pool add ext file-reflink -o "device=LABEL=qpext-d,dir_path=$TEST_TMP/mnt-d"
	if grep -q '<pool name="ext"' "$QPOOL_ROOT/qubes.xml" 2>/dev/null; then
		_qp_failed "pool added"
	fi
	if awk -v m="$TEST_TMP/mnt-d" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
		_qp_failed "something was mounted"
	fi
	assert_stderr_matches "device 'LABEL=qpext-none' is not present" \
		qp pool add ext file-reflink -o "device=LABEL=qpext-none,dir_path=$TEST_TMP/mnt-d"
	assert_stderr_matches "has no option 'fs_uuid'" \
		qp pool add ext file-reflink -o "fs_uuid=x,dir_path=$TEST_TMP/mnt-d"
	assert_stderr_matches "needs option 'device'" \
		qp pool add ext file-reflink -o "key_file=/x,dir_path=$TEST_TMP/mnt-d"
	losetup -d "$a" "$2"
}

# The key is checked before any device-mapper work, so the host can test a
# wrong key (opening with the right one is tested in the VM).
t_wrong_key() {
	qp_require_cmd cryptsetup
	img=$TEST_TMP/luks.img
	truncate -s 64M "$img"
	_qp_record img "$img"
	printf 'right' >"$TEST_TMP/key"
	printf 'wrong' >"$TEST_TMP/bad"
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$TEST_TMP/key" "$img" >/dev/null 2>&1 || skip "cannot format LUKS2"
	dev=$(losetup -f --show "$img")
	uuid=$(blkid -o value -s UUID "$dev")
	assert_stderr_matches "cannot unlock device '$dev' of pool 'ext': wrong key" \
		qp pool add ext file-reflink \
		-o "device=UUID=$uuid,key_file=$TEST_TMP/bad,dir_path=$TEST_TMP/mnt-k"
	assert_stderr_matches "cannot read the key file" \
		qp pool add ext file-reflink \
		-o "device=UUID=$uuid,key_file=$TEST_TMP/none,dir_path=$TEST_TMP/mnt-k"
	[ ! -e "$TEST_TMP/mnt-k" ] || _qp_failed "mount point created"
	losetup -d "$dev"
}

qp_test by_uuid t_by_uuid
qp_test by_label_offline t_by_label_offline
qp_test plain_folder t_plain_folder
qp_test same_label t_same_label
qp_test wrong_key t_wrong_key
qp_done
