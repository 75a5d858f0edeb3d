/* The file-reflink pool driver (layout in reflink.h).
 *
 * Every change on disk is a rename of a fully written temporary file, a hard
 * link or an unlink, each followed by an fsync of the folder, and each ends
 * with qp_step() so the crash tests can stop the process between any two of
 * them.  Whatever step a crash interrupts, the clean image holds the old or
 * the new committed content, and the next start removes what was left over.
 */
#include "reflink.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static const char *const reflink_params[] = {
	"revisions_to_keep", "dir_path", "setup_check", "ephemeral_volatile", NULL,
};
static const char *const reflink_required[] = { "dir_path", NULL };

static const char *const families[] = { ".img", "-dirty.img", "-precache.img", "-import.img" };

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

/* ---- small helpers -------------------------------------------------------- */

static struct reflink_pool *to_pool(struct qp_pool *p)
{
	return (struct reflink_pool *)p;
}

static const char *vm_name(const struct qp_volume *v)
{
	return v->vm && v->vm->name ? v->vm->name : "?";
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static const char *errstr(int e, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

#define ERRSTR(e) errstr((e), (char[128]){ 0 }, 128)

static int missing(const struct qp_volume *v, const char *path, struct qp_err *err)
{
	return qp_err_set(err, -ENOENT, "volume '%s:%s' is missing its image '%s'", vm_name(v),
			  v->name, path);
}

static void paths_release(struct reflink_paths *p)
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

/* Paths of the volume with @vid in @pool; released with paths_release. */
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
	p->base = qp_strdupf("%s/%s", to_pool(pool)->dir_path, vid);
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
	paths_release(p);
	return qp_err_set(err, -ENOMEM, "out of memory");
}

static int paths_get(struct qp_volume *v, struct reflink_paths *p, struct qp_err *err)
{
	return paths_for(v->pool, v->vid, p, err);
}

/* Clean image of the source of a snap_on_start volume; *out owned. */
static int src_clean(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths sp;
	int ret;

	if (!v->src)
		return qp_err_set(err, -ENOENT, "volume '%s:%s' has no source volume", vm_name(v),
				  v->name);
	ret = paths_for(v->src->pool, v->src->vid, &sp, err);
	if (ret < 0)
		return ret;
	*out = sp.clean;
	sp.clean = NULL;
	paths_release(&sp);
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

enum { SCAN_ALL, SCAN_INCOMPLETE };

/* Removes the volume's files (all of them, or only temporaries and the import
 * staging).  A missing folder is not an error. */
static int remove_files(const struct reflink_paths *p, int which, struct qp_err *err)
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
		if (which == SCAN_INCOMPLETE && !strchr(rest, '~') && strcmp(rest, "-import.img"))
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

static void revs_free(struct reflink_rev *r, size_t n)
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

/* Revisions sorted by N, oldest first; *out freed with revs_free. */
static int revs_list(const struct reflink_paths *p, struct reflink_rev **out, size_t *n,
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
	revs_free(r, cnt);
	return ret;
}

static long revs_next(const struct reflink_rev *r, size_t n)
{
	return n ? r[n - 1].n + 1 : 1;
}

/* Makes the current clean image revision @num (a hard link: the clean image
 * is never written in place, only replaced).  Nothing to do without one. */
static int make_revision(const struct reflink_paths *p, long num, struct qp_err *err)
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
static int prune(const struct reflink_paths *p, int keep, struct qp_err *err)
{
	struct reflink_rev *r;
	size_t n;
	int ret;

	if (keep < 0)
		keep = 0;
	ret = revs_list(p, &r, &n, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i + (size_t)keep < n; i++) {
		ret = qp_unlink(r[i].path, err);
		if (ret < 0)
			break;
		qp_step("reflink-prune");
	}
	revs_free(r, n);
	return ret;
}

/* ---- precache ------------------------------------------------------------- */

/* A precache is usable when it has the clean image's size and mtime. */
static bool precache_valid(const struct reflink_paths *p)
{
	struct stat c, pc;

	if (stat(p->clean, &c) < 0 || stat(p->precache, &pc) < 0)
		return false;
	return c.st_size == pc.st_size && c.st_mtim.tv_sec == pc.st_mtim.tv_sec &&
	       c.st_mtim.tv_nsec == pc.st_mtim.tv_nsec && c.st_ino != pc.st_ino;
}

/* Copies @from to a temporary next to @to, then renames it over @to.  With
 * @same_mtime the copy keeps the source's times. */
static int copy_into_place(const char *from, const char *to, bool same_mtime, const char *step,
			   struct qp_err *err)
{
	char *tmp = NULL;
	struct stat st;
	int ret;

	if (stat(from, &st) < 0)
		return qp_err_set(err, -errno, "cannot stat '%s': %s", from, ERRSTR(errno));
	ret = qp_tmp_name(to, &tmp);
	if (ret < 0)
		return qp_err_set(err, ret, "out of memory");
	ret = qp_copy_file(from, tmp, NULL, err);
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
	ret = qp_rename(tmp, to, err);
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
static void precache_build(const struct reflink_paths *p)
{
	struct qp_err ignored = { 0 };

	if (!exists(p->clean))
		return;
	copy_into_place(p->clean, p->precache, true, "reflink-precache", &ignored);
}

/* ---- creating files ------------------------------------------------------- */

static int create_sparse(const char *path, uint64_t size, struct qp_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int ret = 0;

	if (fd < 0)
		return qp_err_set(err, -errno, "cannot create '%s': %s", path, ERRSTR(errno));
	if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0)
		ret = qp_err_set(err, -errno, "cannot size '%s' to %llu bytes: %s", path,
				 (unsigned long long)size, ERRSTR(errno));
	close(fd);
	if (ret < 0)
		unlink(path);
	return ret;
}

/* Creates a sparse image of @size at @path through a temporary file. */
static int create_sparse_in_place(const char *path, uint64_t size, struct qp_err *err)
{
	char *tmp = NULL;
	int ret = qp_tmp_name(path, &tmp);

	if (ret < 0)
		return qp_err_set(err, ret, "out of memory");
	ret = create_sparse(tmp, size, err);
	if (ret == 0)
		ret = qp_rename(tmp, path, err);
	if (ret < 0)
		unlink(tmp);
	else
		qp_step("reflink-create");
	free(tmp);
	return ret;
}

static int fsync_path(const char *path, struct qp_err *err)
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
static int commit(struct qp_volume *v, const struct reflink_paths *p, const char *from,
		  struct qp_err *err)
{
	int rtk = qp_vol_rtk(v);
	struct reflink_rev *r;
	size_t n;
	int ret;

	if (rtk > 0) {
		ret = revs_list(p, &r, &n, err);
		if (ret < 0)
			return ret;
		ret = make_revision(p, revs_next(r, n), err);
		revs_free(r, n);
		if (ret < 0)
			return ret;
	}
	ret = prune(p, rtk, err);
	if (ret < 0)
		return ret;
	ret = fsync_path(from, err);
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
		precache_build(p);
	return 0;
}

/* ---- pool callbacks ------------------------------------------------------- */

static int reflink_pool_init(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = to_pool(p);
	const char *dir = qp_kv_get(&p->config, "dir_path");
	const char *s;
	long long rtk = 1;
	bool eph = false;
	size_t len;

	if (!dir || !*dir)
		return qp_err_set(err, -EINVAL, "pool '%s' needs option 'dir_path'", p->name);
	s = qp_kv_get(&p->config, "revisions_to_keep");
	if (s && qp_parse_int(s, -1, INT_MAX, &rtk) < 0)
		return qp_err_set(err, -EINVAL,
				  "invalid revisions_to_keep '%s' for pool '%s': not an integer >= -1",
				  s, p->name);
	s = qp_kv_get(&p->config, "ephemeral_volatile");
	if (s && qp_parse_bool(s, &eph) < 0)
		return qp_err_set(err, -EINVAL,
				  "invalid ephemeral_volatile '%s' for pool '%s': not a boolean", s,
				  p->name);
	s = qp_kv_get(&p->config, "setup_check");
	if (s && qp_parse_bool(s, &(bool){ 0 }) < 0)
		return qp_err_set(err, -EINVAL, "invalid setup_check '%s' for pool '%s': not a boolean",
				  s, p->name);
	free(rp->dir_path);
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (dir[0] == '/') {
		rp->dir_path = strndup(dir, len);
	} else {
		/* a relative path is taken from the current folder, once */
		char *cwd = getcwd(NULL, 0);

		rp->dir_path = cwd ? qp_strdupf("%s/%.*s", cwd, (int)len, dir) : NULL;
		free(cwd);
	}
	if (!rp->dir_path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	p->revisions_to_keep = (int)rtk;
	p->ephemeral_volatile = eph;
	return 0;
}

static void reflink_pool_release(struct qp_pool *p)
{
	free(to_pool(p)->dir_path);
	to_pool(p)->dir_path = NULL;
}

/* Tries a FICLONE between two temporary files in @dir: 0 when it works, 1
 * when the file system cannot share extents, or a negative errno. */
static int try_reflink(const char *dir, struct qp_err *err)
{
	char *a = NULL, *b = NULL, *base = qp_strdupf("%s/.reflink-check", dir);
	char block[4096];
	int fa = -1, fb = -1, ret = -ENOMEM;

	if (!base || qp_tmp_name(base, &a) < 0 || qp_tmp_name(base, &b) < 0) {
		qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	fa = open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	fb = fa < 0 ? -1 : open(b, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fa < 0 || fb < 0) {
		ret = qp_err_set(err, -errno, "cannot create a file in '%s': %s", dir,
				 ERRSTR(errno));
		goto out;
	}
	memset(block, 'q', sizeof(block));
	if (write(fa, block, sizeof(block)) != (ssize_t)sizeof(block)) {
		ret = qp_err_set(err, -EIO, "cannot write a file in '%s'", dir);
		goto out;
	}
	ret = ioctl(fb, FICLONE, fa) == 0 ? 0 : 1;
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	if (a)
		unlink(a);
	if (b)
		unlink(b);
	free(a);
	free(b);
	free(base);
	return ret;
}

static int reflink_pool_setup(struct qp_pool *p, struct qp_err *err)
{
	const char *dir = to_pool(p)->dir_path;
	const char *s = qp_kv_get(&p->config, "setup_check");
	bool check = true;
	char *sub;
	int ret;

	if (s && qp_parse_bool(s, &check) < 0)
		return qp_err_set(err, -EINVAL, "invalid setup_check '%s' for pool '%s': not a boolean",
				  s, p->name);
	qp_kv_set(&p->config, "setup_check", NULL);
	ret = qp_mkdirs(dir, err);
	if (ret < 0)
		return ret;
	if (check) {
		ret = try_reflink(dir, err);
		if (ret < 0)
			return ret;
		if (ret > 0)
			return qp_err_set(err, -EOPNOTSUPP,
					  "filesystem of '%s' does not support reflinks; to use it "
					  "anyway with slower full copies, add -o setup_check=False",
					  dir);
	}
	for (int i = 0; i < 2; i++) {
		sub = qp_strdupf("%s/%s", dir, i ? "vm-templates" : "appvms");
		if (!sub)
			return qp_err_set(err, -ENOMEM, "out of memory");
		ret = qp_mkdirs(sub, err);
		free(sub);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int reflink_pool_state(struct qp_pool *p, enum qp_pool_state *out, struct qp_err *err)
{
	struct stat st;

	if (stat(to_pool(p)->dir_path, &st) == 0) {
		*out = S_ISDIR(st.st_mode) ? QP_POOL_ONLINE : QP_POOL_OFFLINE;
		return 0;
	}
	if (errno == ENOENT || errno == ENOTDIR) {
		*out = QP_POOL_OFFLINE;
		return 0;
	}
	return qp_err_set(err, -errno, "cannot check pool '%s': '%s': %s", p->name,
			  to_pool(p)->dir_path, ERRSTR(errno));
}

static int reflink_pool_usage(struct qp_pool *p, uint64_t *size, uint64_t *usage,
			      struct qp_err *err)
{
	struct statvfs sv;

	if (statvfs(to_pool(p)->dir_path, &sv) < 0)
		return qp_err_set(err, -errno, "cannot get the usage of pool '%s': '%s': %s",
				  p->name, to_pool(p)->dir_path, ERRSTR(errno));
	*size = (uint64_t)sv.f_frsize * sv.f_blocks;
	*usage = (uint64_t)sv.f_frsize * (sv.f_blocks - sv.f_bfree);
	return 0;
}

static int reflink_pool_set(struct qp_pool *p, const char *key, const char *val,
			    struct qp_err *err)
{
	char num[24];
	long long rtk;
	bool b;

	if (!strcmp(key, "revisions_to_keep")) {
		if (qp_parse_int(val, -1, INT_MAX, &rtk) < 0)
			return qp_err_set(err, -EINVAL,
					  "invalid revisions_to_keep '%s': not an integer >= -1", val);
		snprintf(num, sizeof(num), "%lld", rtk);
		if (qp_kv_set(&p->config, key, num) < 0)
			return qp_err_set(err, -ENOMEM, "out of memory");
		p->revisions_to_keep = (int)rtk;
		return 0;
	}
	if (!strcmp(key, "ephemeral_volatile")) {
		if (qp_parse_bool(val, &b) < 0)
			return qp_err_set(err, -EINVAL,
					  "invalid ephemeral_volatile '%s': not a boolean", val);
		if (qp_kv_set(&p->config, key, b ? "True" : "False") < 0)
			return qp_err_set(err, -ENOMEM, "out of memory");
		p->ephemeral_volatile = b;
		return 0;
	}
	return qp_err_set(err, -EINVAL, "setting option '%s' is not supported for pool '%s'", key,
			  p->name);
}

/* Creates the VM's folder, refusing when the pool's folder is gone: an
 * unplugged drive must not be replaced by folders on the root file system. */
static int make_vm_dir(const struct qp_volume *v, const struct reflink_paths *p,
		       struct qp_err *err)
{
	const char *dir = to_pool(v->pool)->dir_path;
	struct stat st;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return qp_err_set(err, -ENODEV, "pool '%s' is offline: folder '%s' is missing",
				  v->pool->name, dir);
	return qp_mkdirs(p->dir, err);
}

/* ---- volume callbacks ----------------------------------------------------- */

static int reflink_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume,
			   char **out, struct qp_err *err)
{
	(void)p;
	*out = qp_strdupf("%s/%s/%s", vm->cls == QP_TEMPLATEVM ? "vm-templates" : "appvms",
			  vm->name, volume);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

static int reflink_vol_create(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = remove_files(&p, SCAN_ALL, err);
	if (ret == 0 && v->save_on_stop && !v->snap_on_start) {
		ret = create_sparse_in_place(p.clean, v->size, err);
		if (ret == 0 && qp_vol_rtk(v) != -1)
			precache_build(&p);
	}
	paths_release(&p);
	return ret;
}

static int reflink_vol_remove(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = remove_files(&p, SCAN_ALL, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot remove volume '%s:%s'", vm_name(v), v->name);
	} else if (rmdir(p.dir) == 0) {
		qp_fsync_dir(p.dir);
		qp_step("reflink-rmdir");
	}
	paths_release(&p);
	return ret;
}

/* Start of a snap_on_start volume: our clean path becomes a hard link to the
 * source's clean image (which is_outdated compares against), dirty a copy. */
static int start_snapshot(struct qp_volume *v, const struct reflink_paths *p, struct qp_err *err)
{
	char *src = NULL, *tmp = NULL;
	struct stat st;
	int ret;

	ret = src_clean(v, &src, err);
	if (ret < 0)
		return ret;
	if (stat(src, &st) < 0) {
		ret = missing(v->src, src, err);
		goto out;
	}
	ret = qp_unlink(p->dirty, err);
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
	ret = qp_rename(tmp, p->clean, err);
	if (ret < 0) {
		unlink(tmp);
		goto out;
	}
	qp_step("reflink-link-source");
	ret = copy_into_place(p->clean, p->dirty, false, "reflink-snapshot", err);
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

	if (!exists(p->clean))
		return missing(v, p->clean, err);
	if (qp_vol_rtk(v) == -1) {
		/* snapshots disabled: the VM writes the committed image in place */
		ret = prune(p, 0, err);
		if (ret == 0)
			ret = qp_unlink(p->precache, err);
		if (ret == 0)
			ret = qp_rename(p->clean, p->dirty, err);
		if (ret == 0)
			qp_step("reflink-start-in-place");
		return ret;
	}
	if (exists(p->precache) && !precache_valid(p)) {
		ret = qp_unlink(p->precache, err);
		if (ret < 0)
			return ret;
		qp_step("reflink-precache-stale");
	}
	if (exists(p->precache)) {
		ret = qp_rename(p->precache, p->dirty, err);
		if (ret == 0)
			qp_step("reflink-start-precache");
		return ret;
	}
	return copy_into_place(p->clean, p->dirty, false, "reflink-start-copy", err);
}

static int reflink_vol_start(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = remove_files(&p, SCAN_INCOMPLETE, err);
	if (ret < 0)
		goto out;
	if (v->save_on_stop && exists(p.dirty))
		goto out;	/* left by a crash: resume it */
	if (v->snap_on_start) {
		ret = start_snapshot(v, &p, err);
	} else if (v->save_on_stop) {
		ret = start_origin(v, &p, err);
	} else {
		ret = qp_unlink(p.dirty, err);
		if (ret == 0)
			ret = create_sparse_in_place(p.dirty, v->size, err);
	}
out:
	paths_release(&p);
	return ret;
}

static int reflink_vol_stop(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (v->save_on_stop) {
		if (!exists(p.dirty))
			goto out;	/* not started */
		if (qp_vol_rtk(v) == -1 && !v->snap_on_start) {
			ret = fsync_path(p.dirty, err);
			if (ret == 0)
				ret = qp_rename(p.dirty, p.clean, err);
			if (ret == 0)
				qp_step("reflink-stop-in-place");
		} else {
			ret = commit(v, &p, p.dirty, err);
		}
	} else {
		ret = qp_unlink(p.dirty, err);
		if (ret == 0) {
			qp_step("reflink-drop-dirty");
			ret = qp_unlink(p.clean, err);
		}
		if (ret == 0)
			qp_step("reflink-drop-link");
	}
out:
	paths_release(&p);
	return ret;
}

static int reflink_vol_block_device(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	*out = p.dirty;
	p.dirty = NULL;
	paths_release(&p);
	return 0;
}

static int reflink_vol_export(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct reflink_paths p;
	char *path = NULL;
	int ret;

	if (v->save_on_stop) {
		ret = paths_get(v, &p, err);
		if (ret < 0)
			return ret;
		path = p.clean;
		p.clean = NULL;
		paths_release(&p);
	} else if (v->snap_on_start) {
		ret = src_clean(v, &path, err);
		if (ret < 0)
			return ret;
	} else {
		return qp_err_set(err, -EOPNOTSUPP,
				  "cannot export volume '%s:%s': it is volatile", vm_name(v), v->name);
	}
	if (!exists(path)) {
		ret = qp_err_set(err, -ENOENT, "cannot export volume '%s:%s': image '%s' is missing",
				 vm_name(v), v->name, path);
		free(path);
		return ret;
	}
	*out = path;
	return 0;
}

static int reflink_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	*out = false;
	if (!v->save_on_stop)
		return 0;
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	*out = exists(p.dirty);
	paths_release(&p);
	return 0;
}

static int reflink_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err)
{
	struct reflink_paths p;
	struct stat ours, theirs;
	char *src = NULL;
	int ret;

	*out = false;
	if (!v->snap_on_start)
		return 0;
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (stat(p.clean, &ours) < 0)
		goto out;	/* not started */
	ret = src_clean(v, &src, err);
	if (ret < 0)
		goto out;
	*out = stat(src, &theirs) < 0 || theirs.st_ino != ours.st_ino ||
	       theirs.st_dev != ours.st_dev;
out:
	free(src);
	paths_release(&p);
	return ret;
}

static int reflink_vol_verify(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	char *src = NULL;
	int ret;

	if (v->snap_on_start) {
		ret = src_clean(v, &src, err);
		if (ret == 0 && !exists(src))
			ret = missing(v, src, err);
		free(src);
		return ret;
	}
	if (!v->save_on_stop)
		return 0;
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	/* with snapshots disabled, a crash leaves only the dirty image */
	if (!exists(p.clean) && !exists(p.dirty))
		ret = missing(v, p.clean, err);
	paths_release(&p);
	return ret;
}

static int reflink_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage,
			     struct qp_err *err)
{
	struct reflink_paths p;
	struct stat st;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (stat(p.dirty, &st) == 0 || stat(p.clean, &st) == 0) {
		*size = (uint64_t)st.st_size;
		*usage = (uint64_t)st.st_blocks * 512;
	} else {
		*size = v->size;
		*usage = 0;
	}
	paths_release(&p);
	return 0;
}

static int reflink_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
				 struct qp_err *err)
{
	struct qp_revision *res = NULL;
	struct reflink_paths p;
	struct reflink_rev *r = NULL;
	size_t cnt = 0;
	int ret;

	*out = NULL;
	*n = 0;
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	ret = revs_list(&p, &r, &cnt, err);
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
	revs_free(r, cnt);
	paths_release(&p);
	return ret;
}

static int reflink_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err)
{
	struct reflink_rev *r = NULL, *pick = NULL;
	struct reflink_paths p;
	struct stat st;
	size_t n = 0;
	int ret;

	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "cannot revert volume '%s:%s': it is in use",
				 vm_name(v), v->name);
		goto out;
	}
	ret = revs_list(&p, &r, &n, err);
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
				 vm_name(v), v->name);
		goto out;
	}
	/* the current content is kept as the newest revision, the chosen one used up */
	ret = make_revision(&p, revs_next(r, n), err);
	if (ret == 0)
		ret = qp_unlink(p.precache, err);
	if (ret == 0) {
		qp_step("reflink-precache-drop");
		ret = qp_rename(pick->path, p.clean, err);
	}
	if (ret < 0) {
		qp_err_prefix(err, "cannot revert volume '%s:%s'", vm_name(v), v->name);
		goto out;
	}
	qp_step("reflink-revert");
	if (qp_vol_rtk(v) != -1)
		precache_build(&p);
	if (stat(p.clean, &st) == 0)
		v->size = (uint64_t)st.st_size;
