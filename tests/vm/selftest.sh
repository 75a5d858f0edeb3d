#!/bin/sh
# Checks that tests/vm/run.sh judges runs right: a guest FAIL line, a guest
# script's non-zero exit, a hang (timeout) and a kernel panic must each make
# it exit 1; a clean run exits 0.  Three boots, about 40 s.  Not part of
# `make check`; run it after changing the harness.
#
# Usage: tests/vm/selftest.sh
TOP=$(cd "$(dirname "$0")/../.." && pwd)
RUN=$TOP/tests/vm/run.sh
W=$(mktemp -d "${TMPDIR:-/tmp}/qpool-vm-selftest.XXXXXX") || exit 1
trap 'rm -rf "$W"' EXIT
nfail=0

check() {
	if [ "$2" = 0 ]; then
		echo "PASS: vm-selftest/$1"
	else
		echo "FAIL: vm-selftest/$1"
		sed 's/^/  # /' "$W/out" | tail -n 20
		nfail=$((nfail + 1))
	fi
}

printf 'echo "PASS: a"\necho "FAIL: b"\nexit 1\n' >"$W/fail.sh"
printf 'echo hello\nexit 3\n' >"$W/exit3.sh"
printf '. /tests/vm/vmlib.sh\nvm_step ok true\nvm_unplug 1 10 && vm_pass unplug\n' >"$W/ok.sh"
printf 'echo "PASS: before-hang"\nsleep 1000\n' >"$W/hang.sh"
printf 'echo c >/proc/sysrq-trigger\n' >"$W/panic.sh"

"$RUN" --disk 64M --disk 64M "$W/ok.sh" >"$W/out" 2>&1
rc=$?
[ $rc = 0 ] && grep -q '^PASS: unplug' "$W/out" && grep -q '^### VM-DONE rc=0' "$W/out"
check clean-run $?

"$RUN" --disk 64M "$W/fail.sh" "$W/exit3.sh" "$W/ok.sh" >"$W/out" 2>&1
rc=$?
[ $rc = 1 ] && grep -q '^FAIL: b$' "$W/out" && grep -q '^FAIL: vm/exit3.sh (exit status 3)' "$W/out" &&
	! grep -q '^FAIL: vm/fail.sh' "$W/out" && grep -q '^### VM-DONE rc=1' "$W/out"
check fail-and-exit-status $?

"$RUN" --disk 64M --timeout 20 "$W/hang.sh" >"$W/out" 2>&1
rc=$?
[ $rc = 1 ] && grep -q '^FAIL: vm/boot (no VM-DONE: timed out' "$W/out"
check timeout $?

"$RUN" --disk 64M "$W/panic.sh" >"$W/out" 2>&1
rc=$?
[ $rc = 1 ] && grep -q '^FAIL: vm/boot (no VM-DONE' "$W/out"
check panic $?

[ "$nfail" = 0 ]
