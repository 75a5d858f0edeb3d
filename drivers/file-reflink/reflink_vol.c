/* The file-reflink driver's volume callbacks: create, start, stop, revert,
 * resize, import and the rest of a volume's life (layout in reflink.h, crash
 * safety in reflink.c).
 */
#include "reflink_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates the VM's folder, refusing when the pool's folder is gone: an
 * unplugged drive must not be replaced by folders on the root file system. */
static int make_vm_dir(const struct qp_volume *v, const struct reflink_paths *p,
		       struct qp_err *err)
{
	const char *dir = reflink_to_pool(v->pool)->dir_path;
	struct stat st;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return qp_err_set(err, -ENODEV, "pool '%s' is offline: folder '%s' is missing",
				  v->pool->name, dir);
	return qp_mkdirs(p->dir, err);
}

/* ---- volume callbacks ----------------------------------------------------- */

int reflink_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume, char **out,
		    struct qp_err *err)
{
	(void)p;
	*out = qp_strdupf("%s/%s/%s", vm->cls == QP_TEMPLATEVM ? "vm-templates" : "appvms",
			  vm->name, volume);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

int reflink_vol_create(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = reflink_remove_files(&p, REFLINK_SCAN_ALL, err);
	if (ret == 0 && v->save_on_stop && !v->snap_on_start) {
		ret = reflink_create_sparse_in_place(p.clean, v->size, 0, err);
		if (ret == 0 && qp_vol_rtk(v) != -1)
			reflink_precache_build(&p);
	}
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_remove(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = reflink_remove_files(&p, REFLINK_SCAN_ALL, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot remove volume '%s:%s'", reflink_vm_name(v), v->name);
	} else if (rmdir(p.dir) == 0) {
		qp_fsync_dir(p.dir);
		qp_step("reflink-rmdir");
	}
	reflink_paths_release(&p);
	return ret;
}

/* Start of a snap_on_start volume: our clean path becomes a hard link to the
 * source's clean image (which is_outdated compares against), dirty a copy. */
static int start_snapshot(struct qp_volume *v, const struct reflink_paths *p, struct qp_err *err)
{
	char *src = NULL, *tmp = NULL;
	struct stat st;
	int ret;

	ret = reflink_src_clean(v, &src, err);
	if (ret < 0)
		return ret;
	if (stat(src, &st) < 0) {
		ret = reflink_missing(v->src, src, err);
		goto out;
	}
	ret = qp_unlink_f(p->dirty, QP_FS_NOSYNC, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-drop-dirty");
	ret = qp_tmp_name(p->clean, &tmp);
	if (ret < 0) {
		qp_err_set(err, ret, "out of memory");
		goto out;
	}
	if (link(src, tmp) < 0) {
		ret = qp_err_set(err, -errno, "cannot link '%s' to '%s': %s", src, tmp,
				 ERRSTR(errno));
		goto out;
	}
	ret = qp_rename_f(tmp, p->clean, QP_FS_NOSYNC, err);
	if (ret < 0) {
		unlink(tmp);
		goto out;
	}
	qp_step("reflink-link-source");
	ret = reflink_copy_into_place(p->clean, p->dirty, false, QP_FS_NOSYNC, "reflink-snapshot",
				      err);
	if (ret == 0)
		v->size = (uint64_t)st.st_size;
out:
	free(tmp);
	free(src);
	return ret;
}

static int start_origin(struct qp_volume *v, const struct reflink_paths *p, struct qp_err *err)
{
	int ret;

	if (!reflink_exists(p->clean))
		return reflink_missing(v, p->clean, err);
	if (qp_vol_rtk(v) == -1) {
		/* snapshots disabled: the VM writes the committed image in place */
		ret = reflink_prune(p, 0, err);
		if (ret == 0)
			ret = qp_unlink(p->precache, err);
		if (ret == 0)
			ret = qp_rename(p->clean, p->dirty, err);
		if (ret == 0)
			qp_step("reflink-start-in-place");
		return ret;
	}
	/* Nothing below needs to be durable: after a crash the running copy is
	 * rebuilt from the committed image, so no fsync is spent on it. */
	if (reflink_exists(p->precache) && !reflink_precache_valid(p)) {
		ret = qp_unlink_f(p->precache, QP_FS_NOSYNC, err);
		if (ret < 0)
			return ret;
		qp_step("reflink-precache-stale");
	}
	if (reflink_exists(p->precache)) {
		ret = qp_rename_f(p->precache, p->dirty, QP_FS_NOSYNC, err);
		if (ret == 0)
			qp_step("reflink-start-precache");
		return ret;
	}
	return reflink_copy_into_place(p->clean, p->dirty, false, QP_FS_NOSYNC, "reflink-start-copy",
				       err);
}

/* ---- ephemeral volatile volumes: dm-crypt over the volatile image --------- */

/* The mapping's name: "qpool-<vm>-<volume>-<hash of the image path>@crypt";
 * the hash keeps pools and state roots that hold the same VM name apart. */
static int crypt_name(const struct qp_volume *v, const struct reflink_paths *p, char **out,
		      struct qp_err *err)
{
	uint32_t h = 2166136261u;

	for (const char *s = p->dirty; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	*out = qp_strdupf("qpool-%s-%s-%08x@crypt", reflink_vm_name(v), v->name, h);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

/* Closes the mapping (and its loop device) over the volatile image, if any. */
static int crypt_close(const struct qp_volume *v, const struct reflink_paths *p,
		       struct qp_err *err)
{
	char *name;
	int ret = crypt_name(v, p, &name, err);

	if (ret < 0)
		return ret;
	ret = qp_ephemeral_close(name, err);
	free(name);
	return ret;
}

/* Serves the fresh volatile image through dm-crypt; on failure it goes. */
static int crypt_open(const struct qp_volume *v, const struct reflink_paths *p,
		      struct qp_err *err)
{
	char *name = NULL, *mapper = NULL;
	int ret = crypt_name(v, p, &name, err);

	if (ret == 0)
		ret = qp_ephemeral_open(p->dirty, name, &mapper, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot open ephemeral volume '%s:%s'", reflink_vm_name(v),
			      v->name);
		if (qp_unlink_f(p->dirty, QP_FS_NOSYNC, &(struct qp_err){ 0 }) == 0)
			qp_step("reflink-drop-dirty");
	}
	free(name);
	free(mapper);
	return ret;
}

int reflink_vol_start(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = reflink_remove_files(&p, REFLINK_SCAN_INCOMPLETE, err);
	if (ret < 0)
		goto out;
	if (v->save_on_stop && reflink_exists(p.dirty))
		goto out;	/* left by a crash: resume it */
	if (v->snap_on_start) {
		ret = start_snapshot(v, &p, err);
	} else if (v->save_on_stop) {
		ret = start_origin(v, &p, err);
	} else {
		ret = crypt_close(v, &p, err);
		if (ret == 0)
			ret = qp_unlink_f(p.dirty, QP_FS_NOSYNC, err);
		if (ret == 0)
			ret = reflink_create_sparse_in_place(p.dirty, v->size, QP_FS_NOSYNC, err);
		if (ret == 0 && qp_vol_ephemeral(v))
			ret = crypt_open(v, &p, err);
	}
out:
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_stop(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (v->save_on_stop) {
		if (!reflink_exists(p.dirty))
			goto out;	/* not started */
		if (qp_vol_rtk(v) == -1 && !v->snap_on_start) {
			ret = reflink_fsync_path(p.dirty, err);
			if (ret == 0)
				ret = qp_rename(p.dirty, p.clean, err);
			if (ret == 0)
				qp_step("reflink-stop-in-place");
		} else {
			ret = reflink_commit(v, &p, p.dirty, err);
		}
	} else {
		/* Discarded copies: a crash before these reach the disk leaves
		 * files that the next start replaces. */
		ret = v->snap_on_start ? 0 : crypt_close(v, &p, err);
		if (ret == 0)
			ret = qp_unlink_f(p.dirty, QP_FS_NOSYNC, err);
		if (ret == 0) {
			qp_step("reflink-drop-dirty");
			ret = qp_unlink_f(p.clean, QP_FS_NOSYNC, err);
		}
		if (ret == 0)
			qp_step("reflink-drop-link");
	}
out:
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_block_device(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (!v->snap_on_start && !v->save_on_stop) {
		char *name;

		ret = crypt_name(v, &p, &name, err);
		if (ret == 0 && qp_ephemeral_active(name)) {
			*out = qp_ephemeral_path(name);
			if (!*out)
				ret = qp_err_set(err, -ENOMEM, "out of memory");
			free(name);
			goto out;
		}
		free(name);
		if (ret < 0)
			goto out;
	}
	*out = p.dirty;
	p.dirty = NULL;
out:
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_export(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths p;
	char *path = NULL;
	int ret;

	if (v->save_on_stop) {
		ret = reflink_paths_get(v, &p, err);
		if (ret < 0)
			return ret;
		path = p.clean;
		p.clean = NULL;
		reflink_paths_release(&p);
	} else if (v->snap_on_start) {
		ret = reflink_src_clean(v, &path, err);
		if (ret < 0)
			return ret;
	} else {
		return qp_err_set(err, -EOPNOTSUPP, "cannot export volume '%s:%s': it is volatile",
				  reflink_vm_name(v), v->name);
	}
	if (!reflink_exists(path)) {
		ret = qp_err_set(err, -ENOENT,
				 "cannot export volume '%s:%s': image '%s' is missing",
				 reflink_vm_name(v), v->name, path);
		free(path);
		return ret;
	}
	*out = path;
	return 0;
}

int reflink_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	*out = false;
	if (!v->save_on_stop)
		return 0;
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	*out = reflink_exists(p.dirty);
	reflink_paths_release(&p);
	return 0;
}

int reflink_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err)
{
	struct reflink_paths p;
	struct stat ours, theirs;
	char *src = NULL;
	int ret;

	*out = false;
	if (!v->snap_on_start)
		return 0;
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (stat(p.clean, &ours) < 0)
		goto out;	/* not started */
	ret = reflink_src_clean(v, &src, err);
	if (ret < 0)
		goto out;
	*out = stat(src, &theirs) < 0 || theirs.st_ino != ours.st_ino ||
	       theirs.st_dev != ours.st_dev;
out:
	free(src);
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_verify(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	char *src = NULL;
	int ret;

	if (v->snap_on_start) {
		ret = reflink_src_clean(v, &src, err);
		if (ret == 0 && !reflink_exists(src))
			ret = reflink_missing(v, src, err);
		free(src);
		return ret;
	}
	if (!v->save_on_stop)
		return 0;
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	/* with snapshots disabled, a crash leaves only the dirty image */
	if (!reflink_exists(p.clean) && !reflink_exists(p.dirty))
		ret = reflink_missing(v, p.clean, err);
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err)
{
	struct reflink_paths p;
	struct stat st;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (stat(p.dirty, &st) == 0 || stat(p.clean, &st) == 0) {
		*size = (uint64_t)st.st_size;
		*usage = (uint64_t)st.st_blocks * 512;
	} else {
		*size = v->size;
		*usage = 0;
	}
	reflink_paths_release(&p);
	return 0;
}

int reflink_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
			  struct qp_err *err)
{
	struct qp_revision *res = NULL;
	struct reflink_paths p;
	struct reflink_rev *r = NULL;
	size_t cnt = 0;
	int ret;

	*out = NULL;
	*n = 0;
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	ret = reflink_revs_list(&p, &r, &cnt, err);
	if (ret < 0 || !cnt)
		goto out;
	res = calloc(cnt, sizeof(*res));
	if (!res) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < cnt; i++) {
		res[i].id = qp_strdupf("%ld", r[i].n);
		res[i].time = strdup(r[i].time);
		if (!res[i].id || !res[i].time) {
			qp_revisions_free(res, cnt);
			ret = qp_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	*out = res;
	*n = cnt;
out:
	reflink_revs_free(r, cnt);
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err)
{
	struct reflink_rev *r = NULL, *pick = NULL;
	struct reflink_paths p;
	struct stat st;
	size_t n = 0;
	int ret;

	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (reflink_exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "cannot revert volume '%s:%s': it is in use",
				 reflink_vm_name(v), v->name);
		goto out;
	}
	ret = reflink_revs_list(&p, &r, &n, err);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char id[24];

		snprintf(id, sizeof(id), "%ld", r[i].n);
		if (!strcmp(id, rev))
			pick = &r[i];
	}
	if (!pick) {
		ret = qp_err_set(err, -ENOENT, "revision '%s' of volume '%s:%s' not found", rev,
				 reflink_vm_name(v), v->name);
		goto out;
	}
	/* the current content is kept as the newest revision, the chosen one used up */
	ret = reflink_make_revision(&p, reflink_revs_next(r, n), err);
	if (ret == 0)
		ret = qp_unlink(p.precache, err);
	if (ret == 0) {
		qp_step("reflink-precache-drop");
		ret = qp_rename(pick->path, p.clean, err);
	}
	if (ret < 0) {
		qp_err_prefix(err, "cannot revert volume '%s:%s'", reflink_vm_name(v), v->name);
		goto out;
	}
	qp_step("reflink-revert");
	if (qp_vol_rtk(v) != -1)
		reflink_precache_build(&p);
	if (stat(p.clean, &st) == 0)
		v->size = (uint64_t)st.st_size;
out:
	reflink_revs_free(r, n);
	reflink_paths_release(&p);
	return ret;
}

/* A stopped origin gets a resized copy of its clean image renamed over it. */
static int resize_clean(struct qp_volume *v, const struct reflink_paths *p, uint64_t size,
			struct qp_err *err)
{
	char *tmp = NULL;
	int ret = qp_tmp_name(p->clean, &tmp);

	if (ret < 0)
		return qp_err_set(err, ret, "out of memory");
	ret = qp_copy_file(p->clean, tmp, NULL, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-resize-copy");
	if (truncate(tmp, (off_t)size) < 0) {
		ret = qp_err_set(err, -errno, "cannot resize '%s': %s", tmp, ERRSTR(errno));
		goto out;
	}
	ret = reflink_fsync_path(tmp, err);
	if (ret == 0)
		ret = qp_unlink(p->precache, err);
	if (ret == 0) {
		qp_step("reflink-precache-drop");
		ret = qp_rename(tmp, p->clean, err);
	}
	if (ret < 0)
		goto out;
	qp_step("reflink-resize");
	if (qp_vol_rtk(v) != -1)
		reflink_precache_build(p);
out:
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	return ret;
}

int reflink_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (reflink_exists(p.dirty)) {
		if (truncate(p.dirty, (off_t)size) < 0)
			ret = qp_err_set(err, -errno, "cannot resize '%s': %s", p.dirty,
					 ERRSTR(errno));
		else
			ret = reflink_fsync_path(p.dirty, err);
	} else if (v->save_on_stop && !v->snap_on_start && reflink_exists(p.clean)) {
		ret = resize_clean(v, &p, size, err);
	}
	if (ret == 0)
		v->size = size;
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_import_begin(struct qp_volume *v, uint64_t size, char **out, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	if (!v->save_on_stop)
		return qp_err_set(err, -EOPNOTSUPP, "volume '%s:%s' is not saved on stop",
				  reflink_vm_name(v), v->name);
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (reflink_exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use", reflink_vm_name(v),
				 v->name);
		goto out;
	}
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = qp_unlink(p.import, err);
	if (ret == 0)
		ret = reflink_create_sparse(p.import, size, 0, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-import-begin");
	*out = p.import;
	p.import = NULL;
out:
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err)
{
	struct reflink_paths p;
	struct stat st;
	int ret = reflink_paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (!ok) {
		ret = qp_unlink(p.import, err);
		goto out;
	}
	if (stat(p.import, &st) < 0) {
		ret = qp_err_set(err, -errno, "cannot stat '%s': %s", p.import, ERRSTR(errno));
		goto out;
	}
	ret = reflink_commit(v, &p, p.import, err);
	if (ret == 0)
		v->size = (uint64_t)st.st_size;
out:
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_import_volume(struct qp_volume *v, struct qp_volume *src, struct qp_err *err)
{
	struct reflink_paths p;
	char *from = NULL;
	int ret;

	if (!src->pool || !src->pool->drv || !src->pool->drv->vol_export)
		return qp_err_set(err, -EINVAL, "volume '%s:%s' has no pool", reflink_vm_name(src),
				  src->name);
	if (!v->save_on_stop)
		return qp_err_set(err, -EOPNOTSUPP, "volume '%s:%s' is not saved on stop",
				  reflink_vm_name(v), v->name);
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (reflink_exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use", reflink_vm_name(v),
				 v->name);
		goto out;
	}
	ret = src->pool->drv->vol_export(src, &from, err);
	if (ret < 0)
		goto out;
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = qp_unlink(p.import, err);
	if (ret == 0)
		ret = qp_copy_file(from, p.import, NULL, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-import-copy");
	ret = reflink_vol_import_end(v, true, err);
	if (ret < 0)
		unlink(p.import);
out:
	free(from);
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_recover(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	if (v->save_on_stop)
		return 0;	/* the next start resumes the dirty image */
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	ret = v->snap_on_start ? 0 : crypt_close(v, &p, err);
	if (ret == 0)
		ret = qp_unlink(p.dirty, err);
	if (ret == 0)
		ret = qp_unlink(p.clean, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot recover volume '%s:%s'", reflink_vm_name(v), v->name);
	reflink_paths_release(&p);
	return ret;
}

int reflink_vol_discard(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	if (!v->save_on_stop)
		return reflink_vol_recover(v, err);
	ret = reflink_paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	ret = qp_unlink(p.dirty, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot discard volume '%s:%s'", reflink_vm_name(v), v->name);
	reflink_paths_release(&p);
	return ret;
}
