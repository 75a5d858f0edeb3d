#!/bin/sh
# Guest script: the driver-conformance suite (tests/integration/conformance.sh)
# against an lvm_thin pool: VG `qvg` on /dev/vda with the thin pool
# `qvg/qpool` (2 GiB).  The stray check fails on LVs left by an interrupted
# operation (names ending in -snap or -import, or matching QP_VM_STRAY_RE).
# Prints one SKIP line when qpool has no lvm_thin driver.
. /tests/vm/vmlib.sh

if ! "$QPOOL" pool drivers 2>/dev/null | awk '$1 == "lvm_thin" { f = 1 } END { exit !f }'; then
	vm_skip conformance/lvm_thin "lvm conformance driver not built"
	exit 0
fi

D=$(vm_disk_dev 0)
vm_step conformance/lvm_thin/setup sh -c "pvcreate -y $D && vgcreate qvg $D &&
	lvcreate -T -L 2G qvg/qpool" || exit 1

QPOOL_ROOT=$TEST_TMP/qpool-root
mkdir -p "$QPOOL_ROOT" || exit 1
CONF_POOL=lvm
CONF_DRIVER=lvm_thin
CONF_POOL_OPTS=volume_group=qvg,thin_pool=qpool
CONF_LABEL=lvm_thin
QP_VM_STRAY_RE=${QP_VM_STRAY_RE:--(snap|import)$}
# shellcheck disable=SC2016,SC2089,SC2090 # conformance.sh evals it
CONF_CHECK_STRAY='vm_s=$(lvs --noheadings -o lv_name qvg | awk -v re="$QP_VM_STRAY_RE" "\$1 ~ re");
	[ -z "$vm_s" ] || { echo "stray LVs in qvg:" $vm_s >&2; false; }'
# shellcheck disable=SC2090
export QPOOL_ROOT CONF_POOL CONF_DRIVER CONF_POOL_OPTS CONF_LABEL CONF_CHECK_STRAY QP_VM_STRAY_RE

sh /tests/conformance.sh
rc=$?
echo "# lvs after the suite:"
lvs -a qvg 2>&1 | sed 's/^/#   /'
exit $rc
