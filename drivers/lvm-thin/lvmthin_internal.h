/* Internal interface between the parts of the lvm_thin driver: lvmthin_lvm.c
 * (names, running lvm, the report and its cache), lvmthin.c (pool callbacks,
 * ops table) and lvmthin_vol.c (volume callbacks).  Functions return 0 or a
 * negative errno with the detail in @err unless said otherwise.
 */
#ifndef QPOOL_DRIVERS_LVMTHIN_INTERNAL_H
#define QPOOL_DRIVERS_LVMTHIN_INTERNAL_H

#include "lvmthin.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 100 % in the hundredths of a percent that data_bp and meta_bp hold. */
#define LVMTHIN_BP_FULL 10000

/* One row of `lvm lvs`. */
struct lvmthin_lv {
	char *name;
	char *pool_lv;	    /* "" when not a thin volume */
	char *origin;	    /* "" when none */
	char attr[12];	    /* lv_attr: [0] 't' thin pool, 'V' thin volume; [4] 'a' active */
	uint64_t size;	    /* bytes */
	uint32_t data_bp;   /* data_percent in hundredths of a percent */
	uint64_t meta_size; /* thin pools only */
	uint32_t meta_bp;
};

struct lvmthin_report {
	char *vg;
	struct lvmthin_lv *lv;
	size_t n;
	long long when; /* monotonic seconds of the read */
};

/* A revision LV of a volume. */
struct lvmthin_rev {
	long long num;
	char *name;
};

static inline struct lvmthin_pool *lvmthin_to_pool(struct qp_pool *p)
{
	return (struct lvmthin_pool *)p;
}

/* ---- lvmthin_lvm.c: names ------------------------------------------------- */

/* VG and LV names: letters, digits and "+_.-", not starting with '-'. */
bool lvmthin_name_valid(const char *name);
/* "/dev/mapper/" + name with '-' doubled + "-" + lv with '-' doubled; NULL on ENOMEM. */
char *lvmthin_dm_path(const char *vg, const char *lv);
/* Splits vid "<vg>/<lv>" into two allocated strings. */
int lvmthin_vid_split(const char *vid, char **vg, char **lv, struct qp_err *err);
/* The revision number when @name is "<base>-<N>-back", else -1. */
long long lvmthin_rev_num(const char *name, const char *base);
/* Usage in bytes of @size bytes at @bp hundredths of a percent. */
uint64_t lvmthin_bp_of(uint64_t size, uint32_t bp);
/* "YYYY-MM-DDTHH:MM:SS" (UTC) of @epoch into @buf (at least 20 bytes). */
void lvmthin_iso_time(long long epoch, char *buf, size_t len);

/* ---- lvmthin_lvm.c: running lvm and reading its report --------------------- */

/* Runs `lvm ARGV...` (ARGV NULL-terminated, without "lvm"); on failure the
 * message is "lvm: " and LVM's own first line of errors. */
int lvmthin_lvm(char *const argv[], char **out, struct qp_err *err);
/* Parses the output of the report command (see lvmthin_lvm.c) for @vg. */
int lvmthin_report_parse(const char *vg, const char *text, struct lvmthin_report **out,
			 struct qp_err *err);
void lvmthin_report_free(struct lvmthin_report *r);
/* Reads the report of @vg (fresh); *out owned. */
int lvmthin_report_read(const char *vg, struct lvmthin_report **out, struct qp_err *err);
/* The cached report of the pool's VG, read when missing (or, with @renew,
 * older than a moment: callers renew only at the start of an operation, as
 * a new read frees the rows they may hold). */
int lvmthin_report(struct lvmthin_pool *p, bool renew, struct lvmthin_report **out,
		   struct qp_err *err);
/* Row @name of @r, or NULL. */
const struct lvmthin_lv *lvmthin_report_find(const struct lvmthin_report *r, const char *name);
/* Keeps the cached reports (of every lvm_thin pool of the state on the same
 * VG) in step with a change just made: a rename, a removal, a new thin
 * snapshot of @origin, or anything else (which drops the cache). */
void lvmthin_note_rename(struct lvmthin_pool *p, const char *from, const char *to);
void lvmthin_note_remove(struct lvmthin_pool *p, const char *name);
void lvmthin_note_snapshot(struct lvmthin_pool *p, const char *origin, const char *name);
void lvmthin_note_other(struct lvmthin_pool *p);

/* Revisions of volume LV @base in @r sorted oldest first; freed with lvmthin_revs_free. */
int lvmthin_revs(const struct lvmthin_report *r, const char *base, struct lvmthin_rev **out,
		 size_t *n, struct qp_err *err);
void lvmthin_revs_free(struct lvmthin_rev *r, size_t n);
/* Number for a new revision: now, or one more than the newest. */
long long lvmthin_rev_next(const struct lvmthin_rev *r, size_t n, long long now);

