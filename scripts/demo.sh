#!/usr/bin/env bash
# qpool demo: a template, an AppVM based on it and a disposable VM, on a
# scratch pool.  Nothing outside a temporary folder is touched: the state
# folder is given with --root and the pool lives on a 1 GiB loop-mounted btrfs
# image (or, without root or mkfs.btrfs, in a plain temporary folder).
#
# Usage: scripts/demo.sh
#	QPOOL=path/to/qpool	use another binary
#	DEMO_NO_LOOP=1		use a plain folder even when a btrfs image could be made
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
QPOOL=${QPOOL:-$TOP/qpool}
if [ ! -x "$QPOOL" ]; then
	echo "demo: $QPOOL is missing: run 'make' first" >&2
	exit 1
fi

if [ -t 1 ]; then
	B=$'\e[1m' D=$'\e[2m' N=$'\e[0m'
else
	B='' D='' N=''
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qpool-demo.XXXXXX")
ROOT=$WORK/state
MNT=
IMG=
PATH_root=
PATH_private=

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ -d "$ROOT" ]; then
		# Leave no VM started, whatever step failed.
		for vm in demo-disp demo-work demo-dvm demo-tpl; do
			"$QPOOL" --root "$ROOT" vm stop --force "$vm" >/dev/null 2>&1
		done
	fi
	if [ -n "$MNT" ] && mountpoint -q "$MNT"; then
		umount "$MNT" || umount -l "$MNT"
	fi
	if [ -n "$IMG" ]; then
		losetup -j "$IMG" -O NAME --noheadings 2>/dev/null | xargs -r -n1 losetup -d
	fi
	rm -rf "$WORK"
	if [ "$rc" != 0 ]; then
		echo "${B}demo: failed (status $rc); everything was cleaned up${N}" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() {
	printf '\n%s==> %s%s\n' "$B" "$1" "$N"
	shift
	for line in "$@"; do
		printf '    %s\n' "$line"
	done
}

# Shows and runs one qpool command (always on the scratch state folder).
qp() {
	printf '%s$ qpool %s%s\n' "$D" "$*" "$N"
	"$QPOOL" --root "$ROOT" "$@"
}

# Starts a VM, shows what qpool prints and remembers the paths, one variable
# per volume: PATH_root, PATH_private...
start_vm() {
	local out vol path mode
	unset PATH_root PATH_private PATH_volatile PATH_kernel
	printf '%s$ qpool vm start %s%s\n' "$D" "$1" "$N"
	out=$("$QPOOL" --root "$ROOT" vm start "$1")
	printf '%s\n' "$out" | sed 's/^/    /'
	while read -r vol path mode; do
		[ -n "$vol" ] || continue
		: "$mode"
		printf -v "PATH_$vol" '%s' "$path"
	done <<<"$out"
}

# write_at FILE MIB TEXT: writes TEXT at MIB MiB into an image, as a VM would.
write_at() {
	printf '%s' "$3" | dd of="$1" bs=1M seek="$2" conv=notrunc,fsync status=none
	printf '    wrote "%s" at %s MiB of %s\n' "$3" "$2" "${1#"$WORK"/}"
}

# read_at FILE MIB: prints the text found at MIB MiB ("(zeros)" when empty).
read_at() {
	local s
	s=$(dd if="$1" bs=1M skip="$2" count=1 status=none | head -c 64 | tr -d '\0')
	printf '%s\n' "${s:-(zeros)}"
}

show_at() {
	printf '    %s at %s MiB: %s%s%s\n' "$3" "$2" "$B" "$(read_at "$1" "$2")" "$N"
}

echo "${B}qpool demo${N}"
echo "Scratch folder: $WORK (removed at the end)."
echo "Every command below runs as 'qpool --root $ROOT ...', so the real"
echo "state folder ($(printf '%s' "${QPOOL_ROOT:-/var/lib/qpool}")) is never touched."

