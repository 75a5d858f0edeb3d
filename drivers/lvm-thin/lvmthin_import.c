/* The lvm_thin driver's imports: staging an import, committing it, and
 * clones (a thin snapshot inside one thin pool, a sparse copy from any other
 * pool).  Layout in lvmthin.h, crash safety in lvmthin.c.
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
#include <unistd.h>

static int import_prepare(struct lvmthin_vctx *c, struct qp_err *err)
{
	struct qp_volume *v = c->v;

	if (!v->save_on_stop || v->snap_on_start)
		return qp_err_set(err, -EOPNOTSUPP, "volume '%s:%s' is not saved on stop",
				  lvmthin_vm_name(v), v->name);
	if (lvmthin_find(c, c->snap))
		return qp_err_set(err, -EBUSY, "volume '%s:%s' is in use", lvmthin_vm_name(v),
				  v->name);
	return lvmthin_lv_remove1(c, c->import, "lvmthin-drop-import", err);
}

int lvmthin_vol_import_begin(struct qp_volume *v, uint64_t size, char **out, struct qp_err *err)
{
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	ret = import_prepare(&c, err);
	if (ret == 0)
		ret = lvmthin_check_space(&c, err);
	if (ret == 0)
		ret = lvmthin_lv_create(&c, c.import, size, "lvmthin-import-begin", err);
	if (ret == 0)
		ret = lvmthin_lv_activate(&c, c.import, err);
	if (ret == 0)
		ret = lvmthin_vol_path(&c, c.import, out, err);
	lvmthin_ctx_release(&c);
	return ret;
}

int lvmthin_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	struct lvmthin_vctx c;
	int ret = lvmthin_ctx_get(v, &c, err);

	if (ret < 0)
		return ret;
	if (!ok) {
		ret = lvmthin_lv_remove1(&c, c.import, "lvmthin-drop-import", err);
		goto out;
	}
	if (!lvmthin_find(&c, c.import)) {
		ret = qp_err_set(err, -ENOENT, "import staging '%s/%s' is missing", c.vg, c.import);
		goto out;
	}
	ret = lvmthin_commit(&c, c.import, err);
	l = ret == 0 ? lvmthin_find(&c, c.base) : NULL;
	if (l)
		v->size = l->size;
out:
	lvmthin_ctx_release(&c);
	return ret;
}

static bool all_zero(const unsigned char *b, size_t n)
{
	return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

static int path_size(int fd, const char *path, uint64_t *out, struct qp_err *err)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return qp_err_set(err, -errno, "cannot stat '%s': %s", path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, out) < 0)
			return qp_err_set(err, -errno, "cannot get the size of '%s': %s", path,
					  strerror(errno));
		return 0;
	}
	*out = (uint64_t)st.st_size;
	return 0;
}

/* Copies @size bytes from @in to @out (an empty thin LV, which reads as
 * zeros), skipping zero blocks so the copy stays sparse. */
static int sparse_copy(int in, int out, uint64_t size, const char *from, const char *to,
		       struct qp_err *err)
{
	enum { BUF = 1 << 20 };
	unsigned char *buf = malloc(BUF);
	uint64_t done = 0;
	int ret = 0;

	if (!buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	while (done < size && ret == 0) {
		size_t want = size - done < BUF ? (size_t)(size - done) : BUF;
		ssize_t got = pread(in, buf, want, (off_t)done);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			ret = qp_err_set(err, got < 0 ? -errno : -EIO, "cannot read '%s': %s", from,
					 got < 0 ? strerror(errno) : "unexpected end");
			break;
		}
		if (!all_zero(buf, (size_t)got)) {
			for (size_t off = 0; off < (size_t)got && ret == 0;) {
				ssize_t w = pwrite(out, buf + off, (size_t)got - off,
						   (off_t)(done + off));

				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0)
					ret = qp_err_set(err, -errno, "cannot write '%s': %s", to,
							 strerror(errno));
				else
					off += (size_t)w;
			}
		}
		done += (uint64_t)got;
	}
	if (ret == 0 && fsync(out) < 0)
		ret = qp_err_set(err, -errno, "cannot write '%s': %s", to, strerror(errno));
	free(buf);
	return ret;
}