/* ---- lvmthin_vol.c: a volume's LVs ---------------------------------------- */

/* A volume's names and the pool's current report. */
struct lvmthin_vctx {
	struct qp_volume *v;
	struct lvmthin_pool *lp;
	char *vg, *base, *snap, *import;
	struct lvmthin_report *r; /* borrowed from lp, renewed by lvmthin_refresh() */
};

const char *lvmthin_vm_name(const struct qp_volume *v);
/* The context of @v (names, report) for a callback; released with
 * lvmthin_ctx_release.  lvmthin_ctx_src is for a second volume (a source)
 * in the same callback: it does not renew the cached report. */
int lvmthin_ctx_get(struct qp_volume *v, struct lvmthin_vctx *c, struct qp_err *err);
int lvmthin_ctx_src(struct qp_volume *v, struct lvmthin_vctx *c, struct qp_err *err);
void lvmthin_ctx_release(struct lvmthin_vctx *c);
/* Renews c->r after a change made elsewhere. */
int lvmthin_refresh(struct lvmthin_vctx *c, struct qp_err *err);
/* Row of LV @name, or NULL; valid until the next change. */
const struct lvmthin_lv *lvmthin_find(const struct lvmthin_vctx *c, const char *name);
/* The LV holding the committed content (base, else newest revision), or NULL. */
const char *lvmthin_current(const struct lvmthin_vctx *c);
/* Sets "volume ... is missing its LV" and returns -ENOENT. */
int lvmthin_missing(const struct lvmthin_vctx *c, struct qp_err *err);
/* Changes: one lvm command each, followed by qp_step(@step). */
int lvmthin_lv_remove1(struct lvmthin_vctx *c, const char *name, const char *step,
		       struct qp_err *err);
int lvmthin_lv_snapshot(struct lvmthin_vctx *c, const char *origin, const char *name,
			const char *step, struct qp_err *err);
int lvmthin_lv_create(struct lvmthin_vctx *c, const char *name, uint64_t size, const char *step,
		      struct qp_err *err);
int lvmthin_lv_activate(struct lvmthin_vctx *c, const char *name, struct qp_err *err);
/* /dev/mapper path of LV @name; *out owned. */
int lvmthin_vol_path(const struct lvmthin_vctx *c, const char *name, char **out,
		     struct qp_err *err);
/* -ENOSPC with a clear message when the thin pool is full. */
int lvmthin_check_space(const struct lvmthin_vctx *c, struct qp_err *err);
/* Makes LV @from the committed content; the old one becomes a revision. */
int lvmthin_commit(struct lvmthin_vctx *c, const char *from, struct qp_err *err);

/* ---- lvmthin_vol.c, lvmthin_import.c: volume callbacks --------------------- */

int lvmthin_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume, char **out,
		    struct qp_err *err);
int lvmthin_vol_create(struct qp_volume *v, struct qp_err *err);
int lvmthin_vol_remove(struct qp_volume *v, struct qp_err *err);
int lvmthin_vol_start(struct qp_volume *v, struct qp_err *err);
int lvmthin_vol_stop(struct qp_volume *v, struct qp_err *err);
int lvmthin_vol_block_device(struct qp_volume *v, char **out, struct qp_err *err);
int lvmthin_vol_export(struct qp_volume *v, char **out, struct qp_err *err);
int lvmthin_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err);
int lvmthin_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err);
int lvmthin_vol_verify(struct qp_volume *v, struct qp_err *err);
int lvmthin_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err);
int lvmthin_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
			  struct qp_err *err);
int lvmthin_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err);
int lvmthin_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err);
int lvmthin_vol_import_begin(struct qp_volume *v, uint64_t size, char **out, struct qp_err *err);
int lvmthin_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err);
int lvmthin_vol_import_volume(struct qp_volume *v, struct qp_volume *src, struct qp_err *err);
int lvmthin_vol_recover(struct qp_volume *v, struct qp_err *err);

/* ---- lvmthin_drive.c: pools on external drives --------------------------- */

/* With option device: unlocks the drive, checks its volume group, activates
 * it and records vg_uuid.  Nothing without device. */
int lvmthin_drive_setup(struct qp_pool *p, struct qp_err *err);
/* Undoes lvmthin_drive_setup after a later failure of pool_setup. */
void lvmthin_drive_undo(struct qp_pool *p);
/* The state given whether the thin pool was @found, active, in the group
 * (a pool with device= and an inactive thin pool is detached). */
int lvmthin_drive_state(struct qp_pool *p, bool found, enum qp_pool_state *out,
			struct qp_err *err);
int lvmthin_pool_attach(struct qp_pool *p, struct qp_err *err);
int lvmthin_pool_detach(struct qp_pool *p, struct qp_err *err);
int lvmthin_vol_discard(struct qp_volume *v, struct qp_err *err);

#endif
