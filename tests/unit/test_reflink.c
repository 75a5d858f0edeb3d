/* Tests of the file-reflink driver and the file helpers on real file systems:
 * a loop-mounted btrfs image (reflinks), an ext4 image (plain sparse copies)
 * and a small tmpfs (a full disk).  Needs root; skips otherwise.
 *
 * The crash tests run this program again as a child with QPOOL_CRASH_AFTER=K,
 * so the child dies after the K-th step of a commit or revert, and check that
 * the volume holds its old or its new content and that the next start leaves
 * no stray files.
 */
#include "qpool.h"
#include "drivers/file-reflink/reflink.h"
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024ULL * 1024)

static char tmp[64];
static char btrfs_mnt[128], ext4_mnt[128], full_mnt[128];
static bool btrfs_up, ext4_up, full_up;
static char self[4096];		/* this program, run again for the crash tests */

struct env {
	struct qp_pool *pool;
	struct qp_domain *tpl, *app;
	struct qp_volume *troot;	/* origin */
	struct qp_volume *aroot;	/* snapshot of troot */
	struct qp_volume *avol;		/* volatile */
};

/* ---- fixtures -------------------------------------------------------------- */

static int run(char *const argv[])
{
	struct qp_err err = { 0 };
	int ret = qp_run(argv, NULL, &err);

	if (ret < 0)
		fprintf(stderr, "%s\n", err.msg);
	return ret;
}

