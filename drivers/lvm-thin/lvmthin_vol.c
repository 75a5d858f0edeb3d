/* The lvm_thin driver's volume callbacks: create, start, stop, revert,
 * resize, import and the rest of a volume's life (layout in lvmthin.h, crash
 * safety in lvmthin.c).
 */
#include "lvmthin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *lvmthin_vm_name(const struct qp_volume *v)
{
	return v->vm && v->vm->name ? v->vm->name : "?";
}

void lvmthin_ctx_release(struct lvmthin_vctx *c)
{
	free(c->vg);
	free(c->base);
	free(c->snap);
	free(c->import);
	memset(c, 0, sizeof(*c));
}

int lvmthin_refresh(struct lvmthin_vctx *c, struct qp_err *err)
{
	int ret = lvmthin_report(c->lp, false, &c->r, err);

	return ret < 0 ? qp_err_prefix(err, "cannot read the LVM report of '%s'", c->lp->vg) : 0;
}

/* The context of @v.  Only the first one of a callback may @renew the
 * cached report: a second (of a source volume) would pull the rows from
 * under the first. */
static int ctx_init(struct qp_volume *v, bool renew, struct lvmthin_vctx *c, struct qp_err *err)
{
	int ret;

	memset(c, 0, sizeof(*c));
	c->v = v;
	if (!v->pool || v->pool->drv != &qp_driver_lvmthin)
		return qp_err_set(err, -EINVAL, "volume '%s:%s' is not in an lvm_thin pool",
				  lvmthin_vm_name(v), v->name);
	c->lp = lvmthin_to_pool(v->pool);
	ret = lvmthin_vid_split(v->vid, &c->vg, &c->base, err);
	if (ret < 0)
		return ret;
	if (strcmp(c->vg, c->lp->vg)) {
		ret = qp_err_set(err, -EINVAL,
				 "volume id '%s' is not in volume group '%s' of pool '%s'", v->vid,
				 c->lp->vg, v->pool->name);
		goto fail;
	}
	c->snap = qp_strdupf("%s-snap", c->base);
	c->import = qp_strdupf("%s-import", c->base);
	if (!c->snap || !c->import) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	ret = lvmthin_report(c->lp, renew, &c->r, err);
	if (ret == 0)
		return 0;
	qp_err_prefix(err, "cannot read the LVM report of '%s'", c->lp->vg);
fail:
	lvmthin_ctx_release(c);
	return ret;
}

int lvmthin_ctx_get(struct qp_volume *v, struct lvmthin_vctx *c, struct qp_err *err)
{
	return ctx_init(v, true, c, err);
}

/* The context of a second volume (a source) in the same callback. */
int lvmthin_ctx_src(struct qp_volume *v, struct lvmthin_vctx *c, struct qp_err *err)
{
	return ctx_init(v, false, c, err);
}

const struct lvmthin_lv *lvmthin_find(const struct lvmthin_vctx *c, const char *name)
{
	return name ? lvmthin_report_find(c->r, name) : NULL;
}

/* The LV holding the committed content: the base LV, else the newest
 * revision (a commit interrupted between its renames).  NULL when none;
 * valid until the next change. */
const char *lvmthin_current(const struct lvmthin_vctx *c)
{
	const char *best = NULL;
	long long num = -1;

	if (lvmthin_find(c, c->base))
		return c->base;
	for (size_t i = 0; c->r && i < c->r->n; i++) {
		long long n = lvmthin_rev_num(c->r->lv[i].name, c->base);

		if (n > num) {
			num = n;
			best = c->r->lv[i].name;
		}
	}
	return best;
}

int lvmthin_missing(const struct lvmthin_vctx *c, struct qp_err *err)
{
	return qp_err_set(err, -ENOENT, "volume '%s:%s' is missing its LV '%s/%s'",
			  lvmthin_vm_name(c->v), c->v->name, c->vg, c->base);
}

/* ---- changes: one lvm command each, then a step ------------------------------ */

