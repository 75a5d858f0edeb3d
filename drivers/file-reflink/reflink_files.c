/* The file-reflink driver's files: paths of a volume's images, revisions,
 * the precache, and committing an image as the clean one (layout in reflink.h,
 * crash safety in reflink.c).
 */
#include "reflink_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const families[] = { ".img", "-dirty.img", "-precache.img", "-import.img" };

/* ---- small helpers -------------------------------------------------------- */

const char *reflink_vm_name(const struct qp_volume *v)
{
	return v->vm && v->vm->name ? v->vm->name : "?";
}

bool reflink_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

const char *reflink_errstr(int e, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

int reflink_missing(const struct qp_volume *v, const char *path, struct qp_err *err)
{
	return qp_err_set(err, -ENOENT, "volume '%s:%s' is missing its image '%s'",
			  reflink_vm_name(v), v->name, path);
}

void reflink_paths_release(struct reflink_paths *p)
{
	free(p->dir);
	free(p->stem);
	free(p->base);
	free(p->clean);
	free(p->dirty);
	free(p->precache);
	free(p->import);
	memset(p, 0, sizeof(*p));
}

/* Paths of the volume with @vid in @pool; released with reflink_paths_release. */
static int paths_for(struct qp_pool *pool, const char *vid, struct reflink_paths *p,
		     struct qp_err *err)
{
	const char *slash;

	memset(p, 0, sizeof(*p));
	if (!pool || pool->drv != &qp_driver_reflink)
		return qp_err_set(err, -EINVAL, "volume '%s' is not in a file-reflink pool",
				  vid ? vid : "?");
	if (!vid || !*vid || vid[0] == '/' || strstr(vid, ".."))
		return qp_err_set(err, -EINVAL, "invalid volume id '%s' in pool '%s'",
				  vid ? vid : "", pool->name);
	p->base = qp_strdupf("%s/%s", reflink_to_pool(pool)->dir_path, vid);
	if (!p->base)
		goto nomem;
	slash = strrchr(p->base, '/');
	p->dir = strndup(p->base, (size_t)(slash - p->base));
	p->stem = strdup(slash + 1);
	p->clean = qp_strdupf("%s.img", p->base);
	p->dirty = qp_strdupf("%s-dirty.img", p->base);
	p->precache = qp_strdupf("%s-precache.img", p->base);
	p->import = qp_strdupf("%s-import.img", p->base);
	if (p->dir && p->stem && p->clean && p->dirty && p->precache && p->import)
		return 0;
nomem:
	reflink_paths_release(p);
	return qp_err_set(err, -ENOMEM, "out of memory");
}

int reflink_paths_get(struct qp_volume *v, struct reflink_paths *p, struct qp_err *err)
{
	return paths_for(v->pool, v->vid, p, err);
}

/* Clean image of the source of a snap_on_start volume; *out owned. */
int reflink_src_clean(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths sp;
	int ret;

	if (!v->src)
		return qp_err_set(err, -ENOENT, "volume '%s:%s' has no source volume",
				  reflink_vm_name(v), v->name);
	ret = paths_for(v->src->pool, v->src->vid, &sp, err);
	if (ret < 0)
		return ret;
	*out = sp.clean;
	sp.clean = NULL;
	reflink_paths_release(&sp);
	return 0;
}

/* Whether the name in the VM's folder belongs to volume @stem. */
static const char *family_rest(const char *name, const char *stem)
{
	size_t len = strlen(stem);

	if (strncmp(name, stem, len))
		return NULL;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (!strncmp(name + len, families[i], strlen(families[i])))
			return name + len;
	return NULL;
}

/* Removes the volume's files (all of them, or only temporaries and the import
 * staging).  A missing folder is not an error. */
int reflink_remove_files(const struct reflink_paths *p, int which, struct qp_err *err)
{
	DIR *d = opendir(p->dir);
	struct dirent *de;
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : qp_err_set(err, -errno, "cannot read folder '%s': %s",
							p->dir, ERRSTR(errno));
	while ((de = readdir(d))) {
		const char *rest = family_rest(de->d_name, p->stem);
		char *path;

		if (!rest)
			continue;
		if (which == REFLINK_SCAN_INCOMPLETE && !strchr(rest, '~') &&
		    strcmp(rest, "-import.img"))
			continue;
		path = qp_strdupf("%s/%s", p->dir, de->d_name);
		if (!path) {
			ret = qp_err_set(err, -ENOMEM, "out of memory");
			break;
		}
		ret = qp_unlink(path, err);
		free(path);
		if (ret < 0)
			break;
		qp_step("reflink-remove-file");
	}
	closedir(d);
	return ret;
}

/* ---- revisions ------------------------------------------------------------ */

void reflink_revs_free(struct reflink_rev *r, size_t n)
{
	if (!r)
		return;
	for (size_t i = 0; i < n; i++)
		free(r[i].path);
	free(r);
}

static int rev_cmp(const void *a, const void *b)
{
	const struct reflink_rev *x = a, *y = b;

	return (x->n > y->n) - (x->n < y->n);
}

/* Parses "<stem>.img.<N>@YYYY-MM-DDTHH:MM:SSZ". */
static bool rev_parse(const char *name, const char *stem, long *n, char time[20])
{
	size_t len = strlen(stem);
	const char *s = name + len + 5, *at;
	char *end;

	if (strncmp(name, stem, len) || strncmp(name + len, ".img.", 5))
		return false;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	*n = strtol(s, &end, 10);
	if (errno || *end != '@' || *n < 1)
		return false;
	at = end + 1;
	if (strlen(at) != 20 || at[19] != 'Z' || at[10] != 'T' || at[4] != '-' || at[13] != ':')
		return false;
	memcpy(time, at, 19);
	time[19] = '\0';
	return true;
}

/* Revisions sorted by N, oldest first; *out freed with reflink_revs_free. */
int reflink_revs_list(const struct reflink_paths *p, struct reflink_rev **out, size_t *n,
		      struct qp_err *err)
{
	struct reflink_rev *r = NULL, *nr;
	size_t cnt = 0;
	struct dirent *de;
	DIR *d;
	int ret = 0;

	*out = NULL;
	*n = 0;
	d = opendir(p->dir);
	if (!d)
		return errno == ENOENT ? 0 : qp_err_set(err, -errno, "cannot read folder '%s': %s",
							p->dir, ERRSTR(errno));
	while ((de = readdir(d))) {
		struct reflink_rev rev = { 0 };

		if (!rev_parse(de->d_name, p->stem, &rev.n, rev.time))
			continue;
		rev.path = qp_strdupf("%s/%s", p->dir, de->d_name);
		nr = rev.path ? realloc(r, (cnt + 1) * sizeof(*r)) : NULL;
		if (!nr) {
			free(rev.path);
			ret = qp_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		r = nr;
		r[cnt++] = rev;
	}
	if (cnt)
		qsort(r, cnt, sizeof(*r), rev_cmp);
	*out = r;
	*n = cnt;
	r = NULL;
	cnt = 0;
out:
	closedir(d);
	reflink_revs_free(r, cnt);
	return ret;
}

long reflink_revs_next(const struct reflink_rev *r, size_t n)
{
	return n ? r[n - 1].n + 1 : 1;
}

/* Makes the current clean image revision @num (a hard link: the clean image
 * is never written in place, only replaced).  Nothing to do without one. */
int reflink_make_revision(const struct reflink_paths *p, long num, struct qp_err *err)
{
	char stamp[32], *path = NULL, *tmp = NULL;
	struct stat st;
	struct tm tm;
	int ret;

	if (stat(p->clean, &st) < 0)
		return errno == ENOENT ? 0 : qp_err_set(err, -errno, "cannot stat '%s': %s",
							p->clean, ERRSTR(errno));
	gmtime_r(&st.st_mtim.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	path = qp_strdupf("%s.img.%ld@%sZ", p->base, num, stamp);
	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (link(p->clean, path) == 0) {
		ret = qp_fsync_dir(path);
		if (ret < 0)
			qp_err_set(err, ret, "cannot sync the folder of '%s': %s", path,
				   ERRSTR(ret));
		goto out;
	}
	if (errno != EPERM && errno != EMLINK && errno != EOPNOTSUPP) {
		ret = qp_err_set(err, -errno, "cannot link '%s' to '%s': %s", p->clean, path,
				 ERRSTR(errno));
		goto out;
	}
	/* no hard links here: a (reflink) copy does as well */
	ret = qp_tmp_name(path, &tmp);
	if (ret < 0) {
		qp_err_set(err, ret, "out of memory");
		goto out;
	}
	ret = qp_copy_file(p->clean, tmp, NULL, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-revision-copy");
	ret = qp_rename(tmp, path, err);
	if (ret < 0)
		unlink(tmp);
out:
	if (ret == 0)
		qp_step("reflink-revision");
	free(tmp);
	free(path);
	return ret;
}

/* Keeps the newest @keep revisions. */
int reflink_prune(const struct reflink_paths *p, int keep, struct qp_err *err)
{
	struct reflink_rev *r;
	size_t n;
	int ret;

	if (keep < 0)
		keep = 0;
	ret = reflink_revs_list(p, &r, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i + (size_t)keep < n; i++) {
		ret = qp_unlink(r[i].path, err);
		if (ret < 0)
			break;
		qp_step("reflink-prune");
	}
	reflink_revs_free(r, n);
	return ret;
}

/* ---- precache ------------------------------------------------------------- */

/* A precache is usable when it has the clean image's size and mtime. */
bool reflink_precache_valid(const struct reflink_paths *p)
{
	struct stat c, pc;

	if (stat(p->clean, &c) < 0 || stat(p->precache, &pc) < 0)
		return false;
	return c.st_size == pc.st_size && c.st_mtim.tv_sec == pc.st_mtim.tv_sec &&
	       c.st_mtim.tv_nsec == pc.st_mtim.tv_nsec && c.st_ino != pc.st_ino;
}

/* Copies @from to a temporary next to @to, then renames it over @to.  With
 * @same_mtime the copy keeps the source's times. */
int reflink_copy_into_place(const char *from, const char *to, bool same_mtime, unsigned fsflags,
			    const char *step, struct qp_err *err)
{
	char *tmp = NULL;
	struct stat st;
	int ret;

	if (stat(from, &st) < 0)
		return qp_err_set(err, -errno, "cannot stat '%s': %s", from, ERRSTR(errno));
	ret = qp_tmp_name(to, &tmp);
	if (ret < 0)
		return qp_err_set(err, ret, "out of memory");
	ret = qp_copy_file_f(from, tmp, NULL, fsflags, err);
	if (ret < 0)
		goto out;
	qp_step(step);
	if (same_mtime) {
		struct timespec ts[2] = { st.st_atim, st.st_mtim };

		if (utimensat(AT_FDCWD, tmp, ts, 0) < 0) {
			ret = qp_err_set(err, -errno, "cannot set the times of '%s': %s", tmp,
					 ERRSTR(errno));
			goto out;
		}
	}
	ret = qp_rename_f(tmp, to, fsflags, err);
	if (ret == 0)
		qp_step(step);
out:
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	return ret;
}

/* Rebuilds the precache after the clean image changed.  Best effort: the
 * change is already committed, and a start copies the clean image without it. */
void reflink_precache_build(const struct reflink_paths *p)
{
	struct qp_err ignored = { 0 };

	if (!reflink_exists(p->clean))
		return;
	reflink_copy_into_place(p->clean, p->precache, true, 0, "reflink-precache", &ignored);
}

/* ---- creating files ------------------------------------------------------- */

int reflink_create_sparse(const char *path, uint64_t size, unsigned fsflags, struct qp_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int ret = 0;

	if (fd < 0)
		return qp_err_set(err, -errno, "cannot create '%s': %s", path, ERRSTR(errno));
	if (ftruncate(fd, (off_t)size) < 0 || (!(fsflags & QP_FS_NOSYNC) && fsync(fd) < 0))
		ret = qp_err_set(err, -errno, "cannot size '%s' to %llu bytes: %s", path,
				 (unsigned long long)size, ERRSTR(errno));
	close(fd);
	if (ret < 0)
		unlink(path);
	return ret;
}

/* Creates a sparse image of @size at @path through a temporary file. */
int reflink_create_sparse_in_place(const char *path, uint64_t size, unsigned fsflags,
				   struct qp_err *err)
{
	char *tmp = NULL;
	int ret = qp_tmp_name(path, &tmp);

	if (ret < 0)
		return qp_err_set(err, ret, "out of memory");
	ret = reflink_create_sparse(tmp, size, fsflags, err);
	if (ret == 0)
		ret = qp_rename_f(tmp, path, fsflags, err);
	if (ret < 0)
		unlink(tmp);
	else
		qp_step("reflink-create");
	free(tmp);
	return ret;
}

int reflink_fsync_path(const char *path, struct qp_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return qp_err_set(err, -errno, "cannot open '%s': %s", path, ERRSTR(errno));
	if (fsync(fd) < 0)
		ret = qp_err_set(err, -errno, "cannot sync '%s': %s", path, ERRSTR(errno));
	close(fd);
	return ret;
}

/* ---- commit --------------------------------------------------------------- */

/* Makes @from (the dirty image or the import staging) the clean image; the
 * old clean image becomes the next revision. */
int reflink_commit(struct qp_volume *v, const struct reflink_paths *p, const char *from,
		   struct qp_err *err)
{
	int rtk = qp_vol_rtk(v);
	struct reflink_rev *r;
	size_t n;
	int ret;

	if (rtk > 0) {
		ret = reflink_revs_list(p, &r, &n, err);
		if (ret < 0)
			return ret;
		ret = reflink_make_revision(p, reflink_revs_next(r, n), err);
		reflink_revs_free(r, n);
		if (ret < 0)
			return ret;
	}
	ret = reflink_prune(p, rtk, err);
	if (ret < 0)
		return ret;
	ret = reflink_fsync_path(from, err);
	if (ret < 0)
		return ret;
	ret = qp_unlink(p->precache, err);
	if (ret < 0)
		return ret;
	qp_step("reflink-precache-drop");
	ret = qp_rename(from, p->clean, err);
	if (ret < 0)
		return ret;
	qp_step("reflink-commit");
	if (rtk != -1)
		reflink_precache_build(p);
	return 0;
}