static bool mount_image(const char *fs, const char *mnt, uint64_t size)
{
	char img[160], opt[32];
	int fd;

	snprintf(img, sizeof(img), "%s/%s.img", tmp, fs);
	fd = open(img, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		return false;
	close(fd);
	if (mkdir(mnt, 0755) < 0)
		return false;
	if (!strcmp(fs, "btrfs")) {
		if (run((char *[]){ "mkfs.btrfs", "-q", "-f", img, NULL }) < 0)
			return false;
	} else if (run((char *[]){ "mkfs.ext4", "-q", "-F", img, NULL }) < 0) {
		return false;
	}
	snprintf(opt, sizeof(opt), "loop");
	return run((char *[]){ "mount", "-o", opt, img, (char *)mnt, NULL }) == 0;
}

static void cleanup(void)
{
	if (btrfs_up)
		umount2(btrfs_mnt, MNT_DETACH);
	if (ext4_up)
		umount2(ext4_mnt, MNT_DETACH);
	if (full_up)
		umount2(full_mnt, MNT_DETACH);
	btrfs_up = ext4_up = full_up = false;
	if (tmp[0])
		run((char *[]){ "rm", "-rf", tmp, NULL });
	tmp[0] = '\0';
}

static struct qp_volume *add_vol(struct qp_domain *d, struct qp_pool *p, const char *name,
				 bool snap, bool save, uint64_t size)
{
	struct qp_volume *v = qp_vol_new(name);
	struct qp_err err = { 0 };

	if (!v || qp_dom_add_volume(d, v) < 0)
		abort();
	v->pool = p;
	free(v->pool_name);
	v->pool_name = strdup(p->name);
	free(v->vid);
	if (p->drv->vol_vid(p, d, name, &v->vid, &err) < 0)
		abort();
	v->snap_on_start = snap;
	v->save_on_stop = save;
	v->rw = true;
	v->size = size;
	return v;
}

/* A pool in @dir with a template (origin root), an AppVM (snapshot root of
 * the template's root, volatile volume). */
static int env_open(struct env *e, const char *dir, const char *rtk, const char *check,
		    bool setup, struct qp_err *err)
{
	struct qp_kvlist cfg = { 0 };
	int ret;

	memset(e, 0, sizeof(*e));
	qp_kv_set(&cfg, "dir_path", dir);
	qp_kv_set(&cfg, "revisions_to_keep", rtk);
	if (check)
		qp_kv_set(&cfg, "setup_check", check);
	ret = qp_pool_new(NULL, "testpool", "file-reflink", &cfg, &e->pool, err);
	qp_kv_release(&cfg);
	if (ret < 0)
		return ret;
	if (setup) {
		ret = e->pool->drv->pool_setup(e->pool, err);
		if (ret < 0)
			return ret;
	}
	e->tpl = qp_dom_new("fedora", QP_TEMPLATEVM);
	e->app = qp_dom_new("work", QP_APPVM);
	e->troot = add_vol(e->tpl, e->pool, "root", false, true, 16 * MiB);
	e->aroot = add_vol(e->app, e->pool, "root", true, false, 16 * MiB);
	e->aroot->src = e->troot;
	e->aroot->source = strdup(e->troot->vid);
	e->avol = add_vol(e->app, e->pool, "volatile", false, false, 8 * MiB);
	return 0;
}

static void env_close(struct env *e)
{
	qp_dom_free(e->tpl);
	qp_dom_free(e->app);
	qp_pool_free(e->pool);
	memset(e, 0, sizeof(*e));
}

static char *path_of(const struct env *e, const struct qp_volume *v, const char *suffix)
{
	return qp_strdupf("%s/%s%s", ((struct reflink_pool *)e->pool)->dir_path, v->vid, suffix);
}

static bool write_at(const char *path, off_t off, const char *s)
{
	int fd = open(path, O_WRONLY);
	bool ok = fd >= 0 && pwrite(fd, s, strlen(s), off) == (ssize_t)strlen(s);

	if (fd >= 0)
		close(fd);
	return ok;
}

/* The bytes at @off as a string of strlen(@like) characters; static buffer. */
static const char *read_at(const char *path, off_t off, size_t n)
{
	static char buf[256];
	int fd = open(path, O_RDONLY);
	ssize_t got = fd >= 0 ? pread(fd, buf, n, off) : -1;

	if (fd >= 0)
		close(fd);
	buf[got > 0 ? got : 0] = '\0';
	return buf;
}

static bool has(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Number of files in @dir whose names contain '~' or "-import.img". */
static int strays(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strchr(de->d_name, '~') || strstr(de->d_name, "-import.img"))
			n++;
	closedir(d);
	return n;
}

static size_t n_revisions(struct qp_volume *v)
{
	struct qp_revision *r = NULL;
	struct qp_err err = { 0 };
	size_t n = 0;

	if (v->pool->drv->vol_revisions(v, &r, &n, &err) < 0)
		return (size_t)-1;
	qp_revisions_free(r, n);
	return n;
}

/* Start, write @s at 1 MiB, stop (commit). */
static int cycle(struct env *e, struct qp_volume *v, const char *s)
{
	const struct qp_driver *d = e->pool->drv;
	struct qp_err err = { 0 };
	char *dirty = path_of(e, v, "-dirty.img");
	int ret = d->vol_start(v, &err);

	if (ret == 0 && !write_at(dirty, MiB, s))
		ret = -EIO;
	if (ret == 0)
		ret = d->vol_stop(v, &err);
	if (ret < 0)
		fprintf(stderr, "cycle: %s\n", err.msg);
	free(dirty);
	return ret;
}

/* ---- helpers ---------------------------------------------------------------- */

TEST(run_captures_output_and_errors)
{
	struct qp_err err = { 0 };
	char *out = NULL;

	CHECK_EQ_INT(qp_run((char *[]){ "sh", "-c", "echo hello; echo to-err >&2", NULL }, &out,
			    &err), 0);
	CHECK_EQ_STR(out, "hello\n");
	free(out);
	CHECK_EQ_INT(qp_run((char *[]){ "sh", "-c", "echo first >&2; echo second >&2; exit 3",
					NULL }, NULL, &err), -EIO);
	CHECK_EQ_STR(err.msg, "'sh' failed: first");
	CHECK_EQ_INT(qp_run((char *[]){ "no-such-command-qp", NULL }, NULL, &err), -ENOENT);
	CHECK(strstr(err.msg, "'no-such-command-qp'") != NULL);
}

TEST(tmp_names_and_durable_ops)
{
	struct qp_err err = { 0 };
	char *a = NULL, *b = NULL, *dir = qp_strdupf("%s/x/y/z", tmp), *f;

	CHECK_EQ_INT(qp_tmp_name("/p/vol.img", &a), 0);
	CHECK_EQ_INT(qp_tmp_name("/p/vol.img", &b), 0);
	CHECK_EQ_INT(strlen(a), strlen("/p/vol.img~") + 8);
	CHECK(strncmp(a, "/p/vol.img~", 11) == 0);
	CHECK(strcmp(a, b) != 0);
	CHECK_EQ_INT(qp_mkdirs(dir, &err), 0);
	CHECK_EQ_INT(qp_mkdirs(dir, &err), 0);
	f = qp_strdupf("%s/f", dir);
	close(open(f, O_CREAT | O_WRONLY, 0644));
	CHECK_EQ_INT(qp_rename(f, a, &err), -ENOENT);	/* /p does not exist */
	CHECK(strstr(err.msg, "cannot rename") != NULL);
	CHECK_EQ_INT(qp_unlink(f, &err), 0);
	CHECK_EQ_INT(qp_unlink(f, &err), 0);	/* already gone */
	CHECK(!has(f));
	CHECK_EQ_INT(qp_fsync_dir(dir), 0);
	free(a);
	free(b);
	free(f);
	free(dir);
}

TEST(copy_reflinks_on_btrfs)
{
	struct qp_err err = { 0 };
	char *src, *dst;
	bool reflinked = false;
	int fd;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	src = qp_strdupf("%s/copy-src", btrfs_mnt);
	dst = qp_strdupf("%s/copy-dst", btrfs_mnt);
	fd = open(src, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0 && ftruncate(fd, 4 * MiB) == 0);
	close(fd);
	CHECK(write_at(src, 2 * MiB, "reflinked data"));
	CHECK_EQ_INT(qp_copy_file(src, dst, &reflinked, &err), 0);
	CHECK(reflinked);
	CHECK_EQ_STR(read_at(dst, 2 * MiB, 14), "reflinked data");
	/* the destination must be new */
	CHECK_EQ_INT(qp_copy_file(src, dst, &reflinked, &err), -EEXIST);
	CHECK(strstr(err.msg, dst) != NULL);
	free(src);
	free(dst);
}

TEST(copy_keeps_holes_without_reflinks)
{
	struct qp_err err = { 0 };
	bool reflinked = true;
	struct stat st;
	char *src, *dst;
	int fd;

	if (!ext4_up)
		SKIP("no ext4 mount");
	src = qp_strdupf("%s/sparse-src", ext4_mnt);
	dst = qp_strdupf("%s/sparse-dst", ext4_mnt);
	fd = open(src, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0 && ftruncate(fd, 1024 * MiB) == 0);
	close(fd);
	CHECK(write_at(src, 0, "head"));
	CHECK(write_at(src, 700 * MiB + 5, "middle"));
	CHECK(write_at(src, 1024 * MiB - 4, "tail"));
	CHECK_EQ_INT(qp_copy_file(src, dst, &reflinked, &err), 0);
	CHECK(!reflinked);
	CHECK_EQ_INT(stat(dst, &st), 0);
	CHECK_EQ_INT(st.st_size, 1024 * MiB);
	CHECK((uint64_t)st.st_blocks * 512 < MiB);
	CHECK_EQ_INT(st.st_mode & 0777, 0644);
	CHECK_EQ_STR(read_at(dst, 0, 4), "head");
	CHECK_EQ_STR(read_at(dst, 700 * MiB + 5, 6), "middle");
	CHECK_EQ_STR(read_at(dst, 1024 * MiB - 4, 4), "tail");
	unlink(src);
	unlink(dst);
	free(src);
	free(dst);
}

TEST(copy_reports_a_full_disk)
{
	struct qp_err err = { 0 };
	char *src, *dst;
	char block[65536];
	int fd;

	if (!btrfs_up || !full_up)
		SKIP("no btrfs or tmpfs mount");
	src = qp_strdupf("%s/big", btrfs_mnt);
	dst = qp_strdupf("%s/big-copy", full_mnt);
	memset(block, 'x', sizeof(block));
	fd = open(src, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	for (int i = 0; i < 128; i++)	/* 8 MiB of data into a 4 MiB tmpfs */
		CHECK(write(fd, block, sizeof(block)) == (ssize_t)sizeof(block));
	close(fd);
	CHECK_EQ_INT(qp_copy_file(src, dst, NULL, &err), -ENOSPC);
	CHECK(strstr(err.msg, "no space left on device") != NULL);
	CHECK(!has(dst));
	unlink(src);
	free(src);
	free(dst);
}

/* ---- pools ------------------------------------------------------------------ */

TEST(setup_on_btrfs)
{
	struct qp_err err = { 0 };
	enum qp_pool_state state;
	uint64_t size = 0, usage = 0;
	struct env e;
	char *dir, *sub;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	dir = qp_strdupf("%s/setup", btrfs_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "1", "True", true, &err), 0);
	CHECK(qp_kv_get(&e.pool->config, "setup_check") == NULL);
	sub = qp_strdupf("%s/appvms", dir);
	CHECK(has(sub));
	free(sub);
	sub = qp_strdupf("%s/vm-templates", dir);
	CHECK(has(sub));
	free(sub);
	CHECK_EQ_INT(e.pool->drv->pool_state(e.pool, &state, &err), 0);
	CHECK_EQ_INT(state, QP_POOL_ONLINE);
	CHECK_EQ_INT(e.pool->drv->pool_usage(e.pool, &size, &usage, &err), 0);
	CHECK(size > 400 * MiB && size <= 512 * MiB);
	CHECK(usage > 0 && usage < size);
	CHECK_EQ_INT(e.pool->drv->pool_set(e.pool, "revisions_to_keep", "3", &err), 0);
	CHECK_EQ_INT(e.pool->revisions_to_keep, 3);
	CHECK_EQ_STR(qp_kv_get(&e.pool->config, "revisions_to_keep"), "3");
	CHECK_EQ_INT(e.pool->drv->pool_set(e.pool, "revisions_to_keep", "-2", &err), -EINVAL);
	CHECK_EQ_INT(e.pool->drv->pool_set(e.pool, "ephemeral_volatile", "true", &err), 0);
	CHECK_EQ_STR(qp_kv_get(&e.pool->config, "ephemeral_volatile"), "True");
	CHECK(e.pool->ephemeral_volatile);
	CHECK_EQ_INT(e.pool->drv->pool_set(e.pool, "dir_path", "/x", &err), -EINVAL);
	CHECK_EQ_STR(err.msg, "setting option 'dir_path' is not supported for pool 'testpool'");
	env_close(&e);
	/* an absent folder is an unplugged drive */
	CHECK_EQ_INT(env_open(&e, "/nonexistent/qpool-test", "1", NULL, false, &err), 0);
	CHECK_EQ_INT(e.pool->drv->pool_state(e.pool, &state, &err), 0);
	CHECK_EQ_INT(state, QP_POOL_OFFLINE);
	CHECK_EQ_INT(e.pool->drv->vol_create(e.troot, &err), -ENODEV);
	CHECK(!has("/nonexistent"));
	env_close(&e);
	free(dir);
}

TEST(setup_check_refuses_ext4)
{
	struct qp_err err = { 0 };
	struct env e;
	char *dir;

	if (!ext4_up)
		SKIP("no ext4 mount");
	dir = qp_strdupf("%s/pool", ext4_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "1", NULL, true, &err), -EOPNOTSUPP);
	CHECK(strstr(err.msg, "does not support reflinks") != NULL);
	CHECK(strstr(err.msg, "setup_check=False") != NULL);
	env_close(&e);
	CHECK_EQ_INT(env_open(&e, dir, "1", "False", true, &err), 0);
	CHECK(qp_kv_get(&e.pool->config, "setup_check") == NULL);
	/* the driver still works, with copies */
	CHECK_EQ_INT(e.pool->drv->vol_create(e.troot, &err), 0);
	CHECK_EQ_INT(cycle(&e, e.troot, "on ext4"), 0);
	char *clean = path_of(&e, e.troot, ".img");
	CHECK_EQ_STR(read_at(clean, MiB, 7), "on ext4");
	free(clean);
	CHECK_EQ_INT(e.pool->drv->vol_remove(e.troot, &err), 0);
	env_close(&e);
	free(dir);
}

