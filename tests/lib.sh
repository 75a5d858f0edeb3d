# Helpers for qpool's integration tests.  POSIX sh: runs under dash, bash and
# busybox ash.  A test script sources it and runs its tests with qp_test:
#
#	#!/bin/sh
#	. "$(dirname "$0")/../lib.sh"
#
#	t_start_stop() {
#		mnt=$(qp_mkfs_loop btrfs 256) || skip
#		assert_ok qp pool add p1 file-reflink -o dir_path="$mnt/p1"
#		assert_ok qp vm create --class TemplateVM --pool p1 tpl
#		assert_stderr_matches "no such" qp vm start nothere
#	}
#	qp_test start_stop t_start_stop
#	qp_done
#
# qp_test NAME [CMD [ARG...]] runs CMD (default: NAME) in a subshell with its
# own empty QPOOL_ROOT and prints one line: "PASS: NAME", "FAIL: NAME" or
# "SKIP: NAME REASON".  The test fails when an assertion fails or when CMD
# returns non-zero.  Called outside qp_test, a failed assertion ends the whole
# script with "FAIL: <script>" and skip ends it with "SKIP: <script> REASON".
#
# Environment:
#	QPOOL		the qpool binary (default: ./qpool at the top of the tree),
#			made absolute
#	QPOOL_ROOT	set by qp_test to a fresh folder per test (exported)
#	TEST_TMP	a temporary folder for this script, removed at exit
#
# Everything a script creates (loop mounts, images, TEST_TMP) is undone by
# qp_cleanup, registered on EXIT, INT and TERM.

# ---- setup --------------------------------------------------------------

QP_SCRIPT=$(basename "$0")
QP_SCRIPT=${QP_SCRIPT%.sh}
QP_NPASS=0
QP_NFAIL=0
QP_NSKIP=0
QP_TEST_N=0
QP_IN_TEST=0
QP_RC=0
QP_STDOUT=
QP_STDERR=

# The top of the source tree: the first parent of the script's folder that
# holds tests/lib.sh (QP_TOP may be given instead).
if [ -z "${QP_TOP:-}" ]; then
	QP_TOP=$(cd "$(dirname "$0")" && pwd)
	while [ "$QP_TOP" != / ] && [ ! -f "$QP_TOP/tests/lib.sh" ]; do
		QP_TOP=$(dirname "$QP_TOP")
	done
	[ -f "$QP_TOP/tests/lib.sh" ] || QP_TOP=$(pwd)
fi

_qp_abs() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s/%s\n' "$(pwd)" "$1" ;;
	esac
}

QPOOL=$(_qp_abs "${QPOOL:-$QP_TOP/qpool}")
export QPOOL QP_TOP

TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/qpool-test.XXXXXX") || {
	echo "lib.sh: cannot create a temporary folder" >&2
	exit 1
}
export TEST_TMP
: >"$TEST_TMP/.cleanup"

# Runs the qpool under test.
qp() {
	"$QPOOL" "$@"
}

# ---- cleanup ------------------------------------------------------------

# Records something for qp_cleanup: "mnt PATH" (unmounted), "img PATH" (loop
# devices backed by it are detached).  Undone in reverse order.
_qp_record() {
	printf '%s %s\n' "$1" "$2" >>"$TEST_TMP/.cleanup"
}

# Registers a mount point made by the test itself (FUSE, bind...) so that
# qp_cleanup unmounts it.
qp_track_mount() {
	_qp_record mnt "$1"
}

_qp_is_mounted() {
	# /proc/mounts escapes blanks; TEST_TMP paths have none.
	awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts 2>/dev/null
}

_qp_umount() {
	_qp_m=$1
	_qp_i=0
	while _qp_is_mounted "$_qp_m"; do
		if [ "$_qp_i" -ge 10 ]; then
			umount -l "$_qp_m" 2>/dev/null || fusermount3 -uz "$_qp_m" 2>/dev/null
			break
		fi
		umount "$_qp_m" 2>/dev/null || fusermount3 -u "$_qp_m" 2>/dev/null ||
			sleep 0.2 2>/dev/null || sleep 1
		_qp_i=$((_qp_i + 1))
	done
}

