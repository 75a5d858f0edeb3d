/* The lvm_thin pool driver (layout in lvmthin.h): its parameters, pool
 * callbacks and ops table.  LVM itself is in lvmthin_lvm.c, the volume
 * callbacks in lvmthin_vol.c.
 *
 * Every change is one lvm command (create, rename, remove, resize), each
 * followed by qp_step() so the crash tests can stop the process between any
 * two of them.  A commit renames the base LV to a revision, then the running
 * copy to the base name, then prunes: whatever step a crash interrupts, the
 * current LV (base, else the newest revision) holds the old or the new
 * content, and the next start removes or resumes what was left over.
 */
#include "lvmthin_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const lvmthin_params[] = {
	"revisions_to_keep", "volume_group", "thin_pool", "ephemeral_volatile", "device", "key_file",
	NULL,
};
static const char *const lvmthin_required[] = { "volume_group", "thin_pool", NULL };

static void lvmthin_pool_release(struct qp_pool *p)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);

	free(lp->vg);
	free(lp->thin_pool);
	lvmthin_report_free(lp->rep);
	lp->vg = lp->thin_pool = NULL;
	lp->rep = NULL;
}

static int lvmthin_pool_init(struct qp_pool *p, struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	const char *vg = qp_kv_get(&p->config, "volume_group");
	const char *tp = qp_kv_get(&p->config, "thin_pool");
	const char *s;
	long long rtk = 1;
	bool eph = false;
	int ret;

	if (!vg || !*vg)
		return qp_err_set(err, -EINVAL, "pool '%s' needs option 'volume_group'", p->name);
	if (!tp || !*tp)
		return qp_err_set(err, -EINVAL, "pool '%s' needs option 'thin_pool'", p->name);
	if (!lvmthin_name_valid(vg))
		return qp_err_set(err, -EINVAL, "invalid volume_group '%s' for pool '%s'", vg,
				  p->name);
	if (!lvmthin_name_valid(tp))
		return qp_err_set(err, -EINVAL, "invalid thin_pool '%s' for pool '%s'", tp,
				  p->name);
	ret = qp_drive_opts_check(p, err);
	if (ret < 0)
		return ret;
	s = qp_kv_get(&p->config, "revisions_to_keep");
	if (s && qp_parse_int(s, -1, INT_MAX, &rtk) < 0)
		return qp_err_set(
			err, -EINVAL,
			"invalid revisions_to_keep '%s' for pool '%s': not an integer >= -1", s,
			p->name);
	s = qp_kv_get(&p->config, "ephemeral_volatile");
	if (s && qp_parse_bool(s, &eph) < 0)
		return qp_err_set(err, -EINVAL,
				  "invalid ephemeral_volatile '%s' for pool '%s': not a boolean", s,
				  p->name);
	free(lp->vg);
	free(lp->thin_pool);
	lp->vg = strdup(vg);
	lp->thin_pool = strdup(tp);
	if (!lp->vg || !lp->thin_pool) {
		lvmthin_pool_release(p);
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	p->revisions_to_keep = (int)rtk;
	p->ephemeral_volatile = eph;
	return 0;
}

/* The thin pool's row; -ENOENT (message set) when the VG or the pool is
 * missing, or when the LV is not a thin pool. */
static int find_thin_pool(struct lvmthin_pool *lp, const struct lvmthin_lv **out,
			  struct qp_err *err)
{
	struct lvmthin_report *r;
	const struct lvmthin_lv *l;
	int ret = lvmthin_report(lp, true, &r, err);

	*out = NULL;
	if (ret < 0) {
		if (strstr(err->msg, "not found"))
			return qp_err_set(err, -ENOENT, "volume group '%s' not found", lp->vg);
		return qp_err_prefix(err, "cannot read the LVM report of '%s'", lp->vg);
	}
	l = lvmthin_report_find(r, lp->thin_pool);
	if (!l)
		return qp_err_set(err, -ENOENT, "thin pool '%s/%s' not found", lp->vg,
				  lp->thin_pool);
	if (l->attr[0] != 't')
		return qp_err_set(err, -ENOENT, "'%s/%s' is not a thin pool", lp->vg,
				  lp->thin_pool);
	*out = l;
	return 0;
}

static int lvmthin_pool_setup(struct qp_pool *p, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	int ret = lvmthin_drive_setup(p, err);

	if (ret < 0)
		return qp_err_prefix(err, "cannot use pool '%s'", p->name);
	ret = find_thin_pool(lvmthin_to_pool(p), &l, err);
	if (ret < 0) {
		lvmthin_drive_undo(p);
		return qp_err_prefix(err, "cannot use pool '%s'", p->name);
	}
	return 0;
}

static int lvmthin_pool_state(struct qp_pool *p, enum qp_pool_state *out, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	int ret = find_thin_pool(lvmthin_to_pool(p), &l, err);

	*out = QP_POOL_ONLINE;
	if (ret < 0 && ret != -ENOENT)
		return qp_err_prefix(err, "cannot check pool '%s'", p->name);
	/* With device=, an inactive thin pool is a detached one. */
	return lvmthin_drive_state(p,
				   ret == 0 && (!qp_kv_get(&p->config, "device") || l->attr[4] == 'a'),
				   out, err);
}

static int lvmthin_pool_usage(struct qp_pool *p, uint64_t *size, uint64_t *usage,
			      struct qp_err *err)
{
	const struct lvmthin_lv *l;
	int ret = find_thin_pool(lvmthin_to_pool(p), &l, err);

	if (ret < 0)
		return qp_err_prefix(err, "cannot get the usage of pool '%s'", p->name);
	*size = l->size;
	*usage = lvmthin_bp_of(l->size, l->data_bp);
	return 0;
}

static int lvmthin_pool_usage_details(struct qp_pool *p, struct qp_kvlist *out, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	char size[24], usage[24];
	int ret = find_thin_pool(lvmthin_to_pool(p), &l, err);

	if (ret < 0)
		return qp_err_prefix(err, "cannot get the usage of pool '%s'", p->name);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)l->meta_size);
	snprintf(usage, sizeof(usage), "%llu",
		 (unsigned long long)lvmthin_bp_of(l->meta_size, l->meta_bp));
	if (qp_kv_set(out, "metadata_size", size) < 0 ||
	    qp_kv_set(out, "metadata_usage", usage) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

const struct qp_driver qp_driver_lvmthin = {
	.name = "lvm_thin",
	.params = lvmthin_params,
	.required = lvmthin_required,
	.pool_size = sizeof(struct lvmthin_pool),
	.pool_init = lvmthin_pool_init,
	.pool_release = lvmthin_pool_release,
	.pool_setup = lvmthin_pool_setup,
	.pool_state = lvmthin_pool_state,
	.pool_usage = lvmthin_pool_usage,
	.pool_usage_details = lvmthin_pool_usage_details,
	.pool_set = qp_pool_set_base,
	.vol_vid = lvmthin_vol_vid,
	.vol_create = lvmthin_vol_create,
	.vol_remove = lvmthin_vol_remove,
	.vol_start = lvmthin_vol_start,
	.vol_stop = lvmthin_vol_stop,
	.vol_block_device = lvmthin_vol_block_device,
	.vol_export = lvmthin_vol_export,
	.vol_is_dirty = lvmthin_vol_is_dirty,
	.vol_is_outdated = lvmthin_vol_is_outdated,
	.vol_verify = lvmthin_vol_verify,
	.vol_usage = lvmthin_vol_usage,
	.vol_revisions = lvmthin_vol_revisions,
	.vol_revert = lvmthin_vol_revert,
	.vol_resize = lvmthin_vol_resize,
	.vol_import_begin = lvmthin_vol_import_begin,
	.vol_import_end = lvmthin_vol_import_end,
	.vol_import_volume = lvmthin_vol_import_volume,
	.vol_recover = lvmthin_vol_recover,
	.vol_discard = lvmthin_vol_discard,
	.pool_attach = lvmthin_pool_attach,
	.pool_detach = lvmthin_pool_detach,
};
