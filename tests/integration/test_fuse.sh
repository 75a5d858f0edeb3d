#!/bin/sh
# qpoold mounted for real on a btrfs loop pool: the tree follows qpool
# (create, start, stop, resize, remove, owner); content read and written
# through the mount equals the volumes (with qemu-img and qemu-io as the
# consumer); read-only and ownership rules tried as other users (setpriv);
# the in-use refusal of `vm stop`; concurrent readers and writers; SIGTERM;
# kill -9 and restart on the stale mount.
. "$(dirname "$0")/../lib.sh"

QPOOLD=${QPOOLD:-$QP_TOP/qpoold}
MiB=1048576

# ---- helpers -----------------------------------------------------------------

# fuse_setup: a btrfs pool p1 with TemplateVM tpl and AppVM app (owner
# 1234), and qpoold serving them on $MNT.  Sets POOL, MNT, QPID.
fuse_setup() {
	qp_require_root
	qp_require_cmd qemu-img qemu-io
	[ -n "$SETPRIV" ] || skip "setpriv (util-linux) is not installed"
	[ -x "$QPOOLD" ] || skip "qpoold is not built"
	[ -c /dev/fuse ] || skip "no /dev/fuse"
	POOL=$(qp_mkfs_loop btrfs 512) || skip
	MNT=$TEST_TMP/mnt.$QP_TEST_N
	mkdir -p "$MNT"
	# Other users must reach the mount point to be judged by its modes.
	chmod 0711 "$TEST_TMP"
	assert_ok qp pool add p1 file-reflink -o dir_path="$POOL/p1"
	assert_ok qp vm create --class TemplateVM -P p1 tpl
	assert_ok qp vm create --template tpl -P p1 --owner 1234 app
	# Runs in the test's subshell: stop our qpoold and unmount, whatever happens.
	trap 'unhold; fuse_stop; _qp_umount "$MNT"' EXIT
	fuse_start
}

fuse_start() {
	"$QPOOLD" --root "$QPOOL_ROOT" -f "$MNT" 2>>"$TEST_TMP/qpoold.$QP_TEST_N.log" &
	QPID=$!
	_i=0
	# Served (not merely listed: a stale mount is listed too).
	until _qp_is_mounted "$MNT" && ls "$MNT" >/dev/null 2>&1; do
		_i=$((_i + 1))
		if [ "$_i" -gt 100 ] || ! kill -0 "$QPID" 2>/dev/null; then
			cat "$TEST_TMP/qpoold.$QP_TEST_N.log" >&2
			_qp_failed "qpoold did not mount '$MNT'"
		fi
		sleep 0.05
	done
}

fuse_stop() {
	[ -n "${QPID:-}" ] || return 0
	kill -TERM "$QPID" 2>/dev/null
	wait "$QPID" 2>/dev/null
	QPID=
}

# util-linux's setpriv by path: busybox ash would run its own applet, which
# lacks --reuid.
SETPRIV=
for _p in /usr/bin/setpriv /bin/setpriv; do
	[ -x "$_p" ] && SETPRIV=$_p && break
done

as_user() {
	_u=$1
	shift
	"$SETPRIV" --reuid="$_u" --regid="$_u" --clear-groups "$@"
}

# attach_path VM VOL: the path `vm start` printed for VOL (from $TEST_TMP/att).
attach_path() {
	awk -v v="$2" '$1 == v { print $2 }' "$TEST_TMP/att.$1"
}

vm_start() {
	assert_ok qp vm start "$1"
	printf '%s\n' "$QP_STDOUT" >"$TEST_TMP/att.$1"
}

# hold FILE: a process keeps FILE open (read-only) until unhold.
hold() {
	sleep 60 <"$1" &
	_holder=$!
	sleep 0.2
}

unhold() {
	kill "$_holder" 2>/dev/null
	wait "$_holder" 2>/dev/null
	_holder=
	return 0
}

