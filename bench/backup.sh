#!/usr/bin/env bash
# qpool benchmark: `qpool backup` and `qpool restore` against the reference
# pipeline of backup format 4 (tar --sparse | gzip | split | scrypt enc per
# chunk, and back: scrypt dec | gzip -d | tar -x), on the same two volumes:
#   - random data (BENCH_RANDOM_MIB, default 1024);
#   - a real ext4 filesystem image (BENCH_FS_MIB, default 1024) holding a copy
#     of /usr files, its free space written with zeros (allocated, not holes).
# Both sides use the same key derivation strength: scrypt N = 2^20, r = 8,
# p = 1 (the scrypt tool's own choice on this machine, and qpool's default).
# The reference uses Qubes' 100 MiB chunks; qpool its default (1 GiB).
# Rates are volume bytes per second; qpool's times are the median of
# BENCH_RUNS runs (default 3), the reference runs once (minutes).  Prints a
# table; asserts nothing.
#
# Runs on a loop-mounted btrfs image under a temporary folder (root needed).
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
QPOOL=${QPOOL:-$TOP/qpool}
RAND_MIB=${BENCH_RANDOM_MIB:-1024}
FS_MIB=${BENCH_FS_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
PASS='bench passphrase'

die() {
	echo "bench: $*" >&2
	exit 1
}

[ -x "$QPOOL" ] || die "$QPOOL is missing: run 'make' first"
[ "$(id -u)" = 0 ] || die "needs root for the loop mounts"
for c in scrypt gzip tar split mkfs.btrfs mkfs.ext4; do
	command -v "$c" >/dev/null 2>&1 || die "$c is not installed (make deps)"
done

W=$(mktemp -d /var/tmp/qpool-bench-backup.XXXXXX)
MNT=$W/mnt
cleanup() {
	umount "$W/fs" 2>/dev/null || true
	umount "$MNT" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

# A btrfs scratch filesystem for everything.
need=$(((RAND_MIB + FS_MIB) * 6 + 2048))
truncate -s "${need}M" "$W/btrfs.img"
mkfs.btrfs -q "$W/btrfs.img"
mkdir -p "$MNT"
mount -o loop "$W/btrfs.img" "$MNT"
D=$MNT/data
mkdir -p "$D"
printf '%s\n' "$PASS" >"$D/pass"

echo "bench: preparing volumes (${RAND_MIB} MiB random, ${FS_MIB} MiB ext4 image)" >&2
head -c "$((RAND_MIB << 20))" /dev/urandom >"$D/random.img"
truncate -s "${FS_MIB}M" "$D/fs.img"
mkfs.ext4 -q -F "$D/fs.img"
mkdir -p "$W/fs"
mount -o loop "$D/fs.img" "$W/fs"
# files: the first 60% of the image's size of a tar of /usr
budget=$((FS_MIB * 6 / 10))
(tar -C / -cf - usr/share usr/lib usr/bin 2>/dev/null || true) | head -c "$((budget << 20))" |
	(tar -C "$W/fs" -xf - 2>/dev/null || true)
dd if=/dev/zero of="$W/fs/zeros" bs=1M status=none 2>/dev/null || true
rm -f "$W/fs/zeros"
umount "$W/fs"
# make every block allocated: the image holds written zeros, not holes
cp --sparse=never "$D/fs.img" "$D/fs.full" && mv "$D/fs.full" "$D/fs.img"
TOTAL=$(((RAND_MIB + FS_MIB) << 20))

now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }

# ---- qpool ------------------------------------------------------------------
export QPOOL_ROOT=$MNT/root
"$QPOOL" pool add bench file-reflink -o dir_path="$MNT/pool" >/dev/null
"$QPOOL" vm create --class StandaloneVM -P bench vm >/dev/null
"$QPOOL" volume import vm:root "$D/fs.img" >/dev/null
"$QPOOL" volume import vm:private "$D/random.img" >/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches

# qpool's runs are short next to the machine's noise: RUNS of them
# (BENCH_RUNS, default 3), the median reported.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
QBS=() QRS=()
for run in $(seq 1 "$RUNS"); do
	rm -rf "$MNT/qpool.bak" "$MNT/root2" "$MNT/pool2"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	"$QPOOL" backup --passphrase-file "$D/pass" --yes "$MNT/qpool.bak" vm >&2
	t1=$(now)
	QBS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	QPOOL_ROOT=$MNT/root2 "$QPOOL" pool add bench file-reflink -o dir_path="$MNT/pool2" >/dev/null
	QPOOL_ROOT=$MNT/root2 "$QPOOL" restore --passphrase-file "$D/pass" --pool bench "$MNT/qpool.bak" >&2
	sync
	t1=$(now)
	QRS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
	echo "bench: qpool run $run: backup ${QBS[-1]} s, restore ${QRS[-1]} s" >&2
done
QB=$(median "${QBS[@]}")
QR=$(median "${QRS[@]}")
QPOOL_ROOT=$MNT/root2 "$QPOOL" volume export vm:root - | cmp - "$D/fs.img" || die "restored root differs"
QPOOL_ROOT=$MNT/root2 "$QPOOL" volume export vm:private - | cmp - "$D/random.img" ||
	die "restored private differs"
QSIZE=$(stat -c %s "$MNT/qpool.bak")

# ---- reference pipeline -------------------------------------------------------
R=$MNT/ref
mkdir -p "$R/out/vm1" "$R/restore"
ref_file() { # ref_file NAME: tar --sparse | gzip | split 100M | scrypt enc
	tar -Pc --sparse -C "$D" --xform="s:^$1:vm1/\\0:" "$1" | gzip |
		split -a 3 -d -b 100M --filter="scrypt enc --logN 20 -r 8 -p 1 --passphrase file:$D/pass - $R/out/vm1/$1.\$FILE.enc" - ''
}
sync
echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
ref_file fs.img
ref_file random.img
sync
t1=$(now)
RB=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
sync
echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
for v in fs.img random.img; do
	find "$R/out/vm1" -name "$v.*.enc" | sort -V | while read -r f; do
		scrypt dec -f --passphrase "file:$D/pass" "$f" || exit 1
	done | gzip -d | tar -x -C "$R/restore"
done
sync
t1=$(now)
RR=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
cmp "$R/restore/vm1/random.img" "$D/random.img" || die "reference restore differs"
RSIZE=$(du -cb "$R/out/vm1" | tail -n 1 | cut -f1)

printf '\nvolumes: %d MiB random + %d MiB ext4 image (files and written zeros); scrypt N=2^20 r=8 p=1; %s CPUs\n' \
	"$RAND_MIB" "$FS_MIB" "$(nproc)"
printf '%-10s %-28s %9s %10s %12s\n' step pipeline seconds MB/s "archive MiB"
printf '%-10s %-28s %9.1f %10s %12.1f\n' backup "reference (tar|gzip|scrypt)" "$RB" "$(rate "$TOTAL" "$RB")" "$(echo "$RSIZE" | awk '{ print $1 / 1048576 }')"
printf '%-10s %-28s %9.1f %10s %12.1f\n' backup "qpool" "$QB" "$(rate "$TOTAL" "$QB")" "$(echo "$QSIZE" | awk '{ print $1 / 1048576 }')"
printf '%-10s %-28s %9.1f %10s\n' restore "reference (scrypt|gzip|tar)" "$RR" "$(rate "$TOTAL" "$RR")"
printf '%-10s %-28s %9.1f %10s\n' restore "qpool" "$QR" "$(rate "$TOTAL" "$QR")"
printf 'qpool: median of %d runs (backup %s s; restore %s s)\n' "$RUNS" "${QBS[*]}" "${QRS[*]}"
printf 'ratio qpool/reference: backup %.1fx, restore %.1fx\n' \
	"$(awk -v a="$RB" -v b="$QB" 'BEGIN { print a / b }')" "$(awk -v a="$RR" -v b="$QR" 'BEGIN { print a / b }')"