out:
	revs_free(r, n);
	paths_release(&p);
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
	ret = fsync_path(tmp, err);
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
		precache_build(p);
out:
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	return ret;
}

static int reflink_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err)
{
	struct reflink_paths p;
	int ret = paths_get(v, &p, err);

	if (ret < 0)
		return ret;
	if (exists(p.dirty)) {
		if (truncate(p.dirty, (off_t)size) < 0)
			ret = qp_err_set(err, -errno, "cannot resize '%s': %s", p.dirty,
					 ERRSTR(errno));
		else
			ret = fsync_path(p.dirty, err);
	} else if (v->save_on_stop && !v->snap_on_start && exists(p.clean)) {
		ret = resize_clean(v, &p, size, err);
	}
	if (ret == 0)
		v->size = size;
	paths_release(&p);
	return ret;
}

static int reflink_vol_import_begin(struct qp_volume *v, uint64_t size, char **out,
				    struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	if (!v->save_on_stop)
		return qp_err_set(err, -EOPNOTSUPP,
				  "volume '%s:%s' is not saved on stop",
				  vm_name(v), v->name);
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use",
				 vm_name(v), v->name);
		goto out;
	}
	ret = make_vm_dir(v, &p, err);
	if (ret == 0)
		ret = qp_unlink(p.import, err);
	if (ret == 0)
		ret = create_sparse(p.import, size, err);
	if (ret < 0)
		goto out;
	qp_step("reflink-import-begin");
	*out = p.import;
	p.import = NULL;
