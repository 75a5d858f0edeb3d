#!/bin/sh
# Guest script: checks the test VM itself.  qpool runs, LVM builds a thin
# pool with a thin volume and a thin snapshot on /dev/vda, and, when the VM
# has a second disk, the host removes it at run time (`vm_unplug`).
. /tests/vm/vmlib.sh

D=$(vm_disk_dev 0)
VG=smokevg

vm_step vm/smoke/qpool-version "$QPOOL" --version
vm_step vm/smoke/pvcreate pvcreate -y "$D"
vm_step vm/smoke/vgcreate vgcreate "$VG" "$D"
vm_step vm/smoke/thin-pool lvcreate -T -L 256M "$VG/pool"
vm_step vm/smoke/thin-lv lvcreate -V 1G -T "$VG/pool" -n vol
vm_step vm/smoke/write sh -c "echo smoke | dd of=/dev/$VG/vol conv=fsync"
vm_step vm/smoke/snapshot lvcreate -s "$VG/vol" -n snap
vm_step vm/smoke/activate-snapshot lvchange -ay -K "$VG/snap"
vm_step vm/smoke/snapshot-content sh -c "head -c 6 /dev/$VG/snap | grep -q smoke"
vm_step vm/smoke/discard blkdiscard "/dev/$VG/snap"
vm_step vm/smoke/lvs sh -c "lvs --noheadings -o lv_name $VG | grep -q snap"
vm_step vm/smoke/remove sh -c "lvremove -y $VG/snap $VG/vol $VG/pool && vgremove -y $VG && pvremove -y $D"

if [ "${QP_VM_NDISKS:-1}" -ge 2 ]; then
	D1=$(vm_disk_dev 1)
	if [ -b "$D1" ] && vm_unplug 1 30; then
		vm_pass vm/smoke/unplug
	else
		vm_fail vm/smoke/unplug "$D1 still present 30 s after device_del disk1"
	fi
fi
vm_status