/* ---- volumes ---------------------------------------------------------------- */

TEST(origin_commits_and_keeps_revisions)
{
	struct qp_err err = { 0 };
	struct qp_revision *r = NULL;
	struct env e;
	char *dir, *clean, *dirty, *pre, *path = NULL;
	const struct qp_driver *d;
	struct stat st;
	uint64_t size, usage;
	bool dirty_flag;
	size_t n = 0;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	dir = qp_strdupf("%s/origin", btrfs_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "1", NULL, true, &err), 0);
	d = e.pool->drv;
	CHECK_EQ_STR(e.troot->vid, "vm-templates/fedora/root");
	CHECK_EQ_STR(e.aroot->vid, "appvms/work/root");
	clean = path_of(&e, e.troot, ".img");
	dirty = path_of(&e, e.troot, "-dirty.img");
	pre = path_of(&e, e.troot, "-precache.img");

	CHECK_EQ_INT(d->vol_create(e.troot, &err), 0);
	CHECK_EQ_INT(stat(clean, &st), 0);
	CHECK_EQ_INT(st.st_size, 16 * MiB);
	CHECK_EQ_INT(st.st_blocks, 0);
	CHECK(has(pre));
	CHECK_EQ_INT(d->vol_verify(e.troot, &err), 0);

	CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
	CHECK(has(dirty) && !has(pre));	/* the precache became the running copy */
	CHECK_EQ_INT(d->vol_is_dirty(e.troot, &dirty_flag, &err), 0);
	CHECK(dirty_flag);
	CHECK_EQ_INT(d->vol_block_device(e.troot, &path, &err), 0);
	CHECK_EQ_STR(path, dirty);
	free(path);
	CHECK(write_at(dirty, MiB, "one"));
	/* export gives the content from before the start */
	CHECK_EQ_INT(d->vol_export(e.troot, &path, &err), 0);
	CHECK_EQ_STR(path, clean);
	free(path);
	CHECK_EQ_INT(d->vol_revert(e.troot, "1", &err), -EBUSY);
	CHECK_EQ_INT(d->vol_stop(e.troot, &err), 0);
	CHECK(!has(dirty) && has(pre));
	CHECK_EQ_INT(d->vol_is_dirty(e.troot, &dirty_flag, &err), 0);
	CHECK(!dirty_flag);
	CHECK_EQ_STR(read_at(clean, MiB, 3), "one");
	CHECK_EQ_STR(read_at(pre, MiB, 3), "one");
	CHECK_EQ_INT(n_revisions(e.troot), 1);

	/* rtk 1: the older revision is pruned */
	CHECK_EQ_INT(cycle(&e, e.troot, "two"), 0);
	CHECK_EQ_INT(d->vol_revisions(e.troot, &r, &n, &err), 0);
	CHECK_EQ_INT(n, 1);
	if (n == 1) {
		CHECK_EQ_STR(r[0].id, "2");
		CHECK_EQ_INT(strlen(r[0].time), 19);
	}
	qp_revisions_free(r, n);

	/* rtk 2 keeps two, oldest first */
	CHECK_EQ_INT(d->pool_set(e.pool, "revisions_to_keep", "2", &err), 0);
	CHECK_EQ_INT(cycle(&e, e.troot, "six"), 0);
	CHECK_EQ_INT(cycle(&e, e.troot, "ten"), 0);
	CHECK_EQ_INT(d->vol_revisions(e.troot, &r, &n, &err), 0);
	CHECK_EQ_INT(n, 2);
	if (n == 2) {
		CHECK_EQ_STR(r[0].id, "3");
		CHECK_EQ_STR(r[1].id, "4");
	}
	qp_revisions_free(r, n);

	/* revert to 4 ("six"): the current content becomes revision 5 */
	CHECK_EQ_INT(d->vol_revert(e.troot, "9", &err), -ENOENT);
	CHECK(strstr(err.msg, "revision '9'") != NULL);
	CHECK_EQ_INT(d->vol_revert(e.troot, "4", &err), 0);
	CHECK_EQ_STR(read_at(clean, MiB, 3), "six");
	CHECK_EQ_STR(read_at(pre, MiB, 3), "six");
	CHECK_EQ_INT(d->vol_revisions(e.troot, &r, &n, &err), 0);
	CHECK_EQ_INT(n, 2);
	if (n == 2) {
		CHECK_EQ_STR(r[0].id, "3");
		CHECK_EQ_STR(r[1].id, "5");
	}
	qp_revisions_free(r, n);
	CHECK_EQ_INT(d->vol_revert(e.troot, "5", &err), 0);
	CHECK_EQ_STR(read_at(clean, MiB, 3), "ten");

	/* rtk 0 keeps none */
	CHECK_EQ_INT(d->pool_set(e.pool, "revisions_to_keep", "0", &err), 0);
	CHECK_EQ_INT(cycle(&e, e.troot, "zero"), 0);
	CHECK_EQ_INT(n_revisions(e.troot), 0);

	/* resize a stopped origin, then a running one */
	CHECK_EQ_INT(d->vol_resize(e.troot, 32 * MiB, &err), 0);
	CHECK_EQ_INT(stat(clean, &st), 0);
	CHECK_EQ_INT(st.st_size, 32 * MiB);
	CHECK_EQ_INT(e.troot->size, 32 * MiB);
	CHECK_EQ_STR(read_at(clean, MiB, 4), "zero");
	CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
	CHECK_EQ_INT(d->vol_resize(e.troot, 48 * MiB, &err), 0);
	CHECK_EQ_INT(d->vol_usage(e.troot, &size, &usage, &err), 0);
	CHECK_EQ_INT(size, 48 * MiB);
	CHECK_EQ_INT(d->vol_stop(e.troot, &err), 0);
	CHECK_EQ_INT(stat(clean, &st), 0);
	CHECK_EQ_INT(st.st_size, 48 * MiB);

	/* snapshots disabled: the clean image is used in place */
	CHECK_EQ_INT(d->pool_set(e.pool, "revisions_to_keep", "-1", &err), 0);
	CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
	CHECK(!has(clean) && has(dirty) && !has(pre));
	CHECK(write_at(dirty, MiB, "inplace"));
	CHECK_EQ_INT(d->vol_stop(e.troot, &err), 0);
	CHECK(has(clean) && !has(dirty));
	CHECK_EQ_STR(read_at(clean, MiB, 7), "inplace");
	CHECK_EQ_INT(strays(dir), 0);

	CHECK_EQ_INT(d->vol_remove(e.troot, &err), 0);
	CHECK(!has(clean) && !has(pre));
	char *vmdir = qp_strdupf("%s/vm-templates/fedora", dir);
	CHECK(!has(vmdir));
	free(vmdir);
	env_close(&e);
	free(clean);
	free(dirty);
	free(pre);
	free(dir);
}

