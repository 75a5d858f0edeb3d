#!/usr/bin/env bash
# qpool benchmark: how long `qpool vm start` + `qpool vm stop` of an AppVM take
# when its template's root is 10 GiB and when it is 100 GiB (both sparse with
# 64 MiB of data), and how long listing takes with 1000 VMs.  Prints figures
# only; nothing is asserted.
#
# Runs on a loop-mounted btrfs image (needs root and mkfs.btrfs) under a
# temporary folder, with its own state folder (--root); everything is removed
# at the end.
#
# Environment: QPOOL (binary, default ./qpool), BENCH_RUNS (21), BENCH_VMS
# (1000), BENCH_DATA_MIB (64), BENCH_NO_HYPERFINE=1 (use the shell loop).
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
QPOOL=${QPOOL:-$TOP/qpool}
RUNS=${BENCH_RUNS:-21}
NVMS=${BENCH_VMS:-1000}
DATA_MIB=${BENCH_DATA_MIB:-64}

die() {
	echo "bench: $*" >&2
	exit 1
}

[ -x "$QPOOL" ] || die "$QPOOL is missing: run 'make' first"
[ "$(id -u)" = 0 ] || die "needs root for the btrfs loop mount"
command -v mkfs.btrfs >/dev/null 2>&1 || die "mkfs.btrfs is not installed (apt-get install btrfs-progs)"

if [ "${BENCH_NO_HYPERFINE:-0}" != 1 ] && ! command -v hyperfine >/dev/null 2>&1; then
	echo "bench: installing hyperfine" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null 2>&1 ||
		{ DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null 2>&1; } ||
		echo "bench: hyperfine unavailable; timing with a shell loop" >&2
fi
if [ "${BENCH_NO_HYPERFINE:-0}" != 1 ] && command -v hyperfine >/dev/null 2>&1; then
	TIMER=hyperfine
else
	TIMER="shell loop (date +%s%N)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qpool-bench.XXXXXX")
MNT=$WORK/mnt
IMG=$WORK/btrfs.img
ROOT=$WORK/state
LROOT=$WORK/state-list
EROOT=$WORK/state-empty

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	for vm in app10 app100 tpl10 tpl100; do
		"$QPOOL" --root "$ROOT" vm stop --force "$vm" >/dev/null 2>&1
	done
	if mountpoint -q "$MNT"; then
		umount "$MNT" || umount -l "$MNT"
	fi
	losetup -j "$IMG" -O NAME --noheadings 2>/dev/null | xargs -r -n1 losetup -d
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

qp() { "$QPOOL" --root "$ROOT" "$@"; }

