/* The file-reflink pool driver (layout in reflink.h): its
 * parameters, pool callbacks and ops table.  Files and revisions are in
 * reflink_files.c, the volume callbacks in reflink_vol.c.
 *
 * Every change on disk is a rename of a fully written temporary file, a hard
 * link or an unlink, each followed by an fsync of the folder, and each ends
 * with qp_step() so the crash tests can stop the process between any two of
 * them.  Whatever step a crash interrupts, the clean image holds the old or
 * the new committed content, and the next start removes what was left over.
 */
#include "reflink_internal.h"

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
#include <unistd.h>

static const char *const reflink_params[] = {
	"revisions_to_keep", "dir_path", "setup_check", "ephemeral_volatile",
	"device", "key_file", "mount_point", NULL,
};
static const char *const reflink_required[] = { "dir_path", NULL };

/* ---- pool callbacks ------------------------------------------------------- */

static int reflink_pool_init(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	const char *dir = qp_kv_get(&p->config, "dir_path");
	const char *s;
	long long rtk = 1;
	bool eph = false;
	size_t len;
	int ret;

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
	ret = reflink_drive_init(p, err);
	if (ret < 0)
		return ret;
	p->revisions_to_keep = (int)rtk;
	p->ephemeral_volatile = eph;
	return 0;
}

static void reflink_pool_release(struct qp_pool *p)
{
	free(reflink_to_pool(p)->dir_path);
	free(reflink_to_pool(p)->mount_point);
	reflink_to_pool(p)->dir_path = NULL;
	reflink_to_pool(p)->mount_point = NULL;
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
	const char *dir = reflink_to_pool(p)->dir_path;
	const char *s = qp_kv_get(&p->config, "setup_check");
	bool check = true;
	char *sub;
	int ret;

	if (s && qp_parse_bool(s, &check) < 0)
		return qp_err_set(err, -EINVAL, "invalid setup_check '%s' for pool '%s': not a boolean",
				  s, p->name);
	qp_kv_set(&p->config, "setup_check", NULL);
	ret = reflink_drive_setup(p, err);
	if (ret < 0)
		return ret;
	ret = qp_mkdirs(dir, err);
	if (ret < 0)
		goto fail;
	if (check) {
		ret = try_reflink(dir, err);
		if (ret < 0)
			goto fail;
		if (ret > 0) {
			ret = qp_err_set(err, -EOPNOTSUPP,
					 "filesystem of '%s' does not support reflinks; to use it "
					 "anyway with slower full copies, add -o setup_check=False",
					 dir);
			goto fail;
		}
	}
	for (int i = 0; i < 2; i++) {
		sub = qp_strdupf("%s/%s", dir, i ? "vm-templates" : "appvms");
		if (!sub) {
			ret = qp_err_set(err, -ENOMEM, "out of memory");
			goto fail;
		}
		ret = qp_mkdirs(sub, err);
		free(sub);
		if (ret < 0)
			goto fail;
	}
	ret = reflink_drive_record(p, err);
	if (ret == 0)
		return 0;
fail:
	reflink_drive_undo(p);
	return ret;
}

static int reflink_pool_state(struct qp_pool *p, enum qp_pool_state *out, struct qp_err *err)
{
	struct stat st;

	if (qp_kv_get(&p->config, "fs_uuid"))
		return qp_drive_state(p, reflink_to_pool(p)->dir_path, out, err);
	if (stat(reflink_to_pool(p)->dir_path, &st) == 0) {
		*out = S_ISDIR(st.st_mode) ? QP_POOL_ONLINE : QP_POOL_OFFLINE;
		return 0;
	}
	if (errno == ENOENT || errno == ENOTDIR) {
		*out = QP_POOL_OFFLINE;
		return 0;
	}
	return qp_err_set(err, -errno, "cannot check pool '%s': '%s': %s", p->name,
			  reflink_to_pool(p)->dir_path, ERRSTR(errno));
}

static int reflink_pool_usage(struct qp_pool *p, uint64_t *size, uint64_t *usage,
			      struct qp_err *err)
{
	struct statvfs sv;

	if (statvfs(reflink_to_pool(p)->dir_path, &sv) < 0)
		return qp_err_set(err, -errno, "cannot get the usage of pool '%s': '%s': %s",
				  p->name, reflink_to_pool(p)->dir_path, ERRSTR(errno));
	*size = (uint64_t)sv.f_frsize * sv.f_blocks;
	*usage = (uint64_t)sv.f_frsize * (sv.f_blocks - sv.f_bfree);
	return 0;
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
	.pool_set = qp_pool_set_base,
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
	.vol_discard = reflink_vol_discard,
	.pool_attach = reflink_pool_attach,
	.pool_detach = reflink_pool_detach,
};
