#!/bin/sh
# Two qpool processes at a time on one state folder: two background loops
# each create, start and stop their own VMs.  Afterwards every VM of both
# loops is in `vm list`, in qubes.xml with its volumes and in `volume list`:
# no update is lost.
. "$(dirname "$0")/../lib.sh"

N=${QP_CONCURRENCY_N:-20}

# worker PREFIX CLASS [TEMPLATE]: N VMs PREFIX-1..N, each created, started and
# stopped; every failure is logged to $TEST_TMP/PREFIX.fail.
worker() {
	_p=$1 _c=$2 _t=$3
	_i=1
	: >"$TEST_TMP/$_p.fail"
	while [ "$_i" -le "$N" ]; do
		_n=$_p-$_i
		if [ -n "$_t" ]; then
			set -- --class "$_c" --template "$_t" "$_n"
		else
			set -- --class "$_c" "$_n"
		fi
		qp vm create "$@" >/dev/null 2>>"$TEST_TMP/$_p.fail" ||
			echo "vm create $_n failed" >>"$TEST_TMP/$_p.fail"
		qp vm start "$_n" >/dev/null 2>>"$TEST_TMP/$_p.fail" ||
			echo "vm start $_n failed" >>"$TEST_TMP/$_p.fail"
		qp volume info "$_n:private" size >/dev/null 2>>"$TEST_TMP/$_p.fail" ||
			echo "volume info $_n:private failed" >>"$TEST_TMP/$_p.fail"
		qp vm stop "$_n" >/dev/null 2>>"$TEST_TMP/$_p.fail" ||
			echo "vm stop $_n failed" >>"$TEST_TMP/$_p.fail"
		_i=$((_i + 1))
	done
}

t_two_writers() {
	assert_ok qp vm create --class TemplateVM base
	# One loop makes templates, the other AppVMs of the shared template.
	worker ta TemplateVM &
	pid_a=$!
	worker ap AppVM base &
	pid_b=$!
	wait "$pid_a"
	wait "$pid_b"
	for p in ta ap; do
		if [ -s "$TEST_TMP/$p.fail" ]; then
			_qp_failed "loop $p had failures:" "$(cat "$TEST_TMP/$p.fail")"
		fi
	done

	qp_run qp vm list
	assert_eq "$QP_RC" 0 "vm list"
	printf '%s\n' "$QP_STDOUT" >"$TEST_TMP/vms"
	qp_run qp volume list
	assert_eq "$QP_RC" 0 "volume list"
	printf '%s\n' "$QP_STDOUT" >"$TEST_TMP/vols"
	xml=$QPOOL_ROOT/qubes.xml
	i=1
	while [ "$i" -le "$N" ]; do
		for n in ta-$i ap-$i; do
			awk -v n="$n" '$1 == n && $NF == "Halted" { f = 1 } END { exit !f }' \
				"$TEST_TMP/vms" || _qp_failed "'$n' not listed as Halted by vm list"
			grep -q "<property name=\"name\">$n</property>" "$xml" ||
				_qp_failed "'$n' missing from qubes.xml"
			for vol in root private volatile; do
				grep -Eq "<volume [^>]*vid=\"[^\"]*/$n/$vol\"" "$xml" ||
					_qp_failed "volume $n:$vol missing from qubes.xml"
				awk -v n="$n" -v v="$vol" '$2 == n && $3 == v { f = 1 } END { exit !f }' \
					"$TEST_TMP/vols" || _qp_failed "volume list has no $n $vol"
			done
		done
		i=$((i + 1))
	done
	assert_eq "$(awk 'NR > 1' "$TEST_TMP/vms" | wc -l | tr -d ' ')" $((2 * N + 1)) \
		"number of VMs listed"
	# And the state is still writable and consistent.
	assert_ok qp vm start ap-1
	assert_ok qp vm stop ap-1
	assert_ok qp vm remove ta-1
}

qp_test two_writers t_two_writers
qp_done
