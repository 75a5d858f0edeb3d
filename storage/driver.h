/* The pool driver interface.  Included by qpool.h; do not include alone.
 *
 * A driver is a const table of callbacks found by name in qp_drivers[].  Its
 * pool state embeds struct qp_pool first and is pool_size bytes long; the core
 * allocates it zeroed, fills the base and calls pool_init.
 *
 * Every callback returns 0 or a negative errno with @err set.  Volume
 * callbacks receive the volume with v->pool set to this driver's pool and,
 * for snap_on_start volumes, v->src set to the resolved source volume (in the
 * same pool).  Callbacks marked OPTIONAL may be NULL.
 */
#ifndef QPOOL_STORAGE_DRIVER_H
#define QPOOL_STORAGE_DRIVER_H

struct qp_driver {
	const char *name;
	/* Option names in the order `qvm-pool drivers` prints them. */
	const char *const *params;
	/* Options that must be given to `qvm-pool add`. */
	const char *const *required;
	size_t pool_size;
	/* Volumes whose content the pool manages (linux-kernel): the core
	 * refuses resize, import, clone, revert, clear and making them
	 * writable, and lets their content be exported although they are
	 * neither saved on stop nor snapshots.  Their vol_stop and vol_remove
	 * must touch nothing: an offline pool of this kind does not hold up
	 * stopping or removing a VM. */
	bool read_only;

	/* Parses p->config into the driver's fields.  Touches no disk. */
	int (*pool_init)(struct qp_pool *p, struct qp_err *err);
	/* OPTIONAL: frees what pool_init allocated (not the struct itself). */
	void (*pool_release)(struct qp_pool *p);
	/* Called once by `qvm-pool add`: checks and creates what the pool needs.
	 * Options that are only for setup (setup_check) are removed from
	 * p->config by the driver so they are not saved. */
	int (*pool_setup)(struct qp_pool *p, struct qp_err *err);
	/* OPTIONAL: online, offline or locked.  NULL means always online. */
	int (*pool_state)(struct qp_pool *p, enum qp_pool_state *out, struct qp_err *err);
	int (*pool_usage)(struct qp_pool *p, uint64_t *size, uint64_t *usage, struct qp_err *err);
	/* OPTIONAL: extra sorted key=value rows for `qvm-pool info` (metadata...). */
	int (*pool_usage_details)(struct qp_pool *p, struct qp_kvlist *out, struct qp_err *err);
	/* Validates and applies one pool option for `qvm-pool set`. */
	int (*pool_set)(struct qp_pool *p, const char *key, const char *val, struct qp_err *err);