# gone PATH: waits up to 2 s for PATH to disappear (releases are asynchronous).
gone() {
	_i=0
	while [ -e "$1" ] && [ "$_i" -lt 40 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	assert_not_exists "$1"
}

fsize() {
	stat -c %s "$1"
}

fmode() {
	stat -c '%a %u:%g' "$1"
}

# ---- tests -------------------------------------------------------------------

t_tree() {
	fuse_setup
	assert_eq "$(ls "$MNT" | tr '\n' ' ')" "app tpl " "VM folders"
	assert_eq "$(ls "$MNT/app" | tr '\n' ' ')" "private.img root.img " "stopped VM files"
	assert_eq "$(fsize "$MNT/tpl/root.img")" $((10 * 1024 * MiB)) "root size"
	assert_eq "$(fsize "$MNT/app/private.img")" $((2 * 1024 * MiB)) "private size"
	assert_eq "$(fmode "$MNT/app")" "700 1234:1234" "owned folder"
	assert_eq "$(fmode "$MNT/app/private.img")" "400 1234:1234" "stopped file"
	assert_eq "$(fmode "$MNT/tpl/root.img")" "400 0:0" "file without owner"
	vm_start app
	assert_eq "$(ls "$MNT/app" | tr '\n' ' ')" "private.img root.img volatile.img " \
		"started VM files"
	assert_eq "$(fmode "$MNT/app/private.img")" "600 1234:1234" "started file"
	assert_ok qp vm stop app
	assert_not_exists "$MNT/app/volatile.img"
	assert_ok qp volume resize app:private 3GiB
	assert_eq "$(fsize "$MNT/app/private.img")" $((3 * 1024 * MiB)) "size after resize"
	assert_ok qp vm create --template tpl -P p1 app2
	assert_exists "$MNT/app2/root.img"
	assert_ok qp vm set-owner app2 1235:1236
	assert_eq "$(fmode "$MNT/app2")" "700 1235:1236" "folder after set-owner"
	assert_ok qp vm set-owner app2 none
	assert_eq "$(fmode "$MNT/app2/private.img")" "400 0:0" "file after set-owner none"
	assert_ok qp vm remove app2
	assert_not_exists "$MNT/app2"
}

t_content() {
	fuse_setup
	head -c $((4 * MiB)) /dev/urandom >"$TEST_TMP/rand"
	vm_start tpl
	# The VM manager's view: qemu-img and qemu-io on the mounted files.
	assert_ok qemu-img info -f raw "$MNT/tpl/private.img"
	assert_match "virtual size: 2 GiB" "$QP_STDOUT"
	assert_ok qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 1M 1M' \
		-c 'read -P 0x5a 0 1M' "$MNT/tpl/private.img"
	assert_ok qemu-io -f raw -t none -c 'write -P 0x33 8M 64k' -c 'read -P 0x33 8M 64k' \
		"$MNT/tpl/private.img"
	assert_ok dd if="$TEST_TMP/rand" of="$MNT/tpl/root.img" bs=1M seek=16 conv=notrunc,fsync
	assert_ok cmp "$MNT/tpl/private.img" "$(attach_path tpl private)"
	assert_ok qemu-img compare -f raw -F raw "$MNT/tpl/root.img" "$(attach_path tpl root)"
	assert_ok qp vm stop tpl
	# Committed now; the AppVM's root (stopped) shows the template's root.
	assert_ok qp volume export tpl:private "$TEST_TMP/priv.exp"
	assert_ok cmp "$MNT/tpl/private.img" "$TEST_TMP/priv.exp"
	assert_ok cmp -n $((4 * MiB)) "$MNT/app/root.img" "$TEST_TMP/rand" $((16 * MiB)) 0
	assert_ok qemu-io -f raw -r -c 'read -P 0xa5 1M 1M' "$MNT/tpl/private.img"
}

t_perms() {
	fuse_setup
	vm_start app
	assert_ok as_user 1234 dd if=/dev/zero of="$MNT/app/private.img" bs=4k count=1 \
		conv=notrunc
	assert_ok as_user 1234 dd if="$MNT/app/root.img" of=/dev/null bs=4k count=1
	assert_stderr_matches "Permission denied" as_user 1235 ls "$MNT/app"
	assert_stderr_matches "Permission denied" as_user 1235 cat "$MNT/app/private.img"
	assert_stderr_matches "Permission denied" as_user 1234 cat "$MNT/tpl/root.img"
	# Read-only volumes: the template's (stopped) and the AppVM's root (ro).
	assert_stderr_matches "Read-only file system" \
		dd if=/dev/zero of="$MNT/tpl/private.img" bs=4k count=1 conv=notrunc
	assert_ok qp vm stop app
	assert_ok qp volume config app:root rw False
	vm_start app
	assert_eq "$(fmode "$MNT/app/root.img")" "400 1234:1234" "ro volume of a started VM"
	assert_stderr_matches "Read-only file system" \
		dd if=/dev/zero of="$MNT/app/root.img" bs=4k count=1 conv=notrunc
	assert_fails as_user 1234 dd if=/dev/zero of="$MNT/app/root.img" bs=4k count=1 conv=notrunc
	# No resize, no writes past the end through the mount.
	assert_stderr_matches "not permitted" truncate -s 1G "$MNT/app/private.img"
	assert_stderr_matches "No space left" dd if=/dev/zero of="$MNT/app/private.img" bs=1M \
		count=1 seek=2048 conv=notrunc
	assert_stderr_matches "not permitted" chmod 666 "$MNT/app/private.img"
	assert_ok qp vm set-owner app 1235
	assert_stderr_matches "Permission denied" as_user 1234 cat "$MNT/app/private.img"
	assert_ok as_user 1235 dd if="$MNT/app/private.img" of=/dev/null bs=4k count=1
}

t_inuse() {
	fuse_setup
	vm_start app
	hold "$MNT/app/private.img"
	assert_exists "$QPOOL_ROOT/run/inuse/app/private"
	assert_stderr_matches "volume 'app:private' is in use" qp vm stop app
	assert_eq "$QP_RC" 1 "exit status of the refused stop"
	unhold
	gone "$QPOOL_ROOT/run/inuse/app/private"
	assert_ok qp vm stop app
	# Forced: refused no more; the open file keeps reading what it opened.
	vm_start app
	hold "$MNT/app/root.img"
	assert_ok qp vm stop --force app
	unhold
	# A stopped VM's files may be held open: its start is not refused.
	hold "$MNT/app/private.img"
	vm_start app
	assert_ok qp vm stop --force app
	unhold
	# A writer that holds its file across a forced stop: its writes fail
	# and the committed volume keeps what the stop committed.
	vm_start app
	rm -f "$TEST_TMP/held" "$TEST_TMP/go"
	(
		exec 3<>"$MNT/app/private.img"
		printf 'before the stop' >&3 || exit 3
		: >"$TEST_TMP/held"
		while [ ! -e "$TEST_TMP/go" ]; do sleep 0.05; done
		printf 'stale write' >&3 2>/dev/null && exit 0
		exit 1
	) &
	_w=$!
	_i=0
	while [ ! -e "$TEST_TMP/held" ] && [ "$_i" -lt 100 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	assert_exists "$TEST_TMP/held"
	assert_ok qp vm stop --force app
	_before=$(qp volume export app:private - | head -c 4096 | cksum)
	: >"$TEST_TMP/go"
	wait "$_w"
	assert_eq "$?" 1 "exit status of the writer after the forced stop"
	assert_eq "$(qp volume export app:private - | head -c 4096 | cksum)" "$_before" \
		"committed private after a stale write"
	assert_eq "$(qp volume export app:private - | head -c 15)" "before the stop" \
		"what the writer wrote while the VM ran"
	t_inuse_gate
}

# The write gate of a forced stop.  While a stopper holds the marker's
# byte-0 lock, writes fail with EIO; once it lets go they work again.  And
# a forced stop under writers that never pause: it ends, and nothing they
# write after it lands in the committed volume.
t_inuse_gate() {
	qp_require_cmd python3
	vm_start app
	_m=$QPOOL_ROOT/run/inuse/app/private
	rm -f "$TEST_TMP/locked" "$TEST_TMP/unlock"
	python3 - "$_m" "$TEST_TMP" <<'PY' &
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 1, 0))
open(sys.argv[2] + "/locked", "w").close()
# Until told, or 30 s: a failed test must not wait for it.
for _ in range(600):
    if os.path.exists(sys.argv[2] + "/unlock"):
        break
    time.sleep(0.05)
PY
	_p=$!
	hold "$MNT/app/private.img"
	_i=0
	while [ ! -e "$TEST_TMP/locked" ] && [ "$_i" -lt 100 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	assert_exists "$TEST_TMP/locked"
	assert_stderr_matches "Input/output error" \
		dd if=/dev/zero of="$MNT/app/private.img" bs=4k count=1 conv=notrunc
	: >"$TEST_TMP/unlock"
	wait "$_p"
	assert_ok dd if=/dev/zero of="$MNT/app/private.img" bs=4k count=1 conv=notrunc
	unhold
	# Two writers in a loop, each write a different pattern, O_DIRECT.
	rm -f "$TEST_TMP/stop"
	_ws=
	for _k in 1 2; do
		(
			_n=0
			while [ ! -e "$TEST_TMP/stop" ]; do
				_n=$((_n + 1))
				head -c 65536 /dev/urandom | dd of="$MNT/app/private.img" bs=64k \
					seek=$_k oflag=direct conv=notrunc 2>/dev/null
			done
		) &
		_ws="$_ws $!"
	done
	sleep 1
	assert_ok qp vm stop --force app
	_c1=$(qp volume export app:private - | head -c $((3 * 65536)) | cksum)
	sleep 1
	: >"$TEST_TMP/stop"
	for _p in $_ws; do
		wait "$_p"
	done
	assert_eq "$(qp volume export app:private - | head -c $((3 * 65536)) | cksum)" "$_c1" \
		"committed private while the writers went on"
}

t_concurrent() {
	fuse_setup
	head -c $((8 * MiB)) /dev/urandom >"$TEST_TMP/rand"
	vm_start tpl
	vm_start app
	_pids=
	for _t in tpl/private tpl/root app/private app/volatile; do
		for _off in 0 32; do
			dd if="$TEST_TMP/rand" of="$MNT/$_t.img" bs=64k seek=$((_off * 16)) \
				conv=notrunc 2>/dev/null &
			_pids="$_pids $!"
		done
		dd if="$MNT/$_t.img" of=/dev/null bs=1M count=64 2>/dev/null &
		_pids="$_pids $!"
	done
	for _p in $_pids; do
		wait "$_p" || _qp_failed "a concurrent reader or writer failed"
	done
	for _t in tpl/private tpl/root app/private app/volatile; do
		_vm=${_t%/*}
		_b=$(attach_path "$_vm" "${_t#*/}")
		for _off in 0 32; do
			cmp -n $((8 * MiB)) "$TEST_TMP/rand" "$_b" 0 $((_off * MiB)) ||
				_qp_failed "'$_t' at $_off MiB differs from what was written"
			cmp -n $((8 * MiB)) "$MNT/$_t.img" "$_b" $((_off * MiB)) $((_off * MiB)) ||
				_qp_failed "'$_t' read through the mount differs from its backing file"
		done
	done
}

# odirect_check FILE: reads FILE with O_DIRECT while another descriptor
# writes it (see t_readahead); prints what differs and fails.
odirect_check() {
	python3 - "$1" <<'PY'
import mmap, os, sys, time
p, B = sys.argv[1], 1 << 20
buf = mmap.mmap(-1, B)

def put(fd, blk, byte):
    buf.seek(0); buf.write(bytes([byte]) * B)
    assert os.pwritev(fd, [buf], blk * B) == B

def get(fd, blk):
    assert os.preadv(fd, [buf], blk * B) == B
    return set(buf[:])

bad = []
def want(fd, blk, byte, what):
    got = get(fd, blk)
    if got != {byte}:
        bad.append("%s: block %d reads %s, not %#x" % (what, blk, sorted(got)[:4], byte))

# rd reads blocks blks in order (the next ones are read ahead), then
# wr writes the block after them, and rd must read what wr wrote.
def written_after(rd, wr, blks, byte, what):
    for b in blks:
        want(rd, b, 0x11, "read")
    time.sleep(0.3)
    put(wr, blks[-1] + 1, byte)
    want(rd, blks[-1] + 1, byte, what)

w = os.open(p, os.O_WRONLY | os.O_DIRECT)
for blk in range(12):
    put(w, blk, 0x11)
r = os.open(p, os.O_RDONLY | os.O_DIRECT)
written_after(r, w, [0, 1], 0x22, "written by another descriptor")
want(r, 3, 0x11, "next block")
rw = os.open(p, os.O_RDWR | os.O_DIRECT)
written_after(rw, rw, [6, 7], 0x33, "written by the same descriptor")
# The reader goes on after a block that was written: read ahead again.
written_after(r, w, [4], 0x44, "after a write")
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
PY
}

# Read-ahead for O_DIRECT readers: long sequential reads equal the backing
# file, and blocks read ahead are never served once written.
t_readahead() {
	fuse_setup
	qp_require_cmd python3
	vm_start tpl
	assert_ok dd if=/dev/urandom of="$MNT/tpl/private.img" bs=1M count=24 oflag=direct \
		conv=notrunc
	# 1 MiB requests (the read-ahead size), and 128 KiB ones.
	dd if="$MNT/tpl/private.img" iflag=direct bs=1M count=24 2>/dev/null >"$TEST_TMP/seq1"
	dd if="$MNT/tpl/private.img" iflag=direct bs=128k count=192 2>/dev/null >"$TEST_TMP/seq2"
	assert_ok cmp -n $((24 * MiB)) "$TEST_TMP/seq1" "$(attach_path tpl private)"
	assert_ok cmp -n $((24 * MiB)) "$TEST_TMP/seq2" "$(attach_path tpl private)"
	assert_ok odirect_check "$MNT/tpl/private.img"
	# The last block of a volume whose size is not a multiple of the request.
	assert_ok qp vm stop tpl
	assert_ok qp volume resize tpl:private $((2048 * MiB + 4096))
	vm_start tpl
	assert_ok dd if=/dev/urandom of="$MNT/tpl/private.img" bs=4096 count=1 \
		seek=$((512 * 1024)) oflag=direct conv=notrunc
	dd if="$MNT/tpl/private.img" iflag=direct bs=1M skip=2045 2>/dev/null >"$TEST_TMP/tail"
	assert_eq "$(fsize "$TEST_TMP/tail")" $((3 * MiB + 4096)) "bytes read to the end"
	assert_ok cmp "$TEST_TMP/tail" "$(attach_path tpl private)" 0 $((2045 * MiB))
}

t_restart() {
	fuse_setup
	vm_start app
	assert_ok dd if=/dev/urandom of="$MNT/app/private.img" bs=1M count=2 conv=notrunc
	hold "$MNT/app/private.img"
	kill -9 "$QPID"
	wait "$QPID" 2>/dev/null
	QPID=
	unhold
	assert_stderr_matches "not connected" ls "$MNT"
	# The dead qpoold's marker is stale: not in use any more.
	assert_ok qp vm stop app
	vm_start app
	fuse_start
	assert_match "stale FUSE mount" "$(cat "$TEST_TMP/qpoold.$QP_TEST_N.log")" ||
		cat "$TEST_TMP/qpoold.$QP_TEST_N.log" >&2
	assert_ok cmp -n $((2 * MiB)) "$MNT/app/private.img" "$(attach_path app private)"
	assert_eq "$(grep -c " $MNT " /proc/mounts)" 1 "mounts on the mount point"
	# SIGTERM unmounts cleanly and leaves no marker behind.
	hold "$MNT/app/private.img"
	fuse_stop
	unhold
	_qp_is_mounted "$MNT" && _qp_failed "still mounted after SIGTERM"
	gone "$QPOOL_ROOT/run/inuse/app/private"
	assert_ok qp vm stop app
}

qp_test fuse_tree t_tree
qp_test fuse_content t_content
qp_test fuse_perms t_perms
qp_test fuse_inuse t_inuse
qp_test fuse_concurrent t_concurrent
qp_test fuse_restart t_restart
qp_test fuse_readahead t_readahead
qp_done