if [ "${DEMO_NO_LOOP:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v mkfs.btrfs >/dev/null 2>&1 && truncate -s 1G "$WORK/btrfs.img" &&
	mkfs.btrfs -q -f "$WORK/btrfs.img" >/dev/null 2>&1 && mkdir -p "$WORK/mnt" &&
	mount -o loop "$WORK/btrfs.img" "$WORK/mnt"; then
	IMG=$WORK/btrfs.img
	MNT=$WORK/mnt
	step "Scratch filesystem: a 1 GiB btrfs image, loop-mounted on ${MNT#"$WORK"/}." \
		"btrfs has reflinks, so starting and committing volumes is a metadata copy."
	POOL_DIR=$MNT/demo-pool
	POOL_OPTS=(-o "dir_path=$POOL_DIR")
else
	rm -f "$WORK/btrfs.img"
	if [ "${DEMO_NO_LOOP:-0}" = 1 ]; then
		why="DEMO_NO_LOOP=1"
	elif [ "$(id -u)" != 0 ]; then
		why="loop mounts need root"
	elif ! command -v mkfs.btrfs >/dev/null 2>&1; then
		why="mkfs.btrfs is not installed"
	else
		why="the btrfs image could not be made or mounted"
	fi
	step "Scratch filesystem: a plain temporary folder ($why)." \
		"Without reflinks qpool copies whole images, so the pool is added with setup_check=False."
	POOL_DIR=$WORK/demo-pool
	POOL_OPTS=(-o "dir_path=$POOL_DIR" -o setup_check=False)
fi

step "Add a pool." \
	"A file-reflink pool keeps each volume as image files in a folder;" \
	"qpool records it in $ROOT/qubes.xml."
qp pool add demo file-reflink "${POOL_OPTS[@]}"
qp pool list

step "Create the TemplateVM demo-tpl in that pool." \
	"A template owns its root (the system) and private volumes; both are saved on stop."
qp vm create --class TemplateVM -P demo demo-tpl

step "Start the template and install something into its root." \
	"'vm start' prints the file to attach for each volume; we write into the root image directly."
start_vm demo-tpl
write_at "$PATH_root" 1 "template software v1"

step "Stop the template: its root is committed, the old content kept as a revision."
qp vm stop demo-tpl

step "Create the AppVM demo-work from the template, and a disposable setup." \
	"An AppVM's root is a fresh snapshot of the template's root at each start; its private is its own." \
	"demo-dvm is an AppVM used as the template of the DispVM demo-disp, whose root and" \
	"private are both snapshots, thrown away at each stop."
qp vm create --class AppVM --template demo-tpl -P demo demo-work
qp vm create --class AppVM --template demo-tpl -P demo demo-dvm
qp vm create --class DispVM --template demo-dvm -P demo demo-disp
qp vm list

step "Start demo-work: its root shows what the template committed."
start_vm demo-work
WORK_ROOT=$PATH_root
show_at "$WORK_ROOT" 1 "demo-work root"

step "Update the template while demo-work runs." \
	"The running AppVM keeps the snapshot it started with."
start_vm demo-tpl
write_at "$PATH_root" 1 "template software v2"
qp vm stop demo-tpl
show_at "$WORK_ROOT" 1 "demo-work root (still running)"

step "qpool sees that demo-work's root is older than the template's."
qp volume info demo-work:root is_outdated

step "Restart demo-work: it now starts from the updated template."
qp vm stop demo-work
start_vm demo-work
show_at "$PATH_root" 1 "demo-work root"
qp volume info demo-work:root is_outdated
qp vm stop demo-work

step "Prepare the disposable template: settings in demo-dvm's private volume."
start_vm demo-dvm
write_at "$PATH_private" 1 "dvm settings"
qp vm stop demo-dvm

step "Start the DispVM and write into its private volume." \
	"It starts from demo-dvm's private, settings included."
start_vm demo-disp
show_at "$PATH_private" 1 "demo-disp private"
write_at "$PATH_private" 2 "scratch work"
show_at "$PATH_private" 2 "demo-disp private"

step "Stop it and start it again: the scratch work is gone, the settings are back."
qp vm stop demo-disp
start_vm demo-disp
show_at "$PATH_private" 1 "demo-disp private"
show_at "$PATH_private" 2 "demo-disp private"
qp vm stop demo-disp

step "What qpool knows: pools, volumes, VMs."
qp pool list
qp pool info demo
qp volume list
qp vm list

step "Revisions of the template's root." \
	"Each commit kept the content it replaced as a revision; the pool keeps the newest" \
	"revisions_to_keep of them (1 here), and 'qpool volume revert' brings one back."
qp volume info demo-tpl:root
qp volume info demo-tpl:root revisions

step "Remove the VMs (DispVM and AppVMs first: a template in use cannot go) and the pool."
qp vm remove demo-disp
qp vm remove demo-dvm
qp vm remove demo-work
qp vm remove demo-tpl
qp pool remove demo
qp pool list

printf '\n%sDemo finished.%s The scratch folder and its image are removed now.\n' "$B" "$N"
