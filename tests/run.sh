#!/bin/sh
# Runs qpool's tests: every unit test binary tests/unit/test_* and every
# executable tests/integration/test_*.sh, and ends with one line
# "N passed, N failed, N skipped".  Exits 1 when a test failed or a program
# exited non-zero.  POSIX sh (runs under busybox ash too).
#
# Usage: tests/run.sh [unit|integration|all] [SUBSTRING...]
#	SUBSTRING	run only programs whose path contains one of them
#
# Environment:
#	QPOOL		the binary under test (default: ./qpool at the top)
#	QP_UNIT_WRAPPER	command put before each unit test (e.g. valgrind ...)
#	QP_SH		shell to run integration scripts with (default: their #!)
#	QP_TEST_TIMEOUT	seconds one program may run (default 1800)
#
# Counting: a program's "N passed, N failed[, N skipped]" lines are added up
# when it prints any; otherwise its "PASS: ", "FAIL: " and "SKIP: " lines are
# counted.  A program that exits non-zero without reporting a failure counts
# as one failure; one that exits 0 reporting nothing counts as one pass
# (exit 77: one skip).

TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1

QPOOL=${QPOOL:-$TOP/qpool}
case $QPOOL in
/*) ;;
*) QPOOL=$TOP/$QPOOL ;;
esac
export QPOOL

tier=all
case ${1:-} in
unit | integration | all)
	tier=$1
	shift
	;;
esac

LOG=$(mktemp -d "${TMPDIR:-/tmp}/qpool-run.XXXXXX") || exit 1
trap 'rm -rf "$LOG"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

npass=0
nfail=0
nskip=0
bad=0
: >"$LOG/failed"

selected() {
	[ $# -gt 1 ] || return 0
	_p=$1
	shift
	for _s in "$@"; do
		case $_p in
		*"$_s"*) return 0 ;;
		esac
	done
	return 1
}

if command -v timeout >/dev/null 2>&1; then
	TIMEOUT="timeout ${QP_TEST_TIMEOUT:-1800}"
else
	TIMEOUT=
fi

# run_one PATH CMD...: runs, shows and counts one program.
run_one() {
	_name=$1
	shift
	echo "# $_name"
	# shellcheck disable=SC2086 # $TIMEOUT is a command and its argument
	{
		$TIMEOUT "$@" 2>&1
		echo $? >"$LOG/rc"
	} | tee "$LOG/out"
	_rc=$(cat "$LOG/rc")
	# shellcheck disable=SC2046 # three numbers and a flag
	set -- $(awk '
		/^([A-Za-z_-]+: )?[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$/ {
			sub(/^[A-Za-z_-]+: /, "")
			n = split($0, f, /, /)
			sp += f[1]; sf += f[2]; if (n > 2) ss += f[3]
			summary = 1
			next
		}
		/^PASS: / { p++ }
		/^FAIL: / { f_++; print substr($0, 7) > "'"$LOG/names"'" }
		/^SKIP: / { s++ }
		END {
			if (summary) print sp + 0, sf + 0, ss + 0, 1
			else print p + 0, f_ + 0, s + 0, (p + f_ + s > 0)
		}' "$LOG/out")
	_p=$1 _f=$2 _s=$3 _reported=$4
	if [ -f "$LOG/names" ]; then
		sed "s|^|$_name: |" "$LOG/names" >>"$LOG/failed"
		rm -f "$LOG/names"
	elif [ "$_f" -gt 0 ]; then
		echo "$_name" >>"$LOG/failed"
	fi
	if [ "$_rc" != 0 ]; then
		bad=1
		if [ "$_rc" = 77 ] && [ "$_reported" = 0 ]; then
			_s=1
			bad=0
			echo "SKIP: $_name (exit 77)"
		elif [ "$_f" = 0 ]; then
			_f=1
			echo "FAIL: $_name (exit status $_rc)"
			echo "$_name: exit status $_rc" >>"$LOG/failed"
		fi
	elif [ "$_reported" = 0 ]; then
		_p=1
	fi
	npass=$((npass + _p))
	nfail=$((nfail + _f))
	nskip=$((nskip + _s))
}

if [ "$tier" != integration ]; then
	for t in tests/unit/test_*; do
		if [ ! -f "$t" ] || [ ! -x "$t" ]; then
			continue
		fi
		case $t in
		*.c | *.d | *.o | *.h) continue ;;
		esac
		selected "$t" "$@" || continue
		# shellcheck disable=SC2086 # the wrapper is a command line
		run_one "$t" ${QP_UNIT_WRAPPER:-} "./$t"
	done
fi

if [ "$tier" != unit ]; then
	for t in tests/integration/test_*.sh; do
		if [ ! -f "$t" ] || [ ! -x "$t" ]; then
			continue
		fi
		selected "$t" "$@" || continue
		if [ -n "${QP_SH:-}" ]; then
			# shellcheck disable=SC2086 # QP_SH may be "busybox ash"
			run_one "$t" $QP_SH "./$t"
		else
			run_one "$t" "./$t"
		fi
	done
fi

if [ -s "$LOG/failed" ]; then
	echo "# failed:"
	sed 's/^/#   /' "$LOG/failed"
fi
echo "$npass passed, $nfail failed, $nskip skipped"
if [ "$nfail" -gt 0 ] || [ "$bad" != 0 ]; then
	exit 1
fi
exit 0