	/* Returns the vid a volume of @vm named @volume gets in this pool; *out owned. */
	int (*vol_vid)(struct qp_pool *p, const struct qp_domain *vm, const char *volume,
		       char **out, struct qp_err *err);
	/* Creates the volume on disk (origins get an empty sparse image of v->size). */
	int (*vol_create)(struct qp_volume *v, struct qp_err *err);
	/* Deletes every trace of the volume: images, revisions, staging. */
	int (*vol_remove)(struct qp_volume *v, struct qp_err *err);
	/* Prepares the running copy; resumes a dirty one left by a crash; removes
	 * incomplete files. */
	int (*vol_start)(struct qp_volume *v, struct qp_err *err);
	/* Commits (save_on_stop) or discards the running copy. */
	int (*vol_stop)(struct qp_volume *v, struct qp_err *err);
	/* Path to attach while started; *out owned.  -ENODATA (with @err
	 * set) means the volume has nothing to attach: qp_vm_start leaves it
	 * out of the list. */
	int (*vol_block_device)(struct qp_volume *v, char **out, struct qp_err *err);
	/* Path of the committed content; *out owned. */
	int (*vol_export)(struct qp_volume *v, char **out, struct qp_err *err);
	int (*vol_is_dirty)(struct qp_volume *v, bool *out, struct qp_err *err);
	int (*vol_is_outdated)(struct qp_volume *v, bool *out, struct qp_err *err);
	int (*vol_verify)(struct qp_volume *v, struct qp_err *err);
	int (*vol_usage)(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err);
	/* Revisions oldest first. */
	int (*vol_revisions)(struct qp_volume *v, struct qp_revision **out, size_t *n,
			     struct qp_err *err);
	/* rev is never NULL here: the core picks the newest. */
	int (*vol_revert)(struct qp_volume *v, const char *rev, struct qp_err *err);
	/* Grows or shrinks (the core has already refused unforced shrinks). */
	int (*vol_resize)(struct qp_volume *v, uint64_t size, struct qp_err *err);
	/* Creates empty staging of @size bytes and returns its path; *out owned. */
	int (*vol_import_begin)(struct qp_volume *v, uint64_t size, char **out, struct qp_err *err);
	/* Commits the staging (the old content becomes a revision) or removes it. */
	int (*vol_import_end)(struct qp_volume *v, bool ok, struct qp_err *err);
	/* Replaces the content with @src's committed content (clone); src may be
	 * in another pool of any driver. */
	int (*vol_import_volume)(struct qp_volume *v, struct qp_volume *src, struct qp_err *err);
	/* Called when a VM left started by an earlier boot is found: discard
	 * running copies of volumes that are not saved on stop, keep dirty
	 * origins for the next start to resume. */
	int (*vol_recover)(struct qp_volume *v, struct qp_err *err);
	/* Drops the running copy of a save_on_stop volume without committing
	 * it (a start that failed on a later volume). */
	int (*vol_discard)(struct qp_volume *v, struct qp_err *err);
	/* OPTIONAL: pools on external drives (storage/drive.c): makes the pool
	 * online (unlock, mount or activate), and the reverse.  Detach is only
	 * called when no VM using the pool is started. */
	int (*pool_attach)(struct qp_pool *p, struct qp_err *err);
	int (*pool_detach)(struct qp_pool *p, struct qp_err *err);
};

extern const struct qp_driver *const qp_drivers[];

/* A pool_set for drivers with no options of their own to change: handles
 * revisions_to_keep (>= -1) and ephemeral_volatile (storage/objects.c). */
int qp_pool_set_base(struct qp_pool *p, const char *key, const char *val, struct qp_err *err);
const struct qp_driver *qp_driver_find(const char *name);

/* Shared helpers for drivers (storage/fsutil.c). */

/* Runs argv (never through a shell); stdout captured into *out when out is
 * non-NULL (owned by the caller); stderr captured into the error message. */
int qp_run(char *const argv[], char **out, struct qp_err *err);
/* fsync of the folder holding @path (or of @path when it is a folder). */
int qp_fsync_dir(const char *path);
/* Copies @src to @dst: FICLONE when possible, else a sparse copy (data
 * extents only, found with SEEK_DATA/SEEK_HOLE).  @dst is created with
 * O_EXCL; fsynced before returning.  *reflinked tells which was used. */
int qp_copy_file(const char *src, const char *dst, bool *reflinked, struct qp_err *err);
/* Variants of qp_rename, qp_unlink and qp_copy_file with flags.  QP_FS_NOSYNC
 * skips every fsync: for files that a crash makes worthless anyway (running
 * copies, which recovery discards or rebuilds), durability costs time and
 * buys nothing; atomicity of the rename is kept. */
enum { QP_FS_NOSYNC = 1 << 0 };
int qp_rename_f(const char *from, const char *to, unsigned flags, struct qp_err *err);
int qp_unlink_f(const char *path, unsigned flags, struct qp_err *err);
int qp_copy_file_f(const char *src, const char *dst, bool *reflinked, unsigned flags,
		   struct qp_err *err);
/* Makes a unique temporary name "<target>~<random>"; *out owned. */
int qp_tmp_name(const char *target, char **out);
/* rename + fsync of the folder. */
int qp_rename(const char *from, const char *to, struct qp_err *err);
/* unlink (ENOENT is success) + fsync of the folder. */
int qp_unlink(const char *path, struct qp_err *err);
/* mkdir -p with mode 0755. */
int qp_mkdirs(const char *path, struct qp_err *err);
/* asprintf that returns NULL on failure. */
char *qp_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* External drives (storage/drive.c).  Pool options: device (UUID=...,
 * LABEL=..., PARTUUID=..., PARTLABEL=... or a /dev path), key_file (LUKS),
 * and fs_uuid, the filesystem UUID recorded when the pool is added. */