static int changed(struct lvmthin_vctx *c, int ret, const char *step, struct qp_err *err)
{
	if (ret < 0) {
		/* the command may have done part of its work */
		lvmthin_note_other(c->lp);
		lvmthin_refresh(c, &(struct qp_err){ 0 });
		/* LVM's first words are then a warning about the full pool
		 * rather than the reason: say it plainly */
		if (c->r && lvmthin_check_space(c, &(struct qp_err){ 0 }) == -ENOSPC) {
			char msg[sizeof(err->msg)];

			snprintf(msg, sizeof(msg), "%s", err->msg);
			lvmthin_check_space(c, err);
			qp_err_prefix(err, "%.*s", (int)strcspn(msg, ":"), msg);
		}
		return ret;
	}
	qp_step(step);
	return lvmthin_refresh(c, err);
}

static int lv_rename(struct lvmthin_vctx *c, const char *from, const char *to, const char *step,
		     struct qp_err *err)
{
	char *f = strdup(from), *t = strdup(to);
	char *argv[] = { "lvrename", "--", c->vg, f, t, NULL };
	int ret;

	if (!f || !t) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_lvm(argv, NULL, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot rename '%s/%s' to '%s'", c->vg, f, t);
	} else {
		lvmthin_note_rename(c->lp, f, t);
	}
	ret = changed(c, ret, step, err);
out:
	free(f);
	free(t);
	return ret;
}

/* Removes the LVs named in @names (those that exist) with one command. */
static int lv_remove(struct lvmthin_vctx *c, char **names, size_t n, const char *step,
		     struct qp_err *err)
{
	char *argv[32] = { "lvremove", "--force", "--" };
	char *paths[28] = { 0 };
	size_t k = 0;
	int ret = 0;

	for (size_t i = 0; i < n && ret == 0; i++) {
		if (!lvmthin_find(c, names[i]))
			continue;
		if (k == sizeof(paths) / sizeof(paths[0])) {
			ret = qp_err_set(err, -E2BIG, "too many LVs to remove at once");
			break;
		}
		if (!(paths[k++] = qp_strdupf("%s/%s", c->vg, names[i])))
			ret = qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (ret < 0 || k == 0)
		goto out;
	for (size_t i = 0; i < k; i++)
		argv[3 + i] = paths[i];
	ret = lvmthin_lvm(argv, NULL, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot remove '%s'", paths[0]);
	} else {
		for (size_t i = 0; i < k; i++)
			lvmthin_note_remove(c->lp, paths[i] + strlen(c->vg) + 1);
	}
	ret = changed(c, ret, step, err);
out:
	for (size_t i = 0; i < k; i++)
		free(paths[i]);
	return ret;
}

int lvmthin_lv_remove1(struct lvmthin_vctx *c, const char *name, const char *step,
		       struct qp_err *err)
{
	char *copy = strdup(name);
	int ret;

