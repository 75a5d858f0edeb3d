/* The lvm_thin pool driver: volumes are thin LVs in one LVM thin pool, and
 * running copies and revisions are thin snapshots, so starting a VM and
 * keeping revisions copy no data.
 *
 * Pool options: volume_group, thin_pool (required), revisions_to_keep,
 * ephemeral_volatile.  A volume's vid is <vg>/vm-<vm>-<volume>; its LVs:
 *   vm-<vm>-<volume>              committed content (or the volatile volume)
 *   vm-<vm>-<volume>-snap         running copy given to the VM
 *   vm-<vm>-<volume>-import       import staging
 *   vm-<vm>-<volume>-<N>-back     revision N (N: seconds since the epoch at
 *                                 the commit that made it, made unique)
 * The current content is the base LV, or the newest revision when a crash
 * interrupted a commit between its two renames.
 *
 * LVM is run as `lvm SUBCOMMAND ...` with an argv array; its report is read
 * once per operation and kept up to date with the driver's own changes.
 * Block devices are /dev/mapper/<vg>-<lv>, with every '-' of the VG and LV
 * names doubled, as device-mapper names are made.
 */
#ifndef QPOOL_DRIVERS_LVMTHIN_H
#define QPOOL_DRIVERS_LVMTHIN_H

#include "qpool.h"

#include <stdbool.h>

struct lvmthin_report;

struct lvmthin_pool {
	struct qp_pool base;
	char *vg;
	char *thin_pool;
	struct lvmthin_report *rep; /* cached report of vg, NULL when not read */
	bool uuid_ok;		    /* the group's UUID was found to be vg_uuid */
	bool opened_here;	    /* pool_setup unlocked the drive */
};

extern const struct qp_driver qp_driver_lvmthin;

#endif
