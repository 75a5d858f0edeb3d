#!/usr/bin/env bash
# qpoold benchmark: the same fio jobs through the qpoold mount and directly on
# the backing file of a started volume, in one run, and the ratio of each:
# sequential 1 MiB reads, sequential 1 MiB writes, 4 KiB random reads.
# Prints figures only; nothing is asserted.
#
# Every job uses O_DIRECT (fio --direct=1) on both sides, so that neither is
# served from a page cache the other lacks: through the mount, qpoold opens
# the backing file with O_DIRECT too.  One job at a time, psync, queue depth
# 1.  Each pair runs BENCH_ROUNDS times alternately (mount, direct, mount,
# direct...) and the median of each side is kept.
#
# Runs on a loop-mounted btrfs image under a temporary folder with its own
# state folder; everything is removed at the end.  Two tables, one per kind
# of backing store:
#   disk    the loop device in direct-I/O mode: reads and writes reach the
#           disk under the image, as they would on a real drive
#   memory  the loop device through the page cache: the image is in RAM, so
#           the backing file reads at memory speed and the copies that any
#           FUSE file system makes (kernel -> qpoold -> kernel) weigh most
# BENCH_STORES picks them (default "disk memory").
# Through the mount, sequential O_DIRECT reads get qpoold's read-ahead (two
# blocks); fio on the backing file has none, so on the disk store the mount
# can beat the direct side (the disk sees two requests at a time).
#
# Environment: QPOOL, QPOOLD (binaries, default ./qpool and ./qpoold),
# BENCH_SECONDS (3, per job), BENCH_ROUNDS (3), BENCH_SIZE_MIB (512).
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
QPOOL=${QPOOL:-$TOP/qpool}
QPOOLD=${QPOOLD:-$TOP/qpoold}
SECS=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-512}
STORES=${BENCH_STORES:-disk memory}

die() {
	echo "bench: $*" >&2
	exit 1
}

[ -x "$QPOOL" ] && [ -x "$QPOOLD" ] || die "qpool or qpoold is missing: run 'make' first"
[ "$(id -u)" = 0 ] || die "needs root for the btrfs loop mount and FUSE"
for c in mkfs.btrfs fio python3 losetup; do
	command -v "$c" >/dev/null 2>&1 || die "$c is not installed (scripts/install-deps.sh)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qpool-fuse-bench.XXXXXX")
IMG=$WORK/btrfs.img
POOLMNT=$WORK/pool
FUSEMNT=$WORK/fuse
ROOT=$WORK/state
QPID=

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ -n "$QPID" ]; then
		kill -TERM "$QPID" 2>/dev/null
		wait "$QPID" 2>/dev/null
	fi
	mountpoint -q "$FUSEMNT" && umount -l "$FUSEMNT"
	"$QPOOL" --root "$ROOT" vm stop --force tpl >/dev/null 2>&1
	if mountpoint -q "$POOLMNT"; then
		umount "$POOLMNT" || umount -l "$POOLMNT"
	fi
	losetup -j "$IMG" -O NAME --noheadings 2>/dev/null | xargs -r -n1 losetup -d
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$POOLMNT" "$FUSEMNT" "$ROOT"
truncate -s $((SIZE_MIB * 2 + 1024))M "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null
LOOPDEV=$(losetup -f --show "$IMG")
mount "$LOOPDEV" "$POOLMNT"
"$QPOOL" --root "$ROOT" pool add bench file-reflink -o dir_path="$POOLMNT/bench"
"$QPOOL" --root "$ROOT" vm create --class TemplateVM -P bench tpl
BACKING=$("$QPOOL" --root "$ROOT" vm start tpl | awk '$1 == "private" { print $2 }')
"$QPOOLD" --root "$ROOT" -f "$FUSEMNT" 2>"$WORK/qpoold.log" &
QPID=$!
for _ in $(seq 100); do
	mountpoint -q "$FUSEMNT" && break
	sleep 0.05
done
mountpoint -q "$FUSEMNT" || die "qpoold did not mount: $(cat "$WORK/qpoold.log")"
VIAFUSE=$FUSEMNT/tpl/private.img

# Fill the region first, so that reads read data, not holes.
fio --name=fill --filename="$BACKING" --rw=write --bs=1M --size="${SIZE_MIB}M" --direct=1 \
	--ioengine=psync --output=/dev/null

# run FILE RW BS: prints "MiB/s IOPS" of one fio job.
run() {
	fio --name=job --filename="$1" --rw="$2" --bs="$3" --size="${SIZE_MIB}M" --direct=1 \
		--ioengine=psync --runtime="$SECS" --time_based --randrepeat=0 \
		--output-format=json 2>/dev/null |
		python3 -c 'import json, sys
j = json.load(sys.stdin)["jobs"][0]
bw = (j["read"]["bw"] + j["write"]["bw"]) / 1024
iops = j["read"]["iops"] + j["write"]["iops"]
print("%.1f %.0f" % (bw, iops))'
}

median() {
	sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "qpoold I/O: fio --direct=1 --ioengine=psync, ${SECS} s per job, median of $ROUNDS rounds,"
echo "${SIZE_MIB} MiB region of a started volume on btrfs (loop), kernel $(uname -r), $(nproc) CPUs"
for store in $STORES; do
case $store in
disk) losetup --direct-io=on "$LOOPDEV" ;;
memory) losetup --direct-io=off "$LOOPDEV" ;;
*) die "unknown store '$store' (disk or memory)" ;;
esac
sync
echo 3 >/proc/sys/vm/drop_caches
echo
echo "backing store: $store ($(cat /sys/block/${LOOPDEV#/dev/}/loop/dio 2>/dev/null | sed 's/1/loop direct I\/O/; s/0/loop through the page cache/'))"
printf '%-22s %14s %14s %7s\n' "job" "qpoold mount" "backing file" "ratio"
for job in "read 1M seq-read-1MiB MiB/s" "write 1M seq-write-1MiB MiB/s" \
	"randread 4k rand-read-4KiB IOPS"; do
	set -- $job
	rw=$1 bs=$2 label=$3 unit=$4
	: >"$WORK/m" && : >"$WORK/d"
	for _ in $(seq "$ROUNDS"); do
		run "$VIAFUSE" "$rw" "$bs" >>"$WORK/m"
		run "$BACKING" "$rw" "$bs" >>"$WORK/d"
	done
	col=1
	[ "$unit" = IOPS ] && col=2
	m=$(awk -v c=$col '{ print $c }' "$WORK/m" | median)
	d=$(awk -v c=$col '{ print $c }' "$WORK/d" | median)
	ratio=$(awk -v m="$m" -v d="$d" 'BEGIN { printf "%.2f", (d > 0) ? m / d : 0 }')
	printf '%-22s %14s %14s %7s\n' "$label ($unit)" "$m" "$d" "$ratio"
done
done
echo
echo "aim: ratio >= 0.80 for the sequential jobs, >= 0.50 for 4 KiB random reads"