/* Clone from another pool (any driver): a sparse copy into the staging. */
static int import_copy(struct lvmthin_vctx *c, struct qp_volume *src, struct qp_err *err)
{
	char *from = NULL, *to = NULL;
	int in = -1, out = -1, ret;
	uint64_t size = 0;

	ret = src->pool->drv->vol_export(src, &from, err);
	if (ret < 0)
		return ret;
	/* an export may activate an LV, which drops this pool's cached rows */
	ret = lvmthin_refresh(c, err);
	if (ret < 0)
		goto out;
	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		ret = qp_err_set(err, -errno, "cannot open '%s': %s", from, strerror(errno));
		goto out;
	}
	ret = path_size(in, from, &size, err);
	if (ret == 0)
		ret = lvmthin_check_space(c, err);
	if (ret == 0)
		ret = lvmthin_lv_create(c, c->import, size, "lvmthin-import-begin", err);
	if (ret == 0)
		ret = lvmthin_lv_activate(c, c->import, err);
	if (ret == 0)
		ret = lvmthin_vol_path(c, c->import, &to, err);
	if (ret < 0)
		goto out;
	out = open(to, O_WRONLY | O_CLOEXEC);
	if (out < 0)
		ret = qp_err_set(err, -errno, "cannot open '%s': %s", to, strerror(errno));
	else
		ret = sparse_copy(in, out, size, from, to, err);
	if (out >= 0 && close(out) < 0 && ret == 0)
		ret = qp_err_set(err, -errno, "cannot write '%s': %s", to, strerror(errno));
	if (ret == 0)
		qp_step("lvmthin-import-copy");
out:
	if (in >= 0)
		close(in);
	free(from);
	free(to);
	return ret;
}

int lvmthin_vol_import_volume(struct qp_volume *v, struct qp_volume *src, struct qp_err *err)
{
	const struct lvmthin_lv *l;
	struct lvmthin_vctx c, s = { 0 };
	bool same_pool;
	int ret;

	if (!src->pool || !src->pool->drv || !src->pool->drv->vol_export)
		return qp_err_set(err, -EINVAL, "volume '%s:%s' has no pool", lvmthin_vm_name(src),
				  src->name);
	ret = lvmthin_ctx_get(v, &c, err);
	if (ret < 0)
		return ret;
	ret = import_prepare(&c, err);
	if (ret < 0)
		goto out;
	same_pool = src->pool->drv == &qp_driver_lvmthin &&
		    !strcmp(lvmthin_to_pool(src->pool)->vg, c.vg) &&
		    !strcmp(lvmthin_to_pool(src->pool)->thin_pool, c.lp->thin_pool);
	if (same_pool) {
		/* a thin snapshot of the source's committed content */
		char *origin;

		ret = lvmthin_ctx_src(src, &s, err);
		if (ret < 0)
			goto out;
		if (!lvmthin_current(&s)) {
			ret = lvmthin_missing(&s, err);
			goto out;
		}
		origin = strdup(lvmthin_current(&s));
		ret = origin ? lvmthin_refresh(&c, err) : qp_err_set(err, -ENOMEM, "out of memory");
		if (ret == 0)
			ret = lvmthin_lv_snapshot(&c, origin, c.import, "lvmthin-import-snapshot",
						  err);
		free(origin);
	} else {
		ret = import_copy(&c, src, err);
	}
	if (ret == 0)
		ret = lvmthin_commit(&c, c.import, err);
	else
		lvmthin_lv_remove1(&c, c.import, "lvmthin-drop-import", &(struct qp_err){ 0 });
	l = ret == 0 ? lvmthin_find(&c, c.base) : NULL;
	if (l)
		v->size = l->size;
out:
	lvmthin_ctx_release(&s);
	lvmthin_ctx_release(&c);
	return ret;
}
