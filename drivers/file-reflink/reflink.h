/* The file-reflink pool driver: volumes are image files in a folder, copied
 * with reflinks (FICLONE) where the file system shares extents, so starting a
 * VM and keeping revisions cost no data copies on btrfs or xfs.
 *
 * Layout under dir_path/<vid>, vid = appvms/<vm>/<vol> or vm-templates/<vm>/<vol>:
 *   <vol>.img                      committed (clean) image
 *   <vol>-dirty.img                running copy given to the VM
 *   <vol>-precache.img             reflink of the clean image with its mtime, so a start is a rename
 *   <vol>-import.img               import staging
 *   <vol>.img.<N>@<UTC time>Z      revision N, named after the clean image's mtime
 *   <any of these>~<8 hex>         temporary file, renamed into place atomically
 */
#ifndef QPOOL_DRIVERS_REFLINK_H
#define QPOOL_DRIVERS_REFLINK_H

#include "qpool.h"

#include <stdbool.h>

struct reflink_pool {
	struct qp_pool base;
	char *dir_path;		/* absolute, without a trailing '/' */
	char *mount_point;	/* where the drive is mounted (option device), or NULL */
	bool mounted_here;	/* pool_setup mounted it (undone when the add fails) */
};

extern const struct qp_driver qp_driver_reflink;

#endif
