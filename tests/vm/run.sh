#!/bin/sh
# Boots qpool's device-mapper test VM once and runs guest scripts in it.
#
# Usage: tests/vm/run.sh [OPTION]... GUEST_SCRIPT...
#   --disk SIZE      add a sparse raw virtio disk (repeatable; the first is
#                    /dev/vda, qemu id disk0; default: one 4G disk)
#   --monitor SOCK   also serve a qemu monitor on the unix socket SOCK
#   --timeout S      seconds before the VM is killed (default 900)
#   --smp N          virtual CPUs (default 1)
#   --mem MB         guest memory (default 1536)
#   --log FILE       keep the whole serial console log in FILE
#   --env VAR=VALUE  export VAR to the guest scripts (repeatable), e.g.
#                    --env CONF_ONLY=resize
#   -v, --verbose    also show the kernel's boot messages
#
# The VM boots the host's Debian kernel under qemu TCG with the initramfs of
# tests/vm/build-initramfs.sh; its /init (tests/vm/init.sh) runs each
# GUEST_SCRIPT in order with busybox `sh` and powers off.  Guest scripts get
# QPOOL=/bin/qpool, TEST_TMP=/tmp, QP_VM_DISKS="/dev/vda ...",
# QP_VM_NDISKS, DM_DISABLE_UDEV=1 and the tree's tests under /tests.
#
# The guest's output is shown as it comes.  A guest line
# `### HOST: CMD` sends CMD to the qemu monitor (e.g. `device_del disk1`).
# Exits 1 when a guest printed a `FAIL: ` line, a guest script exited
# non-zero (reported as `FAIL: vm/NAME (exit status N)`), or the VM never
# printed `### VM-DONE` (crash or timeout: `FAIL: vm/boot ...`).
#
# Environment: QPOOL (binary under test), QP_VM_ACCEL (tcg), and those of
# build-initramfs.sh.
set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/tests/vm/common.sh"

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
	exit 2
}

disks=
monitor=
timeout_s=900
smp=1
mem=1536
log=
verbose=0
envs=
while [ $# -gt 0 ]; do
	case $1 in
	--disk) [ $# -ge 2 ] || usage; disks="$disks $2"; shift 2 ;;
	--monitor) [ $# -ge 2 ] || usage; monitor=$2; shift 2 ;;
	--timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
	--smp) [ $# -ge 2 ] || usage; smp=$2; shift 2 ;;
	--mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
	--log) [ $# -ge 2 ] || usage; log=$2; shift 2 ;;
	--env)
		[ $# -ge 2 ] || usage
		case $2 in
		[A-Za-z_]*=*) ;;
		*) usage ;;
		esac
		# export VAR='VALUE', with ' written as '\''
		envs="$envs$(printf '%s\n' "${2#*=}" | sed "s/'/'\\\\''/g; 1s/^/export ${2%%=*}='/; \$s/\$/'/")
"
		shift 2
		;;
	-v | --verbose) verbose=1; shift ;;
	-h | --help) usage ;;
	--) shift; break ;;
	-*) usage ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage
[ -n "$disks" ] || disks=4G
for s in "$@"; do
	[ -f "$s" ] || {
		echo "run.sh: no guest script '$s'" >&2
		exit 2
	}
done

why=$(vm_missing)
if [ -n "$why" ]; then
	echo "run.sh: cannot run the VM: $why" >&2
	exit 77
fi
KV=$(vm_kver)

T=$(mktemp -d "${TMPDIR:-/tmp}/qpool-vm.XXXXXX") || exit 1
catpid=
cleanup() {
	[ -z "$catpid" ] || kill "$catpid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s)

# ---- initramfs: the common image plus this run's scripts -------------------

if ! "$TOP/tests/vm/build-initramfs.sh" "$T/initrd" >"$T/build.log" 2>&1; then
	cat "$T/build.log"
	echo "FAIL: vm/build-initramfs"
	exit 1
fi
mkdir -p "$T/run/vm/run"
i=0
ndisks=0
for d in $disks; do
	ndisks=$((ndisks + 1))
done
for s in "$@"; do
	i=$((i + 1))
	n=$(printf '%02d-%s' "$i" "$(basename "$s")")
	cp "$s" "$T/run/vm/run/$n"
	echo "$n" >>"$T/run/vm/run.list"
done
{
	echo "QP_VM_NDISKS=$ndisks"
	# where the disk images are, for a guest that asks the host to plug one back
	echo "QP_VM_HOST_DIR=$T"
	printf '%s' "$envs"
} >"$T/run/vm/env"
(cd "$T/run" && find . | cpio -o -H newc --quiet | gzip -1) >>"$T/initrd" || exit 1
t1=$(date +%s)

# ---- disks, monitor, qemu --------------------------------------------------

set --
i=0
for d in $disks; do
	truncate -s "$d" "$T/disk$i.img" || exit 1
	set -- "$@" -drive "file=$T/disk$i.img,if=none,id=drive$i,format=raw,cache=unsafe" \
		-device "virtio-blk-pci,drive=drive$i,id=disk$i"
	i=$((i + 1))
done
[ -z "$monitor" ] || set -- "$@" -monitor "unix:$monitor,server=on,wait=off"

# The host's own monitor, for `### HOST:` requests: a pair of FIFOs.  qemu
# opens both read-write, so neither open blocks; fd 8 writes requests.
mkfifo "$T/mon.in" "$T/mon.out" || exit 1
cat "$T/mon.out" >"$T/monitor.log" 2>/dev/null &
catpid=$!
exec 8<>"$T/mon.in"

case ${QP_VM_ACCEL:-tcg} in
kvm) accel="-enable-kvm -cpu host" ;;
*) accel="-accel tcg" ;;
esac