	if (!copy)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = lv_remove(c, &copy, 1, step, err);
	free(copy);
	return ret;
}

/* A thin snapshot @name of @origin (in the same VG), active. */
int lvmthin_lv_snapshot(struct lvmthin_vctx *c, const char *origin, const char *name,
			const char *step, struct qp_err *err)
{
	char *o = qp_strdupf("%s/%s", c->vg, origin), *n = qp_strdupf("--name=%s", name);
	char *argv[] = { "lvcreate", "--snapshot", "--setactivationskip=n", "--activate=y", n, "--",
			 o,	     NULL };
	int ret;

	if (!o || !n) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_lvm(argv, NULL, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot snapshot '%s' as '%s'", o, name);
	else
		lvmthin_note_snapshot(c->lp, origin, name);
	ret = changed(c, ret, step, err);
out:
	free(o);
	free(n);
	return ret;
}

/* A new, empty thin LV @name of @size bytes in the pool's thin pool. */
int lvmthin_lv_create(struct lvmthin_vctx *c, const char *name, uint64_t size, const char *step,
		      struct qp_err *err)
{
	char *n = qp_strdupf("--name=%s", name), *tp = qp_strdupf("%s/%s", c->vg, c->lp->thin_pool);
	char *sz = qp_strdupf("--virtualsize=%lluB", (unsigned long long)size);
	char *argv[] = { "lvcreate", "--thin", "--setactivationskip=n", "--activate=y", n, sz, "--",
			 tp,	     NULL };
	int ret;

	if (!n || !tp || !sz) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_lvm(argv, NULL, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot create '%s/%s'", c->vg, name);
	else
		lvmthin_note_other(c->lp);
	ret = changed(c, ret, step, err);
out:
	free(n);
	free(tp);
	free(sz);
	return ret;
}

static int lv_resize(struct lvmthin_vctx *c, const char *name, uint64_t size, struct qp_err *err)
{
	char *path = qp_strdupf("%s/%s", c->vg, name);
	char *sz = qp_strdupf("--size=%lluB", (unsigned long long)size);
	char *argv[] = { "lvresize", "--force", sz, "--", path, NULL };
	int ret;

	if (!path || !sz) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_lvm(argv, NULL, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot resize '%s'", path);
	else
		lvmthin_note_other(c->lp);
	ret = changed(c, ret, "lvmthin-resize", err);
out:
	free(path);
	free(sz);
	return ret;
}

/* Activates @name when it is not (thin snapshots may carry the
 * activation-skip flag, hence --ignoreactivationskip). */
int lvmthin_lv_activate(struct lvmthin_vctx *c, const char *name, struct qp_err *err)
{
	const struct lvmthin_lv *l = lvmthin_find(c, name);
	char *path;
	int ret;

	if (!l)
		return qp_err_set(err, -ENOENT, "LV '%s/%s' not found", c->vg, name);
	if (l->attr[4] == 'a')
		return 0;
	path = qp_strdupf("%s/%s", c->vg, name);
	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = lvmthin_lvm((char *[]){ "lvchange", "--activate=y", "--ignoreactivationskip", "--",
				      path, NULL },
			  NULL, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot activate '%s'", path);
	free(path);
	lvmthin_note_other(c->lp);
	return ret < 0 ? ret : lvmthin_refresh(c, err);
}

int lvmthin_vol_path(const struct lvmthin_vctx *c, const char *name, char **out, struct qp_err *err)
{
	*out = lvmthin_dm_path(c->vg, name);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

/* -ENOSPC when the thin pool has no data or metadata space left. */
int lvmthin_check_space(const struct lvmthin_vctx *c, struct qp_err *err)
{
	const struct lvmthin_lv *tp = lvmthin_find(c, c->lp->thin_pool);

	if (tp && tp->data_bp >= LVMTHIN_BP_FULL)
		return qp_err_set(
			err, -ENOSPC,
			"thin pool '%s/%s' is out of data space; extend it (lvextend) and "
			"try again",
			c->vg, c->lp->thin_pool);
	if (tp && tp->meta_bp >= LVMTHIN_BP_FULL)
		return qp_err_set(err, -ENOSPC,
				  "thin pool '%s/%s' is out of metadata space; extend it "
				  "(lvextend --poolmetadatasize) and try again",
				  c->vg, c->lp->thin_pool);
	return 0;
}

/* ---- revisions and commit ---------------------------------------------------- */

static int revs(const struct lvmthin_vctx *c, struct lvmthin_rev **r, size_t *n, struct qp_err *err)
{
	return lvmthin_revs(c->r, c->base, r, n, err);
}

/* Renames the base LV (when there is one) to a new newest revision. */
static int base_to_revision(struct lvmthin_vctx *c, const char *step, struct qp_err *err)
{
	struct lvmthin_rev *r;
	char *name;
	size_t n;
	int ret;

	if (!lvmthin_find(c, c->base))
		return 0;
	ret = revs(c, &r, &n, err);
	if (ret < 0)
		return ret;
	name = qp_strdupf("%s-%lld-back", c->base, lvmthin_rev_next(r, n, (long long)time(NULL)));
	lvmthin_revs_free(r, n);
	if (!name)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = lv_rename(c, c->base, name, step, err);
	free(name);
	return ret;
}

/* Keeps the newest @keep revisions. */
static int prune(struct lvmthin_vctx *c, int keep, struct qp_err *err)
{
	struct lvmthin_rev *r;
	char *names[28];
	size_t n, k = 0;
	int ret;

	if (keep < 0)
		keep = 0;
	ret = revs(c, &r, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i + (size_t)keep < n && k < sizeof(names) / sizeof(names[0]); i++)
		names[k++] = r[i].name;
	if (k)
		ret = lv_remove(c, names, k, "lvmthin-prune", err);
	lvmthin_revs_free(r, n);
	return ret;
}

/* Makes LV @from (the running copy or the import staging) the committed
 * content; the old one becomes the newest revision, then old ones are pruned. */
int lvmthin_commit(struct lvmthin_vctx *c, const char *from, struct qp_err *err)
{
	int ret = base_to_revision(c, "lvmthin-commit-revision", err);

	if (ret == 0)
		ret = lv_rename(c, from, c->base, "lvmthin-commit", err);
	if (ret == 0)
		ret = prune(c, qp_vol_rtk(c->v), err);
	return ret;
}

/* A crash between the two renames of a revert (or a removed base LV) leaves
 * the committed content in the newest revision: it becomes the base again. */
static int repair_base(struct lvmthin_vctx *c, struct qp_err *err)
{
	const char *cur = lvmthin_current(c);

	if (lvmthin_find(c, c->base) || !cur || lvmthin_find(c, c->snap))
		return 0;
	return lv_rename(c, cur, c->base, "lvmthin-repair", err);
}

/* ---- volume callbacks ----------------------------------------------------------- */

int lvmthin_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume, char **out,
		    struct qp_err *err)
{
	*out = qp_strdupf("%s/vm-%s-%s", lvmthin_to_pool(p)->vg, vm->name, volume);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

/* Every LV of the volume: base, running copy, staging, revisions. */
static int remove_all(struct lvmthin_vctx *c, const char *step, struct qp_err *err)
{
	struct lvmthin_rev *r;
	char *names[28] = { c->base, c->snap, c->import };
	size_t n, k = 3;
	int ret = revs(c, &r, &n, err);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n && k < sizeof(names) / sizeof(names[0]); i++)
		names[k++] = r[i].name;
	ret = lv_remove(c, names, k, step, err);
	lvmthin_revs_free(r, n);
	return ret;
}

int lvmthin_vol_create(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	ret = remove_all(&c, "lvmthin-remove-leftovers", err);
	if (ret == 0 && v->save_on_stop && !v->snap_on_start)
		ret = lvmthin_lv_create(&c, c.base, v->size, "lvmthin-create", err);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_remove(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	ret = remove_all(&c, "lvmthin-remove", err);
	if (ret < 0)
		qp_err_prefix(err, "cannot remove volume '%s:%s'", lvmthin_vm_name(v), v->name);
	lvmthin_ctx_release(&c);
	return ret;
}

/* Start of a snap_on_start volume: a fresh thin snapshot of the source's
 * committed content. */
static int start_snapshot(struct lvmthin_vctx *c, struct qp_err *err)
{
	struct qp_volume *v = c->v;
	const struct lvmthin_lv *l;
	struct lvmthin_vctx s;
	char *origin = NULL;
	int ret;

	if (!v->src)
		return qp_err_set(err, -ENOENT, "volume '%s:%s' has no source volume",
				  lvmthin_vm_name(v), v->name);
	ret = lvmthin_ctx_src(v->src, &s, err);
	if (ret < 0)
		return ret;
	if (strcmp(s.vg, c->vg) || strcmp(s.lp->thin_pool, c->lp->thin_pool)) {
		ret = qp_err_set(err, -EXDEV,
				 "source '%s' of volume '%s:%s' is in another thin pool",
				 v->src->vid, lvmthin_vm_name(v), v->name);
		goto out;
	}
	if (!lvmthin_current(&s)) {
		ret = lvmthin_missing(&s, err);
		goto out;
	}
	origin = strdup(lvmthin_current(&s));
	if (!origin) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_refresh(c, err);
	if (ret == 0)
		ret = lvmthin_lv_remove1(c, c->snap, "lvmthin-drop-snap", err);
	if (ret == 0)
		ret = lvmthin_lv_snapshot(c, origin, c->snap, "lvmthin-snapshot", err);
	l = ret == 0 ? lvmthin_find(c, c->snap) : NULL;
	if (l)
		v->size = l->size;
out:
	free(origin);
	lvmthin_ctx_release(&s);
	return ret;
}

static int start_origin(struct lvmthin_vctx *c, struct qp_err *err)
{
	const char *cur;
	char *origin;
	int ret;

	if (lvmthin_find(c, c->snap))
		return lvmthin_lv_activate(c, c->snap, err); /* left by a crash: resume it */
	ret = repair_base(c, err);
	if (ret < 0)
		return ret;
	if (!lvmthin_find(c, c->base))
		return lvmthin_missing(c, err);
	if (qp_vol_rtk(c->v) == -1) {
		/* snapshots disabled: the VM writes the committed LV in place */
		ret = prune(c, 0, err);
		return ret < 0 ? ret : lvmthin_lv_activate(c, c->base, err);
	}
	cur = lvmthin_current(c);
	origin = strdup(cur);
	if (!origin)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = lvmthin_lv_snapshot(c, origin, c->snap, "lvmthin-start", err);
	free(origin);
	return ret;
}

/* ---- ephemeral volatile volumes: dm-crypt over the volatile LV ---------------- */

/* The mapping's name: the LV's device-mapper name and "@crypt". */
static int crypt_name(const struct lvmthin_vctx *c, char **out, struct qp_err *err)
{
	char *path = lvmthin_dm_path(c->vg, c->base);

	*out = path ? qp_strdupf("%s@crypt", path + strlen("/dev/mapper/")) : NULL;
	free(path);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

/* Closes the mapping over the volatile LV, if any (it holds the LV open). */
static int crypt_close(struct lvmthin_vctx *c, struct qp_err *err)
{
	char *name;
	int ret = crypt_name(c, &name, err);

	if (ret < 0)
		return ret;
	ret = qp_ephemeral_close(name, err);
	free(name);
	return ret;
}

/* Serves the fresh volatile LV through dm-crypt; on failure the LV goes. */
static int crypt_open(struct lvmthin_vctx *c, struct qp_err *err)
{
	char *name = NULL, *dev = NULL, *mapper = NULL;
	int ret = crypt_name(c, &name, err);

	if (ret == 0)
		ret = lvmthin_vol_path(c, c->base, &dev, err);
	if (ret == 0)
		ret = qp_ephemeral_open(dev, name, &mapper, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot open ephemeral volume '%s:%s'", lvmthin_vm_name(c->v),
			      c->v->name);
		lvmthin_lv_remove1(c, c->base, "lvmthin-drop-volatile", &(struct qp_err){ 0 });
	}
	free(name);
	free(dev);
	free(mapper);
	return ret;
}

int lvmthin_vol_start(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	/* staging left by an interrupted import is of no use */
	ret = lvmthin_lv_remove1(&c, c.import, "lvmthin-drop-import", err);
	if (ret < 0)
		goto out;
	if (v->save_on_stop && lvmthin_find(&c, c.snap)) {
		ret = lvmthin_lv_activate(&c, c.snap, err); /* left by a crash: resume it */
	} else if (v->snap_on_start) {
		ret = start_snapshot(&c, err);
	} else if (v->save_on_stop) {
		ret = start_origin(&c, err);
	} else {
		ret = crypt_close(&c, err);
		if (ret == 0)
			ret = lvmthin_lv_remove1(&c, c.base, "lvmthin-drop-volatile", err);
		if (ret == 0)
			ret = lvmthin_lv_create(&c, c.base, v->size, "lvmthin-volatile", err);
		if (ret == 0 && qp_vol_ephemeral(v))
			ret = crypt_open(&c, err);
	}
out:
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_stop(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (v->save_on_stop) {
		if (!lvmthin_find(&c, c.snap))
			goto out; /* not started, or snapshots disabled */
		/* A running copy that hit a full pool has lost writes: keep it
		 * and the committed content as they are. */
		ret = lvmthin_check_space(&c, err);
		if (ret == 0)
			ret = lvmthin_commit(&c, c.snap, err);
		if (ret < 0)
			qp_err_prefix(err, "cannot commit volume '%s:%s'", lvmthin_vm_name(v),
				      v->name);
	} else if (v->snap_on_start) {
		ret = lvmthin_lv_remove1(&c, c.snap, "lvmthin-drop-snap", err);
	} else {
		ret = crypt_close(&c, err);
		if (ret == 0)
			ret = lvmthin_lv_remove1(&c, c.base, "lvmthin-drop-volatile", err);
	}
out:
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_block_device(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct lvmthin_vctx c;
	const char *name;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (v->snap_on_start || (v->save_on_stop && lvmthin_find(&c, c.snap)))
		name = c.snap;
	else
		name = c.base;
	if (!v->snap_on_start && !v->save_on_stop) {
		char *crypt;

		ret = crypt_name(&c, &crypt, err);
		if (ret == 0 && qp_ephemeral_active(crypt)) {
			*out = qp_ephemeral_path(crypt);
			if (!*out)
				ret = qp_err_set(err, -ENOMEM, "out of memory");
			free(crypt);
			goto out;
		}
		free(crypt);
		if (ret < 0)
			goto out;
	}
	ret = lvmthin_vol_path(&c, name, out, err);
out:
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_export(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct qp_volume *from = v->save_on_stop || !v->snap_on_start ? v : v->src;
	struct lvmthin_vctx c;
	char *name = NULL;
	int ret;

	if (!v->save_on_stop && !v->snap_on_start)
		return qp_err_set(err, -EOPNOTSUPP, "cannot export volume '%s:%s': it is volatile",
				  lvmthin_vm_name(v), v->name);
	if (!from)
		return qp_err_set(err, -ENOENT, "volume '%s:%s' has no source volume",
				  lvmthin_vm_name(v), v->name);
	ret = lvmthin_ctx_get(from, &c, err);
	if (ret < 0)
		return ret;
	if (!lvmthin_current(&c)) {
		ret = lvmthin_missing(&c, err);
		goto out;
	}
	name = strdup(lvmthin_current(&c));
	if (!name) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = lvmthin_lv_activate(&c, name, err);
	if (ret == 0)
		ret = lvmthin_vol_path(&c, name, out, err);
out:
	if (ret < 0)
		qp_err_prefix(err, "cannot export volume '%s:%s'", lvmthin_vm_name(v), v->name);
	free(name);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret;

	*out = false;
	if (!v->save_on_stop)
		return 0;
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	*out = lvmthin_find(&c, c.snap) != NULL;
	lvmthin_ctx_release(&c);
	return 0;
}

int lvmthin_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err)
{
	const struct lvmthin_lv *snap;
	struct lvmthin_vctx c, s;
	int ret;

	*out = false;
	if (!v->snap_on_start || !v->src)
		return 0;
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	ret = lvmthin_ctx_src(v->src, &s, err);
	if (ret < 0)
		goto out;
	snap = lvmthin_find(&c, c.snap);
	if (snap)
		*out = !lvmthin_current(&s) || strcmp(snap->origin, lvmthin_current(&s));
	lvmthin_ctx_release(&s);
out:
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_verify(struct qp_volume *v, struct qp_err *err)
{
	struct qp_volume *of = v->snap_on_start ? v->src : v;
	struct lvmthin_vctx c;
	int ret;

	if (!v->snap_on_start && !v->save_on_stop)
		return 0;
	if (!of)
		return qp_err_set(err, -ENOENT, "volume '%s:%s' has no source volume",
				  lvmthin_vm_name(v), v->name);
	ret = lvmthin_ctx_get(of, &c, err);
	if (ret < 0)
		return ret;
	if (!lvmthin_current(&c) && !lvmthin_find(&c, c.snap))
		ret = lvmthin_missing(&c, err);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (v->snap_on_start)
		l = lvmthin_find(&c, c.snap);
	else if (v->save_on_stop)
		l = lvmthin_find(&c, c.snap) ? lvmthin_find(&c, c.snap) :
					       lvmthin_find(&c, lvmthin_current(&c));
	else
		l = lvmthin_find(&c, c.base);
	*size = l ? l->size : v->size;
	*usage = l ? lvmthin_bp_of(l->size, l->data_bp) : 0;
	lvmthin_ctx_release(&c);
	return 0;
}

int lvmthin_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
			  struct qp_err *err)
{
	struct qp_revision *res = NULL;
	struct lvmthin_rev *r = NULL;
	size_t cnt = 0;
	struct lvmthin_vctx c;
	int ret;

	*out = NULL;
	*n = 0;
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	ret = revs(&c, &r, &cnt, err);
	if (ret < 0 || !cnt)
		goto out;
	res = calloc(cnt, sizeof(*res));
	if (!res) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < cnt; i++) {
		char t[32];

		lvmthin_iso_time(r[i].num, t, sizeof(t));
		res[i].id = qp_strdupf("%lld-back", r[i].num);
		res[i].time = strdup(t);
		if (!res[i].id || !res[i].time) {
			qp_revisions_free(res, cnt);
			ret = qp_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	*out = res;
	*n = cnt;
out:
	lvmthin_revs_free(r, cnt);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	struct lvmthin_rev *r = NULL;
	char *pick = NULL;
	size_t n = 0;
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (lvmthin_find(&c, c.snap)) {
		ret = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use", lvmthin_vm_name(v),
				 v->name);
		goto out;
	}
	ret = revs(&c, &r, &n, err);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		char id[40];

		snprintf(id, sizeof(id), "%lld-back", r[i].num);
		if (!strcmp(id, rev) || !strcmp(r[i].name, rev) ||
		    (strspn(rev, "0123456789") == strlen(rev) && atoll(rev) == r[i].num))
			pick = r[i].name;
	}
	if (ret == 0 && !pick)
		ret = qp_err_set(err, -ENOENT, "revision '%s' of volume '%s:%s' not found", rev,
				 lvmthin_vm_name(v), v->name);
	/* the current content is kept as the newest revision, the chosen one used up */
	if (ret == 0)
		ret = base_to_revision(&c, "lvmthin-revert-revision", err);
	if (ret == 0)
		ret = lv_rename(&c, pick, c.base, "lvmthin-revert", err);
	l = ret == 0 ? lvmthin_find(&c, c.base) : NULL;
	if (l)
		v->size = l->size;
out:
	if (ret < 0)
		qp_err_prefix(err, "cannot revert volume '%s:%s'", lvmthin_vm_name(v), v->name);
	lvmthin_revs_free(r, n);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err)
{
	const char *name = NULL;
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (lvmthin_find(&c, c.snap) && (v->snap_on_start || v->save_on_stop))
		name = c.snap;
	else if (v->save_on_stop && !v->snap_on_start)
		name = lvmthin_find(&c, c.base) ? c.base : NULL;
	if (v->save_on_stop && !v->snap_on_start && !name)
		ret = lvmthin_missing(&c, err);
	else if (name)
		ret = lv_resize(&c, name, size, err);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_recover(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret;

	if (v->save_on_stop && !v->snap_on_start)
		return 0; /* the next start resumes the running copy */
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	ret = v->snap_on_start ? 0 : crypt_close(&c, err);
	if (ret == 0)
		ret = lvmthin_lv_remove1(&c, v->snap_on_start ? c.snap : c.base, "lvmthin-recover",
					 err);
	if (ret < 0)
		qp_err_prefix(err, "cannot recover volume '%s:%s'", lvmthin_vm_name(v), v->name);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_discard(struct qp_volume *v, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret;

	if (!v->save_on_stop || v->snap_on_start)
		return lvmthin_vol_recover(v, err);
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	ret = lvmthin_lv_remove1(&c, c.snap, "lvmthin-discard", err);
	if (ret < 0)
		qp_err_prefix(err, "cannot discard volume '%s:%s'", lvmthin_vm_name(v), v->name);
	lvmthin_ctx_release(&c);
	return ret;
}
