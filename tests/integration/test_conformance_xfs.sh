#!/bin/sh
# The driver-conformance suite (conformance.sh) against a file-reflink pool on
# a loop-mounted xfs (reflink=1 is mkfs.xfs' default): reflinks.
. "$(dirname "$0")/../lib.sh"

qp_require_root
mnt=$(qp_mkfs_loop xfs 1024) || skip

QPOOL_ROOT=$TEST_TMP/root
mkdir -p "$QPOOL_ROOT" || exit 1
CONF_POOL=conf
CONF_DRIVER=file-reflink
CONF_POOL_OPTS="dir_path=$mnt/pool"
CONF_LABEL=file-reflink-xfs
export QPOOL_ROOT CONF_POOL CONF_DRIVER CONF_POOL_OPTS CONF_LABEL

. "$QP_TOP/tests/integration/conformance.sh"
