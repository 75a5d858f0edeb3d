#!/bin/sh
# The driver-conformance suite (conformance.sh) against a file-reflink pool on
# a loop-mounted ext4: no reflinks, the driver falls back to sparse copies (setup_check=False).
. "$(dirname "$0")/../lib.sh"

qp_require_root
mnt=$(qp_mkfs_loop ext4 512) || skip

QPOOL_ROOT=$TEST_TMP/root
mkdir -p "$QPOOL_ROOT" || exit 1
CONF_POOL=conf
CONF_DRIVER=file-reflink
CONF_POOL_OPTS="dir_path=$mnt/pool,setup_check=False"
CONF_LABEL=file-reflink-ext4
export QPOOL_ROOT CONF_POOL CONF_DRIVER CONF_POOL_OPTS CONF_LABEL

. "$QP_TOP/tests/integration/conformance.sh"
