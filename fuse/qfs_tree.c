/* qpoold's tree: qubes.xml loaded without the lock (it is replaced
 * atomically) and reloaded whenever its inode or times change, so that what
 * qpool does shows at once.
 *
 *	/			0755 root
 *	/<vm>/			0700, the VM's owner (feature qpool-owner) or root
 *	/<vm>/<volume>.img	0600 while the VM runs and the volume is rw,
 *				0400 otherwise; its size is the volume's size
 *
 * A stopped VM shows its committed content (a snapshot volume shows its
 * source's, e.g. an AppVM's root is its template's committed root); its
 * volatile volume has no content then and is absent from the tree. */
#include "fuse/qfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int qfs_ctx_init(struct qfs_ctx *c, const char *root)
{
	memset(c, 0, sizeof(*c));
	c->pid = getpid();
	c->root = strdup(root);
	c->xml = qp_strdupf("%s/qubes.xml", root);
	if (!c->root || !c->xml) {
		qfs_ctx_release(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->marks_lock, NULL);
	return 0;
}

void qfs_ctx_release(struct qfs_ctx *c)
{
	if (!c)
		return;
	qp_state_free(c->st);
	c->st = NULL;
	free(c->root);
	free(c->xml);
	c->root = c->xml = NULL;
}

static bool same_stamp(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reloads the state when qubes.xml changed.  Called with c->lock held.  A
 * file that fails to load keeps the state we have (a message is logged). */
static int refresh(struct qfs_ctx *c)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct stat sb;
	int r;

	if (stat(c->xml, &sb) < 0) {
		if (errno != ENOENT)
			return -errno;
		qp_state_free(c->st);
		c->st = NULL;
		return 0;
	}
	if (c->st && same_stamp(&sb, &c->stamp))
		return 0;
	r = qp_state_open(c->root, 0, &st, &err);
	if (r < 0) {
		fprintf(stderr, "qpoold: cannot reload '%s': %s\n", c->xml, err.msg);
		return c->st ? 0 : r;
	}
	qp_state_free(c->st);
	c->st = st;
	c->stamp = sb;
	return 0;
}

static bool vol_visible(const struct qp_volume *v)
{
	return qp_dom_started(v->vm) || v->save_on_stop || v->snap_on_start;
}

static void dom_node(const struct qfs_ctx *c, const struct qp_domain *d, struct qfs_node *n)
{
	struct qp_err err;
	bool has = false;

	memset(n, 0, sizeof(*n));
	n->kind = QFS_VMDIR;
	n->mtime = c->stamp.st_mtim;
	snprintf(n->vm, sizeof(n->vm), "%s", d->name);
	if (qp_dom_owner(d, &has, &n->uid, &n->gid, &err) < 0 || !has) {
		n->uid = 0;
		n->gid = 0;
	}
}

static void vol_node(const struct qfs_ctx *c, const struct qp_volume *v, struct qfs_node *n)
{
	dom_node(c, v->vm, n);
	n->kind = QFS_VOLFILE;
	snprintf(n->vol, sizeof(n->vol), "%s", v->name);
	n->writable = qp_dom_started(v->vm) && v->rw;
	n->size = v->size;
}

static struct qp_domain *find_vm(struct qp_state *st, const char *name, size_t len)
{
	for (size_t i = 0; st && i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];

		if (d->cls != QP_ADMINVM && strlen(d->name) == len && !strncmp(d->name, name, len))
			return d;
	}
	return NULL;
}

static struct qp_volume *find_vol(struct qp_domain *d, const char *file)
{
	size_t len = strlen(file), sl = strlen(QFS_SUFFIX);

	if (len <= sl || strcmp(file + len - sl, QFS_SUFFIX))
		return NULL;
	for (size_t i = 0; i < d->n_vols; i++) {
		struct qp_volume *v = d->vols[i];

		if (strlen(v->name) == len - sl && !strncmp(v->name, file, len - sl))
			return vol_visible(v) ? v : NULL;
	}
	return NULL;
}

/* The path of @v's content: the running copy while started, the committed
 * image otherwise.  *out owned by the caller. */
static int backing_path(struct qp_volume *v, char **out)
{
	struct qp_err err = { 0 };
	int r;

	if (!v->pool || !v->pool->drv)
		return -EIO;
	if (qp_dom_started(v->vm))
		r = v->pool->drv->vol_block_device(v, out, &err);
	else
		r = qp_vol_export(v, out, &err);
	if (r < 0)
		fprintf(stderr, "qpoold: cannot open volume '%s:%s': %s\n", v->vm->name, v->name,
			err.msg);
	return r;
}

int qfs_resolve(struct qfs_ctx *c, const char *path, struct qfs_node *out, char **backing)
{
	struct qp_domain *d;
	struct qp_volume *v;
	const char *slash;
	int r;

	if (backing)
		*backing = NULL;
	if (path[0] != '/')
		return -ENOENT;
	path++;
	pthread_mutex_lock(&c->lock);
	r = refresh(c);
	if (r < 0)
		goto out;
	if (!*path) {
		memset(out, 0, sizeof(*out));
		out->kind = QFS_ROOT;
		out->mtime = c->stamp.st_mtim;
		goto out;
	}
	slash = strchr(path, '/');
	r = -ENOENT;
	d = find_vm(c->st, path, slash ? (size_t)(slash - path) : strlen(path));
	if (!d)
		goto out;
	if (!slash) {
		dom_node(c, d, out);
		r = 0;
		goto out;
	}
	v = strchr(slash + 1, '/') ? NULL : find_vol(d, slash + 1);
	if (!v)
		goto out;
	vol_node(c, v, out);
	r = backing ? backing_path(v, backing) : 0;
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

int qfs_list(struct qfs_ctx *c, const char *path,
	     int (*fn)(void *arg, const char *name, const struct qfs_node *n), void *arg)
{
	struct qfs_node n;
	char name[QP_NAME_MAX + sizeof(QFS_SUFFIX)];
	struct qp_domain *d;
	int r;

	pthread_mutex_lock(&c->lock);
	r = refresh(c);
	if (r < 0)
		goto out;
	if (!strcmp(path, "/")) {
		for (size_t i = 0; c->st && i < c->st->n_doms; i++) {
			d = c->st->doms[i];
			if (d->cls == QP_ADMINVM)
				continue;
			dom_node(c, d, &n);
			if (fn(arg, d->name, &n))
				break;
		}
		goto out;
	}
	r = -ENOENT;
	if (path[0] != '/' || strchr(path + 1, '/'))
		goto out;
	d = find_vm(c->st, path + 1, strlen(path + 1));
	if (!d)
		goto out;
	r = 0;
	for (size_t i = 0; i < d->n_vols; i++) {
		if (!vol_visible(d->vols[i]))
			continue;
		vol_node(c, d->vols[i], &n);
		snprintf(name, sizeof(name), "%s%s", d->vols[i]->name, QFS_SUFFIX);
		if (fn(arg, name, &n))
			break;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

void qfs_node_stat(const struct qfs_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_atim = st->st_mtim = st->st_ctim = n->mtime;
	switch (n->kind) {
	case QFS_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		break;
	case QFS_VMDIR:
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		break;
	case QFS_VOLFILE:
		st->st_mode = S_IFREG | (n->writable ? 0600 : 0400);
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
		st->st_blksize = 4096;
		break;
	}
}