TEST(snapshot_follows_template)
{
	struct qp_err err = { 0 };
	const struct qp_driver *d;
	struct env e;
	char *dir, *aclean, *adirty, *vdirty, *path = NULL;
	bool outdated = true;
	struct stat st;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	dir = qp_strdupf("%s/snap", btrfs_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "1", NULL, true, &err), 0);
	d = e.pool->drv;
	aclean = path_of(&e, e.aroot, ".img");
	adirty = path_of(&e, e.aroot, "-dirty.img");
	vdirty = path_of(&e, e.avol, "-dirty.img");

	CHECK_EQ_INT(d->vol_create(e.troot, &err), 0);
	CHECK_EQ_INT(d->vol_create(e.aroot, &err), 0);
	CHECK_EQ_INT(d->vol_create(e.avol, &err), 0);
	CHECK(!has(aclean));
	CHECK_EQ_INT(cycle(&e, e.troot, "template v1"), 0);
	CHECK_EQ_INT(d->vol_verify(e.aroot, &err), 0);
	CHECK_EQ_INT(d->vol_export(e.aroot, &path, &err), 0);
	CHECK(path && strstr(path, "vm-templates/fedora/root.img"));
	free(path);
	CHECK_EQ_INT(d->vol_export(e.avol, &path, &err), -EOPNOTSUPP);

	e.aroot->size = 1;	/* follows the source at start */
	CHECK_EQ_INT(d->vol_start(e.aroot, &err), 0);
	CHECK_EQ_INT(d->vol_start(e.avol, &err), 0);
	CHECK_EQ_INT(e.aroot->size, 16 * MiB);
	CHECK_EQ_STR(read_at(adirty, MiB, 11), "template v1");
	CHECK_EQ_INT(stat(vdirty, &st), 0);
	CHECK_EQ_INT(st.st_size, 8 * MiB);
	CHECK_EQ_INT(d->vol_is_outdated(e.aroot, &outdated, &err), 0);
	CHECK(!outdated);
	CHECK(write_at(adirty, MiB, "appvm change"));

	/* the template commits while the AppVM runs */
	CHECK_EQ_INT(cycle(&e, e.troot, "template v2"), 0);
	CHECK_EQ_INT(d->vol_is_outdated(e.aroot, &outdated, &err), 0);
	CHECK(outdated);
	CHECK_EQ_STR(read_at(adirty, MiB, 12), "appvm change");

	CHECK_EQ_INT(d->vol_stop(e.aroot, &err), 0);
	CHECK_EQ_INT(d->vol_stop(e.avol, &err), 0);
	CHECK(!has(aclean) && !has(adirty) && !has(vdirty));
	CHECK_EQ_INT(d->vol_is_outdated(e.aroot, &outdated, &err), 0);
	CHECK(!outdated);

	/* a fresh start sees the new template and none of the old changes */
	CHECK_EQ_INT(d->vol_start(e.aroot, &err), 0);
	CHECK_EQ_STR(read_at(adirty, MiB, 11), "template v2");
	/* recovery after a crash discards the running copy */
	CHECK_EQ_INT(d->vol_recover(e.aroot, &err), 0);
	CHECK(!has(aclean) && !has(adirty));

	CHECK_EQ_INT(d->vol_remove(e.aroot, &err), 0);
	CHECK_EQ_INT(d->vol_remove(e.avol, &err), 0);
	CHECK_EQ_INT(d->vol_remove(e.troot, &err), 0);
	env_close(&e);
	free(aclean);
	free(adirty);
	free(vdirty);
	free(dir);
}

