/* qpool state: the qubes.xml file under the state root.  Objects are in
 * objects.c, the XML format in state_xml.c.
 *
 * Saving goes through a temporary file, fsync, rename and an fsync of the
 * folder, so the file on disk is always either the old or the new state.
 * Writers hold an flock on qubes.xml.lock for as long as the state is open.
 */
#include "state_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_LOCK "qubes.xml.lock"

static const struct {
	const char *name;
	const char *color;
} default_labels[] = {
	{ "red", "0xcc0000" },	  { "orange", "0xf57900" }, { "yellow", "0xedd400" },
	{ "green", "0x73d216" },  { "gray", "0x555753" },   { "blue", "0x3465a4" },
	{ "purple", "0x75507b" }, { "black", "0x000000" },
};

/* ---- the file ---------------------------------------------------------- */

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static int state_write(struct qp_state *st, struct qp_err *err)
{
	char *path = NULL, *tmp = NULL, *buf = NULL;
	size_t len;
	int fd = -1, ret;

	ret = qp_state_format(st, &buf, &len, err);
	if (ret < 0)
		goto out;
	path = qp_strdupf("%s/%s", st->root, STATE_FILE);
	if (!path || qp_tmp_name(path, &tmp) < 0) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = qp_err_set(err, -errno, "cannot save state: cannot create '%s': %s", tmp,
				 strerror(errno));
		free(tmp);
		tmp = NULL;	/* not ours to remove */
		goto out;
	}
	ret = write_all(fd, buf, len);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		qp_err_set(err, ret, "cannot save state '%s': %s", path, strerror(-ret));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	ret = qp_fsync_dir(path);
	if (ret < 0) {
		qp_err_set(err, ret, "cannot save state '%s': fsync of its folder: %s", path,
			   strerror(-ret));
		goto out;
	}
	qp_step("state-save");
out:
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(path);
	free(buf);
	return ret;
}

int qp_state_save(struct qp_state *st, struct qp_err *err)
{
	if (!st->writable || !st->root)
		return qp_err_set(err, -EBADF, "cannot save state: not opened for writing");
	return state_write(st, err);
}