/* 0 when @spec has one of the forms above, else -EINVAL. */
int qp_drive_spec_valid(const char *spec);
/* Checks the pool's device and key_file options (key_file needs device and
 * an absolute path). */
int qp_drive_opts_check(struct qp_pool *p, struct qp_err *err);
/* The one device @spec names; *out owned.  -ENODEV when absent, -ENOTUNIQ
 * when several devices match. */
int qp_drive_find(const char *spec, char **out, struct qp_err *err);
/* Probes @dev's superblock; *uuid and *type owned, NULL when absent.
 * -ENODATA when @dev holds nothing known. */
int qp_drive_probe(const char *dev, char **uuid, char **type);
/* UUID of the filesystem holding existing @path (NULL when it has none or
 * its device is gone); *mnt (optional) its mount point; both owned. */
int qp_drive_fs_uuid(const char *path, char **uuid, char **mnt);
/* Whether folder @dir is on a mounted filesystem with UUID @uuid whose
 * device is present; answers are reused for two seconds. */
bool qp_drive_fs_check(const char *dir, const char *uuid);
/* Drops the answers kept by qp_drive_fs_check. */
void qp_drive_forget(void);
/* Pool state from fs_uuid/device: online when @dir passes the check above,
 * locked when the LUKS device is present but not open, else offline. */
int qp_drive_state(struct qp_pool *p, const char *dir, enum qp_pool_state *out,
		   struct qp_err *err);
/* Finds the pool's device and unlocks it when it is LUKS (mapping
 * "qpool-<pool>"); *out is the device holding the content, *fs_type
 * (optional) its type; both owned. */
int qp_drive_open(struct qp_pool *p, char **out, char **fs_type, struct qp_err *err);
/* Closes the pool's LUKS mapping; an absent one is success. */
int qp_drive_close(struct qp_pool *p, struct qp_err *err);
/* "qpool-<pool>"; NULL on ENOMEM. */
char *qp_drive_mapper_name(const struct qp_pool *p);
/* Whether the pool's LUKS mapping /dev/mapper/qpool-<pool> exists. */
bool qp_drive_mapped(const struct qp_pool *p);
/* Whether that mapping exists but no longer reads (its drive vanished); the
 * check reads with O_DIRECT, so no cached block hides a vanished drive. */
bool qp_drive_mapping_dead(const struct qp_pool *p);
/* Mounts @dev at @mnt (created) after checking that its filesystem UUID is
 * the pool's fs_uuid (when recorded) and its type @type (when non-NULL). */
int qp_drive_mount(struct qp_pool *p, const char *dev, const char *type, const char *mnt,
		   struct qp_err *err);
/* Unmounts @mnt when the pool's filesystem is mounted exactly there. */
int qp_drive_umount(struct qp_pool *p, const char *mnt, struct qp_err *err);

/* Ephemeral volatile volumes (storage/ephemeral.c): a plain dm-crypt mapping
 * with a random key that is never stored.  Mapping names are device-mapper
 * names ("<vg>-<lv>@crypt"...), not paths. */

/* Opens mapping @name over @backing (a block device, or a regular file that
 * gets an autoclear loop device, gone with the mapping) with a key read from
 * /dev/urandom, and zeroes its first 64 KiB.  A stale mapping @name is
 * closed first.  *mapper_path ("/dev/mapper/<name>") owned. */
int qp_ephemeral_open(const char *backing, const char *name, char **mapper_path,
		      struct qp_err *err);
/* Closes mapping @name and detaches its loop device; an absent mapping is
 * success. */
int qp_ephemeral_close(const char *name, struct qp_err *err);
/* Whether mapping @name exists. */
bool qp_ephemeral_active(const char *name);
/* "/dev/mapper/<name>"; NULL on ENOMEM. */
char *qp_ephemeral_path(const char *name);

#endif
