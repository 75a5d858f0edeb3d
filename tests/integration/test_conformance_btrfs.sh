#!/bin/sh
# The driver-conformance suite (conformance.sh) against a file-reflink pool on
# a loop-mounted btrfs: reflinks.
. "$(dirname "$0")/../lib.sh"

qp_require_root
mnt=$(qp_mkfs_loop btrfs 1024) || skip

QPOOL_ROOT=$TEST_TMP/root
mkdir -p "$QPOOL_ROOT" || exit 1
CONF_POOL=conf
CONF_DRIVER=file-reflink
CONF_POOL_OPTS="dir_path=$mnt/pool"
CONF_LABEL=file-reflink-btrfs
export QPOOL_ROOT CONF_POOL CONF_DRIVER CONF_POOL_OPTS CONF_LABEL

. "$QP_TOP/tests/integration/conformance.sh"
