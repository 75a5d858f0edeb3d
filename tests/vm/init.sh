#!/bin/sh
# /init of qpool's device-mapper test VM (busybox sh, PID 1).
#
# Mounts the kernel filesystems, loads the modules listed in /modules.list,
# waits for the virtio disks, then runs each guest script named in
# /vm/run.list (copied to /vm/run/ by tests/vm/run.sh) with `sh`, its output
# and errors on the serial console, framed by
#	### VM-SCRIPT-BEGIN NAME
#	### VM-SCRIPT-END NAME rc=N
# and ends with `### VM-DONE rc=N uptime=S` and a power-off.  rc is 0 when
# every script exited 0.  The host side (tests/vm/run.sh) parses these lines.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export DM_DISABLE_UDEV=1 LVM_SUPPRESS_FD_WARNINGS=1
export QPOOL=/bin/qpool TEST_TMP=/tmp HOME=/root QP_TOP=/ QP_IN_VM=1
export TMPDIR=/tmp LANG=C LC_ALL=C

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/lock/lvm /run/lvm /run/cryptsetup
hostname qpool-vm
exec </dev/null

uptime_s() {
	cut -d' ' -f1 /proc/uptime
}

echo "### VM-INIT uptime=$(uptime_s)"

for m in $(cat /modules.list); do
	out=$(insmod "$m" 2>&1) || case $out in
	*"File exists"* | *"No such device"*) ;;
	*) echo "# init: insmod ${m##*/}: $out" ;;
	esac
done

# Settings the host passed (QP_VM_NDISKS...).
[ -f /vm/env ] && . /vm/env
export QP_VM_NDISKS=${QP_VM_NDISKS:-0}

# Waits up to 30 s for /dev/vda, /dev/vdb... to appear.
letters="a b c d e f g h i j k l m n o p"
QP_VM_DISKS=
n=0
for l in $letters; do
	[ "$n" -lt "$QP_VM_NDISKS" ] || break
	QP_VM_DISKS="$QP_VM_DISKS /dev/vd$l"
	n=$((n + 1))
done
export QP_VM_DISKS
i=0
for d in $QP_VM_DISKS; do
	while [ ! -b "$d" ] && [ "$i" -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -b "$d" ] || echo "# init: disk $d did not appear"
done

echo "### VM-READY uptime=$(uptime_s) disks=${QP_VM_DISKS# }"

all=0
for s in $(cat /vm/run.list 2>/dev/null); do
	name=${s#*-}
	echo "### VM-SCRIPT-BEGIN $name uptime=$(uptime_s)"
	(cd /tmp && exec sh "/vm/run/$s") 2>&1
	rc=$?
	echo "### VM-SCRIPT-END $name rc=$rc uptime=$(uptime_s)"
	[ "$rc" = 0 ] || all=1
done

sync
echo "### VM-DONE rc=$all uptime=$(uptime_s)"
poweroff -f
# Not reached; if it were, PID 1 exiting makes the kernel panic and, with
# panic=-1 and -no-reboot, qemu exit.
sleep 5