out:
	paths_release(&p);
	return ret;
}

static int reflink_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err)
{
	struct reflink_paths p;
	struct stat st;
	int ret = paths_get(v, &p, err);

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
	ret = commit(v, &p, p.import, err);
	if (ret == 0)
		v->size = (uint64_t)st.st_size;
out:
	paths_release(&p);
	return ret;
}

static int reflink_vol_import_volume(struct qp_volume *v, struct qp_volume *src,
				     struct qp_err *err)
{
	struct reflink_paths p;
	char *from = NULL;
	int ret;

	if (!src->pool || !src->pool->drv || !src->pool->drv->vol_export)
		return qp_err_set(err, -EINVAL, "volume '%s:%s' has no pool",
				  vm_name(src), src->name);
	if (!v->save_on_stop)
		return qp_err_set(err, -EOPNOTSUPP,
				  "volume '%s:%s' is not saved on stop",
				  vm_name(v), v->name);
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	if (exists(p.dirty)) {
		ret = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use",
				 vm_name(v), v->name);
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
	paths_release(&p);
	return ret;
}

static int reflink_vol_recover(struct qp_volume *v, struct qp_err *err)
{
	struct reflink_paths p;
	int ret;

	if (v->save_on_stop)
		return 0;	/* the next start resumes the dirty image */
	ret = paths_get(v, &p, err);
	if (ret < 0)
		return ret;
	ret = qp_unlink(p.dirty, err);
	if (ret == 0)
		ret = qp_unlink(p.clean, err);
	if (ret < 0)
		qp_err_prefix(err, "cannot recover volume '%s:%s'", vm_name(v), v->name);
	paths_release(&p);
	return ret;
}

