/* The linux-kernel pool driver (layout in kernel.h): read-only volumes
 * that serve a VM the modules of its kernel version. */
#include "kernel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const kernel_params[] = { "dir_path", NULL };
static const char *const kernel_required[] = { NULL };

static inline struct kernel_pool *kernel_to_pool(struct qp_pool *p)
{
	return (struct kernel_pool *)p;
}

/* strerror(e) starting lowercase, in @buf. */
static const char *errstr(int e, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}
#define ERRSTR(e) errstr((e), (char[128]){ 0 }, 128)

int kernel_version_valid(const char *version)
{
	if (!version || !*version || strchr(version, '/') || strstr(version, "..") ||
	    !strcmp(version, "."))
		return -EINVAL;
	return 0;
}

/* ---- pool callbacks ------------------------------------------------------- */

static int kernel_pool_init(struct qp_pool *p, struct qp_err *err)
{
	struct kernel_pool *kp = kernel_to_pool(p);
	const char *dir = qp_kv_get(&p->config, "dir_path");
	size_t len;

	if (!dir)
		dir = QP_KERNEL_DEFAULT_DIR;
	if (!*dir)
		return qp_err_set(err, -EINVAL, "pool '%s' has an empty 'dir_path'", p->name);
	free(kp->dir_path);
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (dir[0] == '/') {
		kp->dir_path = strndup(dir, len);
	} else {
		/* a relative path is taken from the current folder, once */
		char *cwd = getcwd(NULL, 0);

		kp->dir_path = cwd ? qp_strdupf("%s/%.*s", cwd, (int)len, dir) : NULL;
		free(cwd);
	}
	if (!kp->dir_path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	/* Kernel volumes have no revisions. */
	p->revisions_to_keep = 0;
	return 0;
}

static void kernel_pool_release(struct qp_pool *p)
{
	free(kernel_to_pool(p)->dir_path);
	kernel_to_pool(p)->dir_path = NULL;
}

/* `pool add` creates nothing: the kernels are installed by the system.  The
 * folder is recorded (the default too) so the saved config is complete. */
static int kernel_pool_setup(struct qp_pool *p, struct qp_err *err)
{
	const char *dir = kernel_to_pool(p)->dir_path;
	struct stat st;

	if (stat(dir, &st) < 0)
		return qp_err_set(err, -errno, "kernel folder '%s': %s", dir, ERRSTR(errno));
	if (!S_ISDIR(st.st_mode))
		return qp_err_set(err, -ENOTDIR, "kernel folder '%s' is not a folder", dir);
	if (qp_kv_set(&p->config, "dir_path", dir) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

static int kernel_pool_state(struct qp_pool *p, enum qp_pool_state *out, struct qp_err *err)
{
	struct stat st;

	(void)err;
	*out = stat(kernel_to_pool(p)->dir_path, &st) == 0 && S_ISDIR(st.st_mode)
		       ? QP_POOL_ONLINE
		       : QP_POOL_OFFLINE;
	return 0;
}

/* Size and usage are both the bytes of the installed kernels' files. */
static int kernel_pool_usage(struct qp_pool *p, uint64_t *size, uint64_t *usage,
			     struct qp_err *err)
{
	const char *dir = kernel_to_pool(p)->dir_path;
	DIR *top = opendir(dir);
	struct dirent *e;
	uint64_t sum = 0;

	if (!top)
		return qp_err_set(err, -errno, "cannot get the usage of pool '%s': '%s': %s",
				  p->name, dir, ERRSTR(errno));
	while ((e = readdir(top))) {
		char *sub;
		DIR *d;
		struct dirent *f;

		if (kernel_version_valid(e->d_name) < 0)
			continue;
		sub = qp_strdupf("%s/%s", dir, e->d_name);
		d = sub ? opendir(sub) : NULL;
		while (d && (f = readdir(d))) {
			struct stat st;

			if (fstatat(dirfd(d), f->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISREG(st.st_mode))
				sum += (uint64_t)st.st_size;
		}
		if (d)
			closedir(d);
		free(sub);
	}
	closedir(top);
	*size = sum;
	*usage = sum;
	return 0;
}

static int kernel_pool_set(struct qp_pool *p, const char *key, const char *val,
			   struct qp_err *err)
{
	(void)val;
	return qp_err_set(err, -EINVAL, "setting option '%s' is not supported for pool '%s'", key,
			  p->name);
}

/* ---- volume callbacks ----------------------------------------------------- */

/* The refusal of every change of content. */
static int read_only(const struct qp_volume *v, struct qp_err *err)
{
	return qp_err_set(err, -EROFS,
			  "volume '%s:%s' is read-only: it is managed by %s pool '%s'",
			  v->vm ? v->vm->name : "", v->name, v->pool->drv->name, v->pool->name);
}

/* DIR/VID/@file of @v into *out (owned); the vid must be valid. */
static int kernel_file(struct qp_volume *v, const char *file, char **out, struct qp_err *err)
{
	*out = NULL;
	if (kernel_version_valid(v->vid) < 0)
		return qp_err_set(err, -EINVAL, "invalid kernel version '%s' of volume '%s:%s'",
				  v->vid, v->vm ? v->vm->name : "", v->name);
	*out = qp_strdupf("%s/%s/%s", kernel_to_pool(v->pool)->dir_path, v->vid, file);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

static int kernel_vol_vid(struct qp_pool *p, const struct qp_domain *vm, const char *volume,
			  char **out, struct qp_err *err)
{
	const char *ver = qp_dom_kernel(vm);

	(void)volume;
	*out = NULL;
	if (!ver || !*ver)
		return qp_err_set(err, -EINVAL, "VM '%s' has no kernel for pool '%s'", vm->name,
				  p->name);
	if (kernel_version_valid(ver) < 0)
		return qp_err_set(err, -EINVAL, "invalid kernel version '%s'", ver);
	*out = strdup(ver);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

static int kernel_vol_nothing(struct qp_volume *v, struct qp_err *err)
{
	(void)v;
	(void)err;
	return 0;
}

/* An installed kernel has DIR/VERSION/vmlinuz; an empty vid needs none. */
static int kernel_vol_verify(struct qp_volume *v, struct qp_err *err)
{
	struct stat st;
	char *path;
	int r;

	if (!v->vid || !*v->vid)
		return 0;
	r = kernel_file(v, "vmlinuz", &path, err);
	if (r < 0)
		return r;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		r = qp_err_set(err, -ENOENT, "kernel '%s' is not installed in pool '%s'", v->vid,
			       v->pool->name);
	free(path);
	return r;
}

/* modules.img of @v, or -ENODATA when there is nothing to attach. */
static int kernel_vol_modules(struct qp_volume *v, char **out, struct qp_err *err)
{
	struct stat st;
	int r;

	*out = NULL;
	if (!v->vid || !*v->vid)
		return qp_err_set(err, -ENODATA, "VM '%s' has no kernel", v->vm ? v->vm->name : "");
	r = kernel_file(v, "modules.img", out, err);
	if (r < 0)
		return r;
	if (stat(*out, &st) == 0 && S_ISREG(st.st_mode))
		return 0;
	free(*out);
	*out = NULL;
	return qp_err_set(err, -ENODATA, "kernel '%s' in pool '%s' has no modules.img", v->vid,
			  v->pool->name);
}

static int kernel_vol_export(struct qp_volume *v, char **out, struct qp_err *err)
{
	return kernel_vol_modules(v, out, err);
}

static int kernel_vol_false(struct qp_volume *v, bool *out, struct qp_err *err)
{
	(void)v;
	(void)err;
	*out = false;
	return 0;
}

static int kernel_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage,
			    struct qp_err *err)
{
	struct qp_err ignore;
	struct stat st;
	char *path;

	(void)err;
	*size = 0;
	*usage = 0;
	if (kernel_vol_modules(v, &path, &ignore) < 0)
		return 0;
	if (stat(path, &st) == 0) {
		*size = (uint64_t)st.st_size;
		*usage = (uint64_t)st.st_size;
	}
	free(path);
	return 0;
}

static int kernel_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
				struct qp_err *err)
{
	(void)v;
	(void)err;
	*out = NULL;
	*n = 0;
	return 0;
}

static int kernel_vol_revert(struct qp_volume *v, const char *rev, struct qp_err *err)
{
	(void)rev;
	return read_only(v, err);
}

static int kernel_vol_resize(struct qp_volume *v, uint64_t size, struct qp_err *err)
{
	(void)size;
	return read_only(v, err);
}

static int kernel_vol_import_begin(struct qp_volume *v, uint64_t size, char **out,
				   struct qp_err *err)
{
	(void)size;
	*out = NULL;
	return read_only(v, err);
}

static int kernel_vol_import_end(struct qp_volume *v, bool ok, struct qp_err *err)
{
	(void)v;
	(void)err;
	(void)ok;
	return 0;	/* no import ever began */
}

static int kernel_vol_import_volume(struct qp_volume *v, struct qp_volume *src,
				    struct qp_err *err)
{
	(void)src;
	return read_only(v, err);
}

const struct qp_driver qp_driver_kernel = {
	.name = "linux-kernel",
	.params = kernel_params,
	.required = kernel_required,
	.pool_size = sizeof(struct kernel_pool),
	.read_only = true,
	.pool_init = kernel_pool_init,
	.pool_release = kernel_pool_release,
	.pool_setup = kernel_pool_setup,
	.pool_state = kernel_pool_state,
	.pool_usage = kernel_pool_usage,
	.pool_set = kernel_pool_set,
	.vol_vid = kernel_vol_vid,
	.vol_create = kernel_vol_nothing,
	.vol_remove = kernel_vol_nothing,
	.vol_start = kernel_vol_verify,
	.vol_stop = kernel_vol_nothing,
	.vol_block_device = kernel_vol_modules,
	.vol_export = kernel_vol_export,
	.vol_is_dirty = kernel_vol_false,
	.vol_is_outdated = kernel_vol_false,
	.vol_verify = kernel_vol_verify,
	.vol_usage = kernel_vol_usage,
	.vol_revisions = kernel_vol_revisions,
	.vol_revert = kernel_vol_revert,
	.vol_resize = kernel_vol_resize,
	.vol_import_begin = kernel_vol_import_begin,
	.vol_import_end = kernel_vol_import_end,
	.vol_import_volume = kernel_vol_import_volume,
	.vol_recover = kernel_vol_nothing,
	.vol_discard = kernel_vol_nothing,
};