TEST(import_and_clone)
{
	struct qp_err err = { 0 };
	const struct qp_driver *d;
	struct env e;
	char *dir, *clean, *path = NULL;
	struct qp_volume *priv;
	struct stat st;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	dir = qp_strdupf("%s/import", btrfs_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "1", NULL, true, &err), 0);
	d = e.pool->drv;
	clean = path_of(&e, e.troot, ".img");
	CHECK_EQ_INT(d->vol_create(e.troot, &err), 0);

	CHECK_EQ_INT(d->vol_import_begin(e.troot, 20 * MiB, &path, &err), 0);
	CHECK(path && strstr(path, "-import.img"));
	CHECK(path && write_at(path, MiB, "imported"));
	CHECK_EQ_INT(d->vol_import_end(e.troot, true, &err), 0);
	CHECK(path && !has(path));
	free(path);
	CHECK_EQ_INT(e.troot->size, 20 * MiB);
	CHECK_EQ_STR(read_at(clean, MiB, 8), "imported");
	CHECK_EQ_INT(n_revisions(e.troot), 1);

	CHECK_EQ_INT(d->vol_import_begin(e.troot, 4 * MiB, &path, &err), 0);
	CHECK_EQ_INT(d->vol_import_end(e.troot, false, &err), 0);
	CHECK(path && !has(path));
	free(path);
	CHECK_EQ_STR(read_at(clean, MiB, 8), "imported");

	/* clone the template's root into the AppVM's private */
	priv = add_vol(e.app, e.pool, "private", false, true, 2 * MiB);
	CHECK_EQ_INT(d->vol_create(priv, &err), 0);
	CHECK_EQ_INT(d->vol_import_volume(priv, e.troot, &err), 0);
	CHECK_EQ_INT(priv->size, 20 * MiB);
	path = path_of(&e, priv, ".img");
	CHECK_EQ_STR(read_at(path, MiB, 8), "imported");
	CHECK_EQ_INT(stat(path, &st), 0);
	CHECK_EQ_INT(st.st_size, 20 * MiB);
	free(path);

	/* no import while running */
	CHECK_EQ_INT(d->vol_start(priv, &err), 0);
	CHECK_EQ_INT(d->vol_import_begin(priv, MiB, &path, &err), -EBUSY);
	CHECK_EQ_INT(d->vol_stop(priv, &err), 0);
	CHECK_EQ_INT(strays(dir), 0);
	env_close(&e);
	free(clean);
	free(dir);
}

