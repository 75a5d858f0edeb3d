/* Internal interface between the parts of the file-reflink driver: reflink.c
 * (pool callbacks, ops table), reflink_files.c (a volume's files, revisions,
 * precache, commit) and reflink_vol.c (volume callbacks).  Functions return 0
 * or a negative errno with the detail in @err unless said otherwise.
 */
#ifndef QPOOL_DRIVERS_REFLINK_INTERNAL_H
#define QPOOL_DRIVERS_REFLINK_INTERNAL_H

#include "reflink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reflink_paths {
	char *dir;		/* the VM's folder */
	char *stem;		/* the volume's name, last part of the vid */
	char *base;		/* dir_path/vid */
	char *clean, *dirty, *precache, *import;
};

struct reflink_rev {
	long n;
	char *path;
	char time[20];		/* YYYY-MM-DDTHH:MM:SS */
};

/* Which files reflink_remove_files removes. */
enum { REFLINK_SCAN_ALL, REFLINK_SCAN_INCOMPLETE };

static inline struct reflink_pool *reflink_to_pool(struct qp_pool *p)
{
	return (struct reflink_pool *)p;
}

/* ---- reflink_files.c: helpers --------------------------------------------- */

const char *reflink_vm_name(const struct qp_volume *v);
bool reflink_exists(const char *path);
/* strerror(|e|) in @buf, starting lowercase; returns @buf. */
const char *reflink_errstr(int e, char *buf, size_t len);
#define ERRSTR(e) reflink_errstr((e), (char[128]){ 0 }, 128)
/* Sets "volume '...' is missing its image" and returns -ENOENT. */
int reflink_missing(const struct qp_volume *v, const char *path, struct qp_err *err);
void reflink_paths_release(struct reflink_paths *p);
/* Paths of @v; released with reflink_paths_release. */
int reflink_paths_get(struct qp_volume *v, struct reflink_paths *p, struct qp_err *err);
int reflink_src_clean(struct qp_volume *v, char **out, struct qp_err *err);
int reflink_remove_files(const struct reflink_paths *p, int which, struct qp_err *err);

/* ---- reflink_files.c: revisions, precache, images, commit ----------------- */

void reflink_revs_free(struct reflink_rev *r, size_t n);
int reflink_revs_list(const struct reflink_paths *p, struct reflink_rev **out, size_t *n,
		      struct qp_err *err);
long reflink_revs_next(const struct reflink_rev *r, size_t n);
int reflink_make_revision(const struct reflink_paths *p, long num, struct qp_err *err);
int reflink_prune(const struct reflink_paths *p, int keep, struct qp_err *err);
bool reflink_precache_valid(const struct reflink_paths *p);
int reflink_copy_into_place(const char *from, const char *to, bool same_mtime, unsigned fsflags,
			    const char *step, struct qp_err *err);
void reflink_precache_build(const struct reflink_paths *p);
int reflink_create_sparse(const char *path, uint64_t size, unsigned fsflags, struct qp_err *err);
int reflink_create_sparse_in_place(const char *path, uint64_t size, unsigned fsflags,
				   struct qp_err *err);
int reflink_fsync_path(const char *path, struct qp_err *err);
int reflink_commit(struct qp_volume *v, const struct reflink_paths *p, const char *from,
		   struct qp_err *err);

/* ---- reflink_drive.c: pools on external drives (storage/drive.c) ---------- */

/* Checks device, key_file and mount_point (default: dir_path, which must be
 * at or below it). */
int reflink_drive_init(struct qp_pool *p, struct qp_err *err);
/* At `pool add`: with device, finds, unlocks and mounts the drive. */
int reflink_drive_setup(struct qp_pool *p, struct qp_err *err);
/* At the end of `pool add`: records fs_uuid, the UUID of dir_path's
 * filesystem (required with device, skipped when it has none). */
int reflink_drive_record(struct qp_pool *p, struct qp_err *err);
/* Undoes reflink_drive_setup after a failed add. */
void reflink_drive_undo(struct qp_pool *p);
int reflink_pool_attach(struct qp_pool *p, struct qp_err *err);
int reflink_pool_detach(struct qp_pool *p, struct qp_err *err);

/* ---- reflink_vol.c: volume callbacks of qp_driver_reflink ----------------- */

int reflink_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume, char **out,
		    struct qp_err *err);
int reflink_vol_create(struct qp_volume *v, struct qp_err *err);
int reflink_vol_remove(struct qp_volume *v, struct qp_err *err);
int reflink_vol_start(struct qp_volume *v, struct qp_err *err);
int reflink_vol_stop(struct qp_volume *v, struct qp_err *err);
int reflink_vol_block_device(struct qp_volume *v, char **out, struct qp_err *err);
int reflink_vol_export(struct qp_volume *v, char **out, struct qp_err *err);
int reflink_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err);
int reflink_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err);
int reflink_vol_verify(struct qp_volume *v, struct qp_err *err);
int reflink_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err);
int reflink_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
			  struct qp_err *err);
int reflink_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err);
int reflink_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err);
int reflink_vol_import_begin(struct qp_volume *v, uint64_t size, char **out, struct qp_err *err);
int reflink_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err);
int reflink_vol_import_volume(struct qp_volume *v, struct qp_volume *src, struct qp_err *err);
int reflink_vol_recover(struct qp_volume *v, struct qp_err *err);
int reflink_vol_discard(struct qp_volume *v, struct qp_err *err);

#endif