# median_ms NAME COMMAND: runs COMMAND (a shell string) RUNS times and sets
# MED, MIN and MAX in milliseconds.
median_ms() {
	local name=$1 cmd=$2 runs=${3:-$RUNS} csv i t0 t1
	if [ "$TIMER" = hyperfine ]; then
		csv=$WORK/$name.csv
		hyperfine --style none --warmup 2 --runs "$runs" --export-csv "$csv" "$cmd" \
			>"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; return 1; }
		read -r MED MIN MAX < <(awk -F, 'NR == 2 {
			printf "%.2f %.2f %.2f\n", $4 * 1000, $7 * 1000, $8 * 1000 }' "$csv")
	else
		bash -c "$cmd" && bash -c "$cmd"	# warm-up
		: >"$WORK/$name.times"
		for ((i = 0; i < runs; i++)); do
			t0=$(date +%s%N)
			bash -c "$cmd"
			t1=$(date +%s%N)
			echo $(((t1 - t0) / 1000)) >>"$WORK/$name.times"
		done
		read -r MED MIN MAX < <(sort -n "$WORK/$name.times" | awk '{ v[NR] = $1 }
			END { printf "%.2f %.2f %.2f\n", v[int((NR + 1) / 2)] / 1000, v[1] / 1000, v[NR] / 1000 }')
	fi
}

row() {
	printf '  %-34s %10s %10s %10s\n' "$@"
}

# fill VM: starts a template, writes DATA_MIB MiB spread over its root, stops it.
fill_root() {
	local vm=$1 path size step i
	path=$(qp vm start "$vm" | awk '$1 == "root" { print $2 }')
	[ -n "$path" ] || die "no root path printed by 'vm start $vm'"
	size=$(stat -c %s "$path")
	step=$((size / 1048576 / DATA_MIB))
	for ((i = 0; i < DATA_MIB; i++)); do
		head -c 1048576 /dev/urandom |
			dd of="$path" bs=1M seek=$((i * step)) conv=notrunc status=none
	done
	sync -f "$path"
	qp vm stop "$vm"
}

echo "qpool benchmark ($(nproc) cores, timer: $TIMER, $RUNS runs each)"
echo "setting up a 4 GiB btrfs loop mount in $WORK"
truncate -s 4G "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null
mkdir -p "$MNT"
mount -o loop "$IMG" "$MNT"

qp pool add bench file-reflink -o dir_path="$MNT/pool"
qp vm create --class TemplateVM -P bench tpl10
qp vm create --class TemplateVM -P bench tpl100
qp volume resize tpl100:root 100GiB
qp vm create --class AppVM --template tpl10 -P bench app10
qp vm create --class AppVM --template tpl100 -P bench app100
echo "writing $DATA_MIB MiB into each template's root"
fill_root tpl10
fill_root tpl100

echo
echo "vm start + vm stop of an AppVM (median of $RUNS, ms):"
row "template root" median min max
median_ms start10 "'$QPOOL' --root '$ROOT' vm start app10 >/dev/null && '$QPOOL' --root '$ROOT' vm stop app10"
m10=$MED
row "10 GiB ($DATA_MIB MiB written)" "$MED" "$MIN" "$MAX"
median_ms start100 "'$QPOOL' --root '$ROOT' vm start app100 >/dev/null && '$QPOOL' --root '$ROOT' vm stop app100"
m100=$MED
row "100 GiB ($DATA_MIB MiB written)" "$MED" "$MIN" "$MAX"
printf '  %-34s %10s\n' "ratio 100G/10G" "$(awk -v a="$m100" -v b="$m10" 'BEGIN { printf "%.2f", a / b }')"

echo
echo "listing (median, ms):"
row "command" median min max
"$QPOOL" --root "$EROOT" vm list >/dev/null
median_ms base "'$QPOOL' --root '$EROOT' vm list >/dev/null"
row "vm list, no VMs (process start)" "$MED" "$MIN" "$MAX"

echo "creating $NVMS AppVMs ..." >&2
"$QPOOL" --root "$LROOT" pool add list file-reflink -o dir_path="$MNT/list-pool" >/dev/null
"$QPOOL" --root "$LROOT" vm create --class TemplateVM -P list ltpl
t0=$(date +%s%N)
for ((i = 0; i < NVMS; i++)); do
	"$QPOOL" --root "$LROOT" vm create --class AppVM --template ltpl -P list "vm$i"
done
t1=$(date +%s%N)
create_total=$(((t1 - t0) / 1000000))
lruns=$((RUNS < 11 ? RUNS : 11))
median_ms vmlist "'$QPOOL' --root '$LROOT' vm list >/dev/null" "$lruns"
row "vm list, $((NVMS + 1)) VMs" "$MED" "$MIN" "$MAX"
median_ms vollist "'$QPOOL' --root '$LROOT' volume list >/dev/null" "$lruns"
row "volume list, $((NVMS + 1)) VMs" "$MED" "$MIN" "$MAX"
printf '  %-34s %10s\n' "$NVMS x vm create (total ms)" "$create_total"
printf '  %-34s %10s\n' "vm create, mean (ms)" "$(awk -v t="$create_total" -v n="$NVMS" 'BEGIN { printf "%.2f", t / n }')"
echo
echo "qubes.xml with $((NVMS + 1)) VMs: $(stat -c %s "$LROOT/qubes.xml") bytes"
