#!/bin/sh
# The device-mapper test VM (tests/vm/run.sh): boots Debian's kernel under
# qemu TCG and runs the smoke test (LVM thin pool, thin snapshot, disk
# hot-unplug), the driver-conformance suite against an lvm_thin pool, and
# the lvm_thin extras (full thin pool, two volume groups, crash cleanup,
# failed start), ephemeral volatile volumes, and pools on external drives
# (file-reflink and lvm_thin on LUKS2, unplugged and plugged back).
# Skips when not root, when qemu/the kernel/lvm2 are missing, or when
# QP_VM_SKIP=1.  An ASan/UBSan build of qpool is skipped too (the plain
# build runs the VM tier; QP_VM_ASAN=1 runs it anyway).
. "$(dirname "$0")/../lib.sh"
. "$QP_TOP/tests/vm/common.sh"

[ "${QP_VM_SKIP:-0}" != 1 ] || skip "QP_VM_SKIP=1"
qp_require_root
why=$(vm_missing)
[ -z "$why" ] || skip "$why"
if [ "${QP_VM_ASAN:-0}" != 1 ] && grep -aq -e __asan_init -e __ubsan_handle "$QPOOL"; then
	skip "qpool is a sanitizer build (the VM tier runs on the plain build; QP_VM_ASAN=1 forces it)"
fi

# The whole suite takes about 7 minutes under TCG on an idle host (every
# lvm and qpool command costs 0.1-0.4 s there); QP_VM_CONF_ONLY="resize
# revisions..." runs a subset.  The timeout stays below tests/run.sh's.
# Disks: vda for the conformance pool, vdb for the unplug test, vdc for
# lvm-extra.sh, vdd for external.sh (LUKS drive unplugged and plugged back),
# vde and vdf for external-lvm.sh (LUKS + LVM drive, and a second volume group
# of the same name).
set -- --disk 4G --disk 64M --disk 2G --disk 256M --disk 256M --disk 64M \
	--env LVM_EXTRA_DISK=/dev/vdc --env EXTERNAL_DISK_N=3 --env EXTERNAL_LVM_DISK_N=4 \
	--env EXTERNAL_LVM_OTHER=/dev/vdf --timeout "${QP_VM_TIMEOUT:-1700}"
[ -z "${QP_VM_CONF_ONLY:-}" ] || set -- "$@" --env "CONF_ONLY=$QP_VM_CONF_ONLY"
"$QP_TOP/tests/vm/run.sh" "$@" \
	"$QP_TOP/tests/vm/guest/smoke.sh" "$QP_TOP/tests/vm/guest/conformance-lvm.sh" \
	"$QP_TOP/tests/vm/guest/lvm-extra.sh" "$QP_TOP/tests/vm/guest/ephemeral.sh" \
	"$QP_TOP/tests/vm/guest/external.sh" "$QP_TOP/tests/vm/guest/external-lvm.sh"