# Detaches every loop device backed by the image file @1.
_qp_detach_loops() {
	for _qp_bf in /sys/block/loop*/loop/backing_file; do
		[ -r "$_qp_bf" ] || continue
		if [ "$(cat "$_qp_bf" 2>/dev/null)" = "$1" ]; then
			_qp_dev=${_qp_bf#/sys/block/}
			_qp_dev=/dev/${_qp_dev%%/*}
			losetup -d "$_qp_dev" 2>/dev/null
		fi
	done
}

qp_cleanup() {
	_qp_rc=$?
	trap - EXIT INT TERM
	cd / || true
	if [ -f "$TEST_TMP/.cleanup" ]; then
		# reverse order (POSIX: no tac)
		sed -n '1!G;h;$p' "$TEST_TMP/.cleanup" | while read -r _qp_kind _qp_path; do
			case $_qp_kind in
			mnt) _qp_umount "$_qp_path" ;;
			img) _qp_detach_loops "$_qp_path" ;;
			esac
		done
	fi
	# Never recurse into something still mounted below TEST_TMP.
	if awk -v t="$TEST_TMP/" 'index($2, t) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "lib.sh: $TEST_TMP still has mounts; left in place" >&2
	else
		rm -rf "$TEST_TMP"
	fi
	if [ "$_qp_rc" = 0 ] && [ "$QP_NFAIL" -gt 0 ]; then
		_qp_rc=1
	fi
	exit "$_qp_rc"
}

trap qp_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- facilities ---------------------------------------------------------

# Says why the last qp_mkfs_loop failed, for `skip` with no argument.
_qp_why() {
	printf '%s\n' "$*" >"$TEST_TMP/.why"
	printf 'lib.sh: %s\n' "$*" >&2
}

# qp_mkfs_loop FSTYPE SIZE_MB: makes a sparse image under TEST_TMP, formats it
# with FSTYPE (btrfs, xfs, ext4...), loop-mounts it and prints the mount
# point.  Returns non-zero (reason in `skip`'s default) when it cannot.
# Use as:  mnt=$(qp_mkfs_loop btrfs 256) || skip
qp_mkfs_loop() {
	_qp_fs=$1
	_qp_mb=$2
	if [ "$(id -u)" != 0 ]; then
		_qp_why "loop mounts need root"
		return 1
	fi
	if ! command -v "mkfs.$_qp_fs" >/dev/null 2>&1; then
		_qp_why "mkfs.$_qp_fs is not installed"
		return 1
	fi
	_qp_n=0
	while [ -e "$TEST_TMP/$_qp_fs.$_qp_n.img" ]; do
		_qp_n=$((_qp_n + 1))
	done
	_qp_img=$TEST_TMP/$_qp_fs.$_qp_n.img
	_qp_mnt=$TEST_TMP/$_qp_fs.$_qp_n
	mkdir -p "$_qp_mnt" || return 1
	if ! truncate -s "${_qp_mb}M" "$_qp_img" 2>/dev/null; then
		dd if=/dev/zero of="$_qp_img" bs=1M count=0 seek="$_qp_mb" 2>/dev/null || {
			_qp_why "cannot create a $_qp_mb MiB image in $TEST_TMP"
			return 1
		}
	fi
	case $_qp_fs in
	btrfs | xfs) set -- -f -q ;;
	ext2 | ext3 | ext4) set -- -F -q ;;
	*) set -- ;;
	esac
	if ! "mkfs.$_qp_fs" "$@" "$_qp_img" >"$TEST_TMP/.mkfs.log" 2>&1; then
		_qp_why "mkfs.$_qp_fs failed: $(tail -n 3 "$TEST_TMP/.mkfs.log")"
		return 1
	fi
	_qp_record img "$_qp_img"
	if ! mount -o loop "$_qp_img" "$_qp_mnt" 2>"$TEST_TMP/.mount.log"; then
		_qp_why "cannot loop-mount $_qp_fs: $(cat "$TEST_TMP/.mount.log")"
		return 1
	fi
	_qp_record mnt "$_qp_mnt"
	printf '%s\n' "$_qp_mnt"
}

# qp_require_root / qp_require_cmd CMD...: skip unless available.
qp_require_root() {
	[ "$(id -u)" = 0 ] || skip "needs root"
}

qp_require_cmd() {
	for _qp_c in "$@"; do
		command -v "$_qp_c" >/dev/null 2>&1 || skip "$_qp_c is not installed"
	done
}

# ---- results --------------------------------------------------------------

qp_pass() {
	QP_NPASS=$((QP_NPASS + 1))
	printf 'PASS: %s\n' "$1"
}

qp_fail() {
	QP_NFAIL=$((QP_NFAIL + 1))
	printf 'FAIL: %s\n' "$1"
	shift
	[ $# -eq 0 ] || printf '  %s\n' "$*" >&2
}

qp_skip() {
	QP_NSKIP=$((QP_NSKIP + 1))
	_qp_n=$1
	shift
	printf 'SKIP: %s %s\n' "$_qp_n" "$*"
}

# skip [REASON]: ends the current test (or, outside one, the script) as
# skipped.  Without REASON, the reason the last qp_mkfs_loop failed.
skip() {
	if [ $# -gt 0 ]; then
		_qp_reason=$*
	else
		_qp_reason=$(cat "$TEST_TMP/.why" 2>/dev/null)
		[ -n "$_qp_reason" ] || _qp_reason="no reason given"
	fi
	if [ "$QP_IN_TEST" = 1 ]; then
		printf '%s\n' "$_qp_reason" >"$TEST_TMP/.skip"
		exit 77
	fi
	qp_skip "$QP_SCRIPT" "$_qp_reason"
	exit 0
}

# Called by assertions: ends the test (or the script) as failed.
_qp_failed() {
	printf '  %s\n' "$@" >&2
	if [ "$QP_IN_TEST" = 1 ]; then
		exit 1
	fi
	qp_fail "$QP_SCRIPT"
	exit 1
}

# qp_test NAME [CMD [ARG...]]
qp_test() {
	_qp_name=$1
	shift
	[ $# -gt 0 ] || set -- "$_qp_name"
	QP_TEST_N=$((QP_TEST_N + 1))
	rm -f "$TEST_TMP/.skip" "$TEST_TMP/.why"
	(
		QP_IN_TEST=1
		QPOOL_ROOT=$TEST_TMP/root.$QP_TEST_N
		export QPOOL_ROOT
		mkdir -p "$QPOOL_ROOT" || exit 1
		"$@"
	)
	_qp_rc=$?
	if [ "$_qp_rc" = 0 ]; then
		qp_pass "$_qp_name"
	elif [ "$_qp_rc" = 77 ] && [ -f "$TEST_TMP/.skip" ]; then
		qp_skip "$_qp_name" "$(cat "$TEST_TMP/.skip")"
	elif [ "$_qp_rc" = 1 ]; then
		qp_fail "$_qp_name"
	else
		qp_fail "$_qp_name" "exit status $_qp_rc"
	fi
	return 0
}

# qp_done: ends the script, with status 1 when a test failed.
qp_done() {
	[ "$QP_NFAIL" = 0 ] || exit 1
	exit 0
}

# ---- assertions ---------------------------------------------------------

# Runs "$@" with stdout and stderr captured into QP_STDOUT and QP_STDERR and
# the status into QP_RC (trailing newlines removed, as $(...) does).
qp_run() {
	"$@" >"$TEST_TMP/.out" 2>"$TEST_TMP/.err"
	QP_RC=$?
	QP_STDOUT=$(cat "$TEST_TMP/.out")
	QP_STDERR=$(cat "$TEST_TMP/.err")
	return "$QP_RC"
}

_qp_show_run() {
	printf '  command: %s\n' "$*" >&2
	printf '  status:  %s\n' "$QP_RC" >&2
	[ -z "$QP_STDOUT" ] || printf '  stdout:  %s\n' "$QP_STDOUT" >&2
	[ -z "$QP_STDERR" ] || printf '  stderr:  %s\n' "$QP_STDERR" >&2
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() {
	[ "$1" = "$2" ] && return 0
	_qp_failed "assertion failed: ${3:-values differ}" "expected: '$2'" "actual:   '$1'"
}

# assert_match ERE STRING
assert_match() {
	printf '%s\n' "$2" | grep -Eq -- "$1" && return 0
	_qp_failed "assertion failed: '$2' does not match /$1/"
}

# assert_ok CMD...: CMD exits 0 (its output is kept in QP_STDOUT/QP_STDERR).
assert_ok() {
	qp_run "$@" && return 0
	_qp_show_run "$@"
	_qp_failed "assertion failed: command failed"
}

# assert_fails CMD...: CMD exits non-zero.
assert_fails() {
	qp_run "$@" || return 0
	_qp_show_run "$@"
	_qp_failed "assertion failed: command succeeded"
}

# assert_stderr_matches ERE CMD...: what CMD prints on stderr matches ERE
# (whatever its status, which is left in QP_RC).
assert_stderr_matches() {
	_qp_pat=$1
	shift
	qp_run "$@"
	printf '%s\n' "$QP_STDERR" | grep -Eq -- "$_qp_pat" && return 0
	_qp_show_run "$@"
	_qp_failed "assertion failed: stderr does not match /$_qp_pat/"
}

# assert_exists PATH / assert_not_exists PATH
assert_exists() {
	[ -e "$1" ] && return 0
	_qp_failed "assertion failed: '$1' does not exist"
}

assert_not_exists() {
	[ ! -e "$1" ] && return 0
	_qp_failed "assertion failed: '$1' exists"
}

# Keeps a copy of qubes.xml to compare with later.
xml_keep() {
	[ -f "$QPOOL_ROOT/qubes.xml" ] || _qp_failed "no qubes.xml in '$QPOOL_ROOT'"
	cp "$QPOOL_ROOT/qubes.xml" "$TEST_TMP/xml.kept"
}

# xml_same WHAT: qubes.xml is byte-identical to the kept copy.
xml_same() {
	cmp -s "$TEST_TMP/xml.kept" "$QPOOL_ROOT/qubes.xml" && return 0
	diff "$TEST_TMP/xml.kept" "$QPOOL_ROOT/qubes.xml" >&2
	_qp_failed "qubes.xml changed by: $*"
}
