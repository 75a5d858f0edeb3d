/* The linux-kernel pool driver: read-only kernel volumes.
 *
 * A pool is a folder (option dir_path, by default QP_KERNEL_DEFAULT_DIR)
 * holding one folder per installed kernel version:
 *   <dir_path>/<version>/vmlinuz       the kernel (required to start)
 *   <dir_path>/<version>/initramfs     its initramfs
 *   <dir_path>/<version>/modules.img   its modules, attached read-only
 * A volume's vid is its VM's kernel version.  The pool never writes: the
 * volumes are created, removed, started and stopped without touching disk,
 * and their content can be neither replaced nor resized.
 *
 * A kernel without modules.img (and a volume whose vid is empty, a VM with
 * no kernel) starts with nothing to attach: vol_block_device returns
 * -ENODATA, which qp_vm_start reads as "no line for this volume".
 */
#ifndef QPOOL_DRIVERS_KERNEL_H
#define QPOOL_DRIVERS_KERNEL_H

#include "qpool.h"

#define QP_KERNEL_DEFAULT_DIR "/var/lib/qubes/vm-kernels"

struct kernel_pool {
	struct qp_pool base;
	char *dir_path;		/* absolute, without a trailing '/' */
};

extern const struct qp_driver qp_driver_kernel;

/* 0 when @version can name a folder of the pool (not empty, no '/', not
 * "." or "..", no ".." anywhere), else -EINVAL. */
int kernel_version_valid(const char *version);

#endif