const struct qp_driver qp_driver_reflink = {
	.name = "file-reflink",
	.params = reflink_params,
	.required = reflink_required,
	.pool_size = sizeof(struct reflink_pool),
	.pool_init = reflink_pool_init,
	.pool_release = reflink_pool_release,
	.pool_setup = reflink_pool_setup,
	.pool_state = reflink_pool_state,
	.pool_usage = reflink_pool_usage,
	.pool_set = reflink_pool_set,
	.vol_vid = reflink_vol_vid,
	.vol_create = reflink_vol_create,
	.vol_remove = reflink_vol_remove,
	.vol_start = reflink_vol_start,
	.vol_stop = reflink_vol_stop,
	.vol_block_device = reflink_vol_block_device,
	.vol_export = reflink_vol_export,
	.vol_is_dirty = reflink_vol_is_dirty,
	.vol_is_outdated = reflink_vol_is_outdated,
	.vol_verify = reflink_vol_verify,
	.vol_usage = reflink_vol_usage,
	.vol_revisions = reflink_vol_revisions,
	.vol_revert = reflink_vol_revert,
	.vol_resize = reflink_vol_resize,
	.vol_import_begin = reflink_vol_import_begin,
	.vol_import_end = reflink_vol_import_end,
	.vol_import_volume = reflink_vol_import_volume,
	.vol_recover = reflink_vol_recover,
};