/* ---- crashes ---------------------------------------------------------------- */

/* Child: open the pool in argv[2] and stop (commit) or revert the template root. */
static int crash_child(const char *dir, const char *op)
{
	struct qp_err err = { 0 };
	struct env e;
	int ret;

	ret = env_open(&e, dir, "2", NULL, false, &err);
	if (ret == 0 && !strcmp(op, "stop"))
		ret = e.pool->drv->vol_stop(e.troot, &err);
	else if (ret == 0)
		ret = e.pool->drv->vol_revert(e.troot, op, &err);
	if (ret < 0)
		fprintf(stderr, "crash child: %s\n", err.msg);
	env_close(&e);
	return ret < 0 ? 1 : 0;
}

/* Runs the child with QPOOL_CRASH_AFTER=@k; returns its exit status. */
static int spawn_crash(const char *dir, const char *op, int k)
{
	char num[16];
	int status;
	pid_t pid;

	snprintf(num, sizeof(num), "%d", k);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		setenv("QPOOL_CRASH_AFTER", num, 1);
		execl(self, "test_reflink", "--crash-child", dir, op, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

TEST(crash_during_commit)
{
	struct qp_err err = { 0 };
	const struct qp_driver *d;
	char *dir, *vmdir, *clean, *dirty;
	int k, status = 99;
	struct env e;

	if (!btrfs_up)
		SKIP("no btrfs mount");
	dir = qp_strdupf("%s/crash", btrfs_mnt);
	CHECK_EQ_INT(env_open(&e, dir, "2", NULL, true, &err), 0);
	d = e.pool->drv;
	vmdir = qp_strdupf("%s/vm-templates/fedora", dir);
	clean = path_of(&e, e.troot, ".img");
	dirty = path_of(&e, e.troot, "-dirty.img");
	for (k = 1; status == 99 && k < 60; k++) {
		CHECK_EQ_INT(d->vol_remove(e.troot, &err), 0);
		CHECK_EQ_INT(d->vol_create(e.troot, &err), 0);
		CHECK_EQ_INT(cycle(&e, e.troot, "old1"), 0);
		CHECK_EQ_INT(cycle(&e, e.troot, "old2"), 0);
		CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
		CHECK(write_at(dirty, MiB, "new!"));
		status = spawn_crash(dir, "stop", k);
		CHECK(status == 99 || status == 0);
		const char *now = read_at(clean, MiB, 4);
		if (strcmp(now, "old2") && strcmp(now, "new!"))
			harness_fail_at("after crash at step %d: clean holds '%s'", k, now);
		CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
		if (strays(vmdir))
			harness_fail_at("after crash at step %d: %d stray files", k, strays(vmdir));
		CHECK_EQ_INT(d->vol_stop(e.troot, &err), 0);
		CHECK_EQ_STR(read_at(clean, MiB, 4), "new!");
		CHECK(n_revisions(e.troot) <= 2);
	}
	CHECK(k > 3);	/* a commit has several steps */
	CHECK_EQ_INT(status, 0);

	/* revert to revision holding "old1" */
	status = 99;
	for (k = 1; status == 99 && k < 60; k++) {
		struct qp_revision *r = NULL;
		size_t n = 0;

		CHECK_EQ_INT(d->vol_remove(e.troot, &err), 0);
		CHECK_EQ_INT(d->vol_create(e.troot, &err), 0);
		CHECK_EQ_INT(cycle(&e, e.troot, "old1"), 0);
		CHECK_EQ_INT(cycle(&e, e.troot, "old2"), 0);
		CHECK_EQ_INT(d->vol_revisions(e.troot, &r, &n, &err), 0);
		CHECK_EQ_INT(n, 2);
		status = n == 2 ? spawn_crash(dir, r[1].id, k) : -1;
		qp_revisions_free(r, n);
		CHECK(status == 99 || status == 0);
		const char *now = read_at(clean, MiB, 4);
		if (strcmp(now, "old1") && strcmp(now, "old2"))
			harness_fail_at("after crash at revert step %d: clean holds '%s'", k, now);
		CHECK_EQ_INT(d->vol_start(e.troot, &err), 0);
		if (strays(vmdir))
			harness_fail_at("after crash at revert step %d: stray files", k);
		CHECK_EQ_INT(d->vol_stop(e.troot, &err), 0);
	}
	CHECK_EQ_INT(status, 0);
	env_close(&e);
	free(vmdir);
	free(clean);
	free(dirty);
	free(dir);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--crash-child"))
		return crash_child(argv[2], argv[3]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!realpath(argv[0], self))
		snprintf(self, sizeof(self), "/proc/self/exe");
	unsetenv("QPOOL_CRASH_AFTER");
	if (geteuid() != 0) {
		printf("skipped: test_reflink needs root for loop mounts\n");
		return 0;
	}
	snprintf(tmp, sizeof(tmp), "/tmp/qp-reflink-XXXXXX");
	if (!mkdtemp(tmp)) {
		printf("skipped: cannot make a temporary folder\n");
		return 0;
	}
	atexit(cleanup);
	snprintf(btrfs_mnt, sizeof(btrfs_mnt), "%s/btrfs", tmp);
	snprintf(ext4_mnt, sizeof(ext4_mnt), "%s/ext4", tmp);
	snprintf(full_mnt, sizeof(full_mnt), "%s/full", tmp);
	btrfs_up = mount_image("btrfs", btrfs_mnt, 512 * MiB);
	ext4_up = mount_image("ext4", ext4_mnt, 256 * MiB);
	full_up = mkdir(full_mnt, 0755) == 0 &&
		  mount("tmpfs", full_mnt, "tmpfs", 0, "size=4m") == 0;
	if (!btrfs_up && !ext4_up) {
		printf("skipped: cannot mount btrfs or ext4 images\n");
		return 0;
	}
	RUN(run_captures_output_and_errors);
	RUN(tmp_names_and_durable_ops);
	RUN(copy_reflinks_on_btrfs);
	RUN(copy_keeps_holes_without_reflinks);
	RUN(copy_reports_a_full_disk);
	RUN(setup_on_btrfs);
	RUN(setup_check_refuses_ext4);
	RUN(origin_commits_and_keeps_revisions);
	RUN(snapshot_follows_template);
	RUN(import_and_clone);
	RUN(crash_during_commit);
	return harness_done();
}