/* Reads the whole file; -ENOENT when it does not exist. */
static int read_file(const char *path, char **out, size_t *len, struct qp_err *err)
{
	struct stat sb;
	char *buf = NULL;
	size_t got = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		return qp_err_set(err, -errno, "cannot read '%s': %s", path, strerror(errno));
	}
	ret = fstat(fd, &sb) < 0 ? -errno : 0;
	if (ret == 0 && (size_t)sb.st_size > STATE_MAX_BYTES)
		ret = -EFBIG;
	if (ret == 0 && !(buf = malloc((size_t)sb.st_size + 1)))
		ret = -ENOMEM;
	while (ret == 0 && got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = r < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (ret < 0) {
		free(buf);
		return qp_err_set(err, ret, "cannot read '%s': %s", path, strerror(-ret));
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

static int state_lock(struct qp_state *st, struct qp_err *err)
{
	char *path = qp_strdupf("%s/%s", st->root, STATE_LOCK);
	int fd, ret = 0;

	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = qp_err_set(err, -errno, "cannot open lock '%s': %s", path, strerror(errno));
		goto out;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		ret = qp_err_set(err, -errno, "cannot lock '%s': %s", path, strerror(errno));
		close(fd);
		goto out;
	}
	st->lock_fd = fd;
out:
	free(path);
	return ret;
}

/* The state of a new root: the eight labels, the default pool and dom0. */
static int state_init_default(struct qp_state *st, struct qp_err *err)
{
	struct qp_kvlist cfg = { 0 };
	struct qp_pool *p = NULL;
	struct qp_domain *d0 = NULL;
	char *dir = qp_strdupf("%s/pool-default", st->root);
	int ret = -ENOMEM;

	for (size_t i = 0; i < sizeof(default_labels) / sizeof(default_labels[0]); i++)
		if (qp_state_add_label(st, (int)i + 1, default_labels[i].color,
				       default_labels[i].name) < 0)
			goto nomem;
	if (!dir || qp_kv_set(&cfg, "dir_path", dir) < 0 ||
	    qp_kv_set(&cfg, "revisions_to_keep", "1") < 0 ||
	    qp_kv_set(&cfg, "ephemeral_volatile", "False") < 0 ||
	    qp_kv_set(&cfg, "setup_check", "False") < 0)
		goto nomem;
	ret = qp_pool_new(st, "default", "file-reflink", &cfg, &p, err);
	if (ret == 0)
		ret = p->drv->pool_setup(p, err);
	if (ret < 0) {
		qp_err_prefix(err, "cannot create the default pool");
		goto out;
	}
	qp_kv_set(&p->config, "setup_check", NULL);	/* in case the driver kept it */
	if (qp_state_add_pool(st, p) < 0)
		goto nomem;
	p = NULL;
	d0 = qp_dom_new("dom0", QP_ADMINVM);
	if (!d0 || qp_kv_set(&d0->props, "label", "black") < 0 ||
	    qp_kv_set(&st->props, "default_pool", "default") < 0 || qp_state_add_dom(st, d0) < 0)
		goto nomem;
	d0 = NULL;
	qp_state_link(st);
	ret = 0;
	goto out;
nomem:
	ret = qp_err_set(err, -ENOMEM, "out of memory");
out:
	qp_dom_free(d0);
	qp_pool_free(p);
	qp_kv_release(&cfg);
	free(dir);
	return ret;
}

/* Loads the file, creating it under the lock when it is missing. */
static int state_load(struct qp_state *st, struct qp_err *err)
{
	char *path = qp_strdupf("%s/%s", st->root, STATE_FILE), *buf = NULL;
	bool locked_here = false;
	size_t len;
	int ret;

	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = read_file(path, &buf, &len, err);
	if (ret == -ENOENT && st->lock_fd < 0) {
		ret = state_lock(st, err);
		if (ret < 0)
			goto out;
		locked_here = true;
		ret = read_file(path, &buf, &len, err);	/* another process may have made it */
	}
	if (ret == -ENOENT) {
		ret = state_init_default(st, err);
		if (ret == 0)
			ret = state_write(st, err);
	} else if (ret == 0) {
		ret = qp_state_parse_into(st, buf, len, err);
		if (ret < 0)
			qp_err_prefix(err, "%s", path);
	}
out:
	if (locked_here) {
		close(st->lock_fd);
		st->lock_fd = -1;
	}
	free(buf);
	free(path);
	return ret;
}

/* Domains whose start mark comes from an earlier boot were running when the
 * machine went down: let the drivers clean their running copies. */
static int state_recover(struct qp_state *st, struct qp_err *err)
{
	const char *boot = qp_boot_id();
	bool changed = false;

	for (size_t i = 0; i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];
		bool skipped = false;

		if (!d->started || !strcmp(d->started, boot))
			continue;
		for (size_t j = 0; j < d->n_vols; j++) {
			struct qp_volume *v = d->vols[j];
			struct qp_pool *p = v->pool;
			enum qp_pool_state ps = QP_POOL_ONLINE;
			int ret;

			if (!p || !p->drv || !p->drv->vol_recover)
				continue;
			/* a drive that is away keeps the mark until it is back */
			if (p->drv->pool_state && (p->drv->pool_state(p, &ps, err) < 0 ||
						   ps != QP_POOL_ONLINE)) {
				skipped = true;
				continue;
			}
			ret = p->drv->vol_recover(v, err);
			if (ret < 0)
				return qp_err_prefix(err, "cannot recover volume '%s:%s'", d->name,
						     v->name);
		}
		if (!skipped) {
			free(d->started);
			d->started = NULL;
			changed = true;
		}
	}
	return changed ? qp_state_save(st, err) : 0;
}

int qp_state_open(const char *root, unsigned flags, struct qp_state **out, struct qp_err *err)
{
	struct qp_state *st = NULL;
	int ret;

	*out = NULL;
	if (flags & ~(unsigned)QP_STATE_WRITE)
		return qp_err_set(err, -EINVAL, "cannot open state: unknown flags 0x%x", flags);
	if (!root || !*root)
		return qp_err_set(err, -EINVAL, "cannot open state: no root folder");
	if (mkdir(root, 0755) < 0 && errno != EEXIST) {
		ret = qp_mkdirs(root, err);
		if (ret < 0)
			return ret;
	}
	st = qp_state_alloc();
	/* Pool paths are derived from the root: keep it absolute. */
	if (st)
		st->root = root[0] == '/' ? strdup(root) : realpath(root, NULL);
	if (!st || !st->root) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (flags & QP_STATE_WRITE) {
		ret = state_lock(st, err);
		if (ret < 0)
			goto out;
		st->writable = true;
	}
	ret = state_load(st, err);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < st->n_pools; i++) {
		if (!st->pools[i]->drv) {
			ret = qp_err_set(err, -EINVAL, "pool '%s' has unknown driver '%s'",
					 st->pools[i]->name, qp_pool_driver_name(st->pools[i]));
			goto out;
		}
	}
	if (flags & QP_STATE_WRITE) {
		ret = state_recover(st, err);
		if (ret < 0)
			goto out;
	}
	*out = st;
	return 0;
out:
	qp_state_free(st);
	return ret;
}