CR=$(printf '\r')
# shellcheck disable=SC2086 # $accel is two words
{
	timeout -k 10 "$timeout_s" qemu-system-x86_64 $accel -machine pc -m "$mem" -smp "$smp" \
		-nodefaults -display none -no-reboot -serial stdio \
		-kernel "/boot/vmlinuz-$KV" -initrd "$T/initrd" \
		-append "console=ttyS0 quiet loglevel=3 panic=-1" \
		-chardev "pipe,id=hostmon,path=$T/mon" -mon chardev=hostmon,mode=readline \
		"$@" </dev/null 2>&1
	echo $? >"$T/qemu.rc"
} | {
	shown=$verbose
	while IFS= read -r l || [ -n "$l" ]; do
		l=${l%"$CR"}
		printf '%s\n' "$l" >>"$T/console.log"
		case $l in
		"### VM-INIT"*) shown=1 ;;
		"### HOST: "*)
			printf '%s\n' "${l#\#\#\# HOST: }" >&8
			echo "### host: sent '${l#\#\#\# HOST: }' to the monitor" >>"$T/console.log"
			;;
		esac
		[ "$shown" = 0 ] || printf '%s\n' "$l"
	done
}
exec 8>&-
t2=$(date +%s)
qrc=$(cat "$T/qemu.rc" 2>/dev/null || echo '?')
# The monitor's answers end the log (cat ends when qemu closed the FIFO).
i=0
while kill -0 "$catpid" 2>/dev/null && [ "$i" -lt 10 ]; do
	sleep 0.1 2>/dev/null || sleep 1
	i=$((i + 1))
done
kill "$catpid" 2>/dev/null
catpid=
if [ -s "$T/monitor.log" ]; then
	echo "### host monitor:"
	# readline mode redraws each typed key: keep the last drawing.
	tr -d '\r' <"$T/monitor.log" | sed 's/.*\x1b\[D//; s/\x1b\[K//g; s/^/# /'
fi >>"$T/console.log"
[ -z "$log" ] || cp "$T/console.log" "$log"

# ---- verdict ---------------------------------------------------------------

bad=0
if ! grep -q '^### VM-DONE ' "$T/console.log" 2>/dev/null; then
	bad=1
	# The guest's own lines were shown live; else show how the boot ended.
	if ! grep -q '^### VM-INIT' "$T/console.log" 2>/dev/null; then
		echo "# vm: last lines of the console:"
		tail -n 40 "$T/console.log" 2>/dev/null | sed 's/^/#   /'
	fi
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		echo "FAIL: vm/boot (no VM-DONE: timed out after $timeout_s s)"
	else
		echo "FAIL: vm/boot (no VM-DONE: qemu exited $qrc)"
	fi
fi
# A script that exited non-zero without printing a FAIL line of its own.
awk '
	/^### VM-SCRIPT-BEGIN / { name = $3; nf = 0; next }
	/^FAIL: / { nf++; any = 1 }
	/^### VM-SCRIPT-END / {
		rc = $4; sub(/^rc=/, "", rc)
		if (rc != 0 && nf == 0)
			printf "FAIL: vm/%s (exit status %s)\n", $3, rc
		if (rc != 0) any = 1
	}
	END { exit any }' "$T/console.log" || bad=1

up=$(sed -n 's/^### VM-DONE .*uptime=\([0-9.]*\).*/\1/p' "$T/console.log")
echo "# vm: $((t2 - t0)) s wall ($((t1 - t0)) s initramfs, $((t2 - t1)) s qemu," \
	"guest uptime ${up:-?} s), kernel $KV"
exit "$bad"
