/* Pool and VM operations: add/remove pools, create/start/stop/remove VMs.
 * Operations that change qubes.xml save it themselves, in the order that
 * keeps a crash at any point recoverable. */
#include "qpool.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- shared checks (used by volume.c too) ------------------------------ */

int qp_vol_ready(struct qp_volume *v, struct qp_err *err)
{
	enum qp_pool_state ps = QP_POOL_ONLINE;
	int r;

	if (!v->pool)
		return qp_err_set(err, -ENOENT, "pool '%s' of volume '%s:%s' does not exist",
				  v->pool_name, v->vm->name, v->name);
	if (!v->pool->drv)
		return qp_err_set(err, -ENOTSUP, "pool '%s' has an unknown driver", v->pool->name);
	if (v->pool->drv->pool_state) {
		r = v->pool->drv->pool_state(v->pool, &ps, err);
		if (r < 0)
			return r;
	}
	if (ps == QP_POOL_OFFLINE)
		return qp_err_set(err, -ENODEV, "pool '%s' is offline", v->pool->name);
	if (ps == QP_POOL_LOCKED)
		return qp_err_set(err, -EACCES, "pool '%s' is locked", v->pool->name);
	/* The committed image's size is authoritative: an import or resize that
	 * crashed after its commit but before qubes.xml was saved is caught up
	 * here (and written with the next save). */
	if (v->save_on_stop && !qp_dom_started(v->vm)) {
		uint64_t size, usage;
		struct qp_err ignore;

		if (v->pool->drv->vol_usage(v, &size, &usage, &ignore) == 0 && size)
			v->size = size;
	}
	return 0;
}

int qp_dom_halted(const struct qp_domain *d, struct qp_err *err)
{
	if (qp_dom_started(d))
		return qp_err_set(err, -EBUSY, "VM '%s' is running", d->name);
	return 0;
}

/* A volume of a read-only pool (driver.h): stopping or removing it touches
 * nothing, so its pool need not be online for that. */
static bool vol_passive(const struct qp_volume *v)
{
	return v->pool && v->pool->drv && v->pool->drv->read_only;
}

/* ---- pools -------------------------------------------------------------- */

static bool in_list(const char *const *list, const char *s)
{
	for (size_t i = 0; list && list[i]; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

int qp_pool_add(struct qp_state *st, const char *name, const char *driver,
		const struct qp_kvlist *opts, struct qp_err *err)
{
	const struct qp_driver *drv;
	struct qp_pool *p = NULL;
	int r;

	if (!qp_name_valid(name))
		return qp_err_set(err, -EINVAL, "invalid pool name '%s'", name);
	if (qp_pool_find(st, name))
		return qp_err_set(err, -EEXIST, "pool '%s' already exists", name);
	drv = qp_driver_find(driver);
	if (!drv)
		return qp_err_set(err, -EINVAL, "unknown driver '%s' (see 'qvm-pool drivers')",
				  driver);
	for (size_t i = 0; i < opts->n; i++)
		if (!in_list(drv->params, opts->v[i].key))
			return qp_err_set(err, -EINVAL, "driver '%s' has no option '%s'", driver,
					  opts->v[i].key);
	for (size_t i = 0; drv->required && drv->required[i]; i++)
		if (!qp_kv_get(opts, drv->required[i]))
			return qp_err_set(err, -EINVAL, "driver '%s' needs option '%s'", driver,
					  drv->required[i]);
	r = qp_pool_new(st, name, driver, opts, &p, err);
	if (r < 0)
		return r;
	r = drv->pool_setup(p, err);
	if (r < 0) {
		qp_err_prefix(err, "cannot add pool '%s'", name);
		goto out;
	}
	r = qp_state_add_pool(st, p);
	if (r < 0) {
		qp_err_set(err, r, "out of memory");
		goto out;
	}
	p = NULL;
	qp_state_link(st);
	r = qp_state_save(st, err);
out:
	qp_pool_free(p);
	return r;
}

int qp_pool_remove(struct qp_state *st, const char *name, struct qp_err *err)
{
	struct qp_pool *p = qp_pool_find(st, name);

	if (!p)
		return qp_err_set(err, -ENOENT, "pool '%s' does not exist", name);
	for (size_t i = 0; i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];

		for (size_t j = 0; j < d->n_vols; j++)
			if (!strcmp(d->vols[j]->pool_name, name))
				return qp_err_set(err, -EBUSY,
						  "pool '%s' is in use by volume '%s:%s'", name,
						  d->name, d->vols[j]->name);
	}
	if (p == qp_default_pool(st))
		return qp_err_set(err, -EBUSY, "pool '%s' is the default pool", name);
	qp_state_del_pool(st, p);
	qp_state_link(st);
	return qp_state_save(st, err);
}

int qp_pool_set(struct qp_state *st, const char *name, const char *key, const char *val,
		struct qp_err *err)
{
	struct qp_pool *p = qp_pool_find(st, name);
	int r;

	if (!p)
		return qp_err_set(err, -ENOENT, "pool '%s' does not exist", name);
	if (!p->drv)
		return qp_err_set(err, -ENOTSUP, "pool '%s' has an unknown driver", name);
	r = p->drv->pool_set(p, key, val, err);
	if (r < 0)
		return r;
	return qp_state_save(st, err);
}

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qp_kv *)a)->key, ((const struct qp_kv *)b)->key);
}

int qp_pool_info(struct qp_pool *p, struct qp_kvlist *out, struct qp_err *err)
{
	enum qp_pool_state ps = QP_POOL_ONLINE;
	static const char *const state_names[] = { "online", "offline", "locked" };
	uint64_t size, usage;
	char buf[32];
	int r = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (qp_kv_set(out, "driver", p->drv ? p->drv->name : "unknown") < 0)
		goto fail;
	for (size_t i = 0; i < p->config.n; i++)
		if (qp_kv_set(out, p->config.v[i].key, p->config.v[i].val) < 0)
			goto fail;
	if (p->drv && p->drv->pool_state) {
		r = p->drv->pool_state(p, &ps, err);
		if (r < 0)
			goto fail;
		r = -ENOMEM;
		if (qp_kv_set(out, "state", state_names[ps]) < 0)
			goto fail;
	}
	if (p->drv && ps == QP_POOL_ONLINE) {
		r = p->drv->pool_usage(p, &size, &usage, err);
		if (r < 0)
			goto fail;
		r = -ENOMEM;
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)size);
		if (qp_kv_set(out, "size", buf) < 0)
			goto fail;
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)usage);
		if (qp_kv_set(out, "usage", buf) < 0)
			goto fail;
		if (p->drv->pool_usage_details) {
			struct qp_kvlist extra = { 0 };

			r = p->drv->pool_usage_details(p, &extra, err);
			for (size_t i = 0; r == 0 && i < extra.n; i++)
				if (qp_kv_set(out, extra.v[i].key, extra.v[i].val) < 0)
					r = -ENOMEM;
			qp_kv_release(&extra);
			if (r < 0)
				goto fail;
		}
	}
	qsort(out->v, out->n, sizeof(*out->v), kv_cmp);
	return 0;
fail:
	qp_kv_release(out);
	return r == -ENOMEM ? qp_err_set(err, r, "out of memory") : r;
}

/* ---- VM creation -------------------------------------------------------- */

static int random_uuid(char out[37])
{
	unsigned char b[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, b, sizeof(b)) : -1;

	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)sizeof(b))
		return -EIO;
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

/* Adds a volume to @d.  @src is the source volume for snapshots (its pool
 * and size are taken), NULL otherwise. */
static int add_volume(struct qp_domain *d, struct qp_pool *pool, const char *name, bool snap,
		      bool save, uint64_t size, struct qp_volume *src, struct qp_err *err)
{
	struct qp_volume *v = qp_vol_new(name);
	int r;

	if (!v)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (src) {
		pool = src->pool;
		size = src->size;
		v->source = strdup(src->vid);
	}
	v->pool = pool;
	v->pool_name = strdup(pool->name);
	v->rw = true;
	v->snap_on_start = snap;
	v->save_on_stop = save;
	v->size = size;
	v->ephemeral = -1;
	if (!save) {
		v->rtk_set = true;
		v->rtk = 0;
	}
	v->vm = d;
	if (!v->pool_name || (src && !v->source)) {
		qp_vol_free(v);
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	r = pool->drv->vol_vid(pool, d, name, &v->vid, err);
	if (r == 0 && qp_dom_add_volume(d, v) < 0)
		r = qp_err_set(err, -ENOMEM, "out of memory");
	if (r < 0)
		qp_vol_free(v);
	return r;
}

/* Checks the template named by @spec and returns it in *out. */
static int check_template(struct qp_state *st, const struct qp_vm_spec *spec,
			  struct qp_domain **out, struct qp_err *err)
{
	struct qp_domain *t;
	enum qp_class want = spec->cls == QP_DISPVM ? QP_APPVM : QP_TEMPLATEVM;

	*out = NULL;
	if (spec->cls != QP_APPVM && spec->cls != QP_DISPVM) {
		if (spec->template_name)
			return qp_err_set(err, -EINVAL, "a %s has no template",
					  qp_class_name(spec->cls));
		return 0;
	}
	if (!spec->template_name)
		return qp_err_set(err, -EINVAL, "an %s needs a template", qp_class_name(spec->cls));
	t = qp_dom_find(st, spec->template_name);
	if (!t)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", spec->template_name);
	if (t->cls != want)
		return qp_err_set(err, -EINVAL, "template '%s' of a %s must be a %s, not a %s",
				  t->name, qp_class_name(spec->cls), qp_class_name(want),
				  qp_class_name(t->cls));
	*out = t;
	return 0;
}

static int set_create_props(struct qp_state *st, struct qp_domain *d, const struct qp_vm_spec *spec,
			    struct qp_domain *tpl, struct qp_err *err)
{
	const char *label = spec->label;
	char uuid[37], num[16];

	if (!label)
		label = spec->cls == QP_TEMPLATEVM ? "black" : "red";
	if (!qp_label_find(st, label))
		return qp_err_set(err, -EINVAL, "label '%s' does not exist", label);
	if (random_uuid(uuid) < 0)
		return qp_err_set(err, -EIO, "cannot read random bytes for a uuid");
	if (qp_kv_set(&d->props, "label", label) < 0 || qp_kv_set(&d->props, "uuid", uuid) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (tpl && qp_kv_set(&d->props, "template", tpl->name) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (spec->cls == QP_DISPVM) {
		snprintf(num, sizeof(num), "%d", d->qid);
		if (qp_kv_set(&d->props, "dispid", num) < 0 ||
		    qp_kv_set(&tpl->props, "template_for_dispvms", "True") < 0)
			return qp_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

static int add_default_volumes(struct qp_domain *d, struct qp_pool *pool, struct qp_domain *tpl,
			       struct qp_err *err)
{
	struct qp_volume *troot = tpl ? qp_dom_volume(tpl, "root") : NULL;
	struct qp_volume *tpriv = tpl ? qp_dom_volume(tpl, "private") : NULL;
	int r;

	switch (d->cls) {
	case QP_TEMPLATEVM:
	case QP_STANDALONEVM:
		r = add_volume(d, pool, "root", false, true, QP_DEFAULT_ROOT_SIZE, NULL, err);
		if (r == 0)
			r = add_volume(d, pool, "private", false, true, QP_DEFAULT_PRIVATE_SIZE, NULL,
				       err);
		if (r == 0)
			r = add_volume(d, pool, "volatile", false, false, QP_DEFAULT_VOLATILE_SIZE,
				       NULL, err);
		return r;
	case QP_APPVM:
	case QP_DISPVM:
		if (!troot || !troot->pool)
			return qp_err_set(err, -EINVAL, "template '%s' has no usable root volume",
					  tpl->name);
		/* A DispVM's root follows the chain to the TemplateVM's root. */
		r = add_volume(d, pool, "root", true, false, 0, troot->src ? troot->src : troot,
			       err);
		if (r < 0)
			return r;
		if (d->cls == QP_APPVM) {
			r = add_volume(d, pool, "private", false, true, QP_DEFAULT_PRIVATE_SIZE, NULL,
				       err);
		} else {
			if (!tpriv || !tpriv->pool)
				return qp_err_set(err, -EINVAL,
						  "template '%s' has no usable private volume",
						  tpl->name);
			r = add_volume(d, pool, "private", true, false, 0, tpriv, err);
		}
		if (r < 0)
			return r;
		return add_volume(d, pool, "volatile", false, false,
				  d->cls == QP_DISPVM ? QP_DEFAULT_ROOT_SIZE + QP_DEFAULT_PRIVATE_SIZE
						      : QP_DEFAULT_VOLATILE_SIZE,
				  NULL, err);
	default:
		return 0;
	}
}

/* ---- kernels ------------------------------------------------------------ */

int qp_kernel_pool(const struct qp_state *st, struct qp_pool **out, struct qp_err *err)
{
	const char *name = qp_kv_get(&st->props, "default_pool_kernel");

	*out = NULL;
	if (name && *name) {
		*out = qp_pool_find(st, name);
		if (!*out)
			return qp_err_set(err, -ENOENT, "pool '%s' (default_pool_kernel) does not exist",
					  name);
		return 0;
	}
	for (size_t i = 0; i < st->n_pools; i++) {
		struct qp_pool *p = st->pools[i];

		if (!p->drv || strcmp(p->drv->name, "linux-kernel"))
			continue;
		if (*out) {
			*out = NULL;
			return qp_err_set(err, -EINVAL,
					  "several pools of driver 'linux-kernel' (set default_pool_kernel)");
		}
		*out = p;
	}
	return 0;
}

/* Checks that kernel @version is installed in pool @p. */
static int kernel_check(struct qp_pool *p, const char *version, struct qp_err *err)
{
	struct qp_volume tmp = { .name = "kernel", .pool = p, .vid = (char *)version,
				 .ephemeral = -1 };
	int r = qp_vol_ready(&tmp, err);

	return r < 0 ? r : p->drv->vol_verify(&tmp, err);
}

/* Adds the kernel volume of new VM @d when it has a kernel (its own, its
 * template's or the default) and a kernel pool exists.  @asked: the kernel
 * was given for this VM, so a missing pool is an error. */
static int add_kernel_volume(struct qp_state *st, struct qp_domain *d, bool asked,
			     struct qp_err *err)
{
	const char *ver = qp_dom_kernel(d);
	struct qp_pool *kp;
	int r;

	if (!ver || !*ver)
		return 0;
	r = qp_kernel_pool(st, &kp, err);
	if (r < 0 || !kp) {
		if (!asked)
			return 0;
		return r < 0 ? r : qp_err_set(err, -ENOENT,
					      "no pool of driver 'linux-kernel' for kernel '%s'",
					      ver);
	}
	r = add_volume(d, kp, "kernel", false, false, 0, NULL, err);
	if (r < 0)
		return r;
	qp_dom_volume(d, "kernel")->rw = false;
	return kernel_check(kp, ver, err);
}

int qp_vm_set_kernel(struct qp_state *st, const char *name, const char *version,
		     struct qp_err *err)
{
	struct qp_pool *kp = NULL;
	struct qp_domain *d;
	struct qp_volume *v;
	char *vid;
	int r;

	if (!name) {
		r = qp_kernel_pool(st, &kp, err);
		if (r == 0 && kp && *version)
			r = kernel_check(kp, version, err);
		if (r < 0)
			return qp_err_prefix(err, "cannot set the default kernel");
		if (qp_kv_set(&st->props, "default_kernel", version) < 0)
			return qp_err_set(err, -ENOMEM, "out of memory");
		return qp_state_save(st, err);
	}
	d = qp_dom_find(st, name);
	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", name);
	if (d->cls == QP_ADMINVM)
		return qp_err_set(err, -EINVAL, "VM '%s' is the AdminVM", name);
	r = qp_dom_halted(d, err);
	v = qp_dom_volume(d, "kernel");
	if (r == 0 && v)
		r = qp_vol_ready(v, err);
	kp = v ? v->pool : NULL;
	if (r == 0 && !v && *version) {
		r = qp_kernel_pool(st, &kp, err);
		if (r == 0 && !kp)
			r = qp_err_set(err, -ENOENT, "no pool of driver 'linux-kernel'");
	}
	if (r == 0 && *version)
		r = kernel_check(kp, version, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot set the kernel of VM '%s'", name);
	if (qp_kv_set(&d->props, "kernel", version) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (v) {
		/* An empty vid is a kernel volume with no kernel, as Qubes keeps it. */
		vid = strdup(version);
		if (!vid)
			return qp_err_set(err, -ENOMEM, "out of memory");
		free(v->vid);
		v->vid = vid;
	} else if (*version) {
		r = add_volume(d, kp, "kernel", false, false, 0, NULL, err);
		if (r < 0)
			return r;
		qp_dom_volume(d, "kernel")->rw = false;
		qp_state_link(st);
	}
	return qp_state_save(st, err);
}

int qp_vm_create(struct qp_state *st, const struct qp_vm_spec *spec, struct qp_err *err)
{
	struct qp_domain *d = NULL, *tpl = NULL;
	struct qp_pool *pool;
	size_t created = 0;
	int r;

	if (!qp_name_valid(spec->name))
		return qp_err_set(err, -EINVAL, "invalid VM name '%s'", spec->name);
	if (qp_dom_find(st, spec->name))
		return qp_err_set(err, -EEXIST, "VM '%s' already exists", spec->name);
	if (spec->cls == QP_ADMINVM)
		return qp_err_set(err, -EINVAL, "cannot create an AdminVM");
	r = check_template(st, spec, &tpl, err);
	if (r < 0)
		return r;
	pool = spec->pool ? qp_pool_find(st, spec->pool) : qp_default_pool(st);
	if (!pool)
		return qp_err_set(err, -ENOENT, "pool '%s' does not exist",
				  spec->pool ? spec->pool : "default");
	if (!pool->drv)
		return qp_err_set(err, -ENOTSUP, "pool '%s' has an unknown driver", pool->name);
	d = qp_dom_new(spec->name, spec->cls);
	if (!d)
		return qp_err_set(err, -ENOMEM, "out of memory");
	d->qid = qp_state_next_qid(st);
	d->st = st;
	r = set_create_props(st, d, spec, tpl, err);
	if (r == 0 && spec->owner)
		r = qp_dom_set_owner(d, spec->owner, err);
	if (r == 0 && spec->kernel && qp_kv_set(&d->props, "kernel", spec->kernel) < 0)
		r = qp_err_set(err, -ENOMEM, "out of memory");
	if (r == 0)
		r = add_default_volumes(d, pool, tpl, err);
	if (r == 0)
		r = add_kernel_volume(st, d, spec->kernel && *spec->kernel, err);
	for (size_t i = 0; r == 0 && i < d->n_vols; i++)
		r = qp_vol_ready(d->vols[i], err);
	for (; r == 0 && created < d->n_vols; created++) {
		struct qp_volume *v = d->vols[created];

		r = v->pool->drv->vol_create(v, err);
		if (r < 0)
			qp_err_prefix(err, "cannot create volume '%s:%s'", d->name, v->name);
		else
			qp_step("vm-create-volume");
	}
	if (r < 0)
		goto undo;
	r = qp_state_add_dom(st, d);
	if (r < 0) {
		qp_err_set(err, r, "out of memory");
		goto undo;
	}
	qp_state_link(st);
	r = qp_state_save(st, err);
	if (r < 0) {
		/* Not recorded: take it out again so nothing refers to missing files. */
		qp_state_del_dom(st, d);
		qp_state_link(st);
		if (tpl && spec->cls == QP_DISPVM)
			qp_kv_set(&tpl->props, "template_for_dispvms", NULL);
		return r;
	}
	return 0;
undo:
	while (created-- > 0) {
		struct qp_err ignore;
		struct qp_volume *v = d->vols[created];

		v->pool->drv->vol_remove(v, &ignore);
	}
	qp_dom_free(d);
	return r;
}

/* ---- VM removal --------------------------------------------------------- */

int qp_vm_remove(struct qp_state *st, const char *name, struct qp_err *err)
{
	struct qp_domain *d = qp_dom_find(st, name);
	size_t idx = 0;
	int r;

	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", name);
	if (d->cls == QP_ADMINVM)
		return qp_err_set(err, -EPERM, "cannot remove the AdminVM '%s'", name);
	r = qp_dom_halted(d, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < st->n_doms; i++) {
		const char *t = qp_dom_prop(st->doms[i], "template");

		if (t && !strcmp(t, name))
			return qp_err_set(err, -EBUSY, "VM '%s' is the template of '%s'", name,
					  st->doms[i]->name);
	}
	for (size_t i = 0; i < d->n_vols; i++) {
		r = vol_passive(d->vols[i]) ? 0 : qp_vol_ready(d->vols[i], err);
		if (r < 0)
			return qp_err_prefix(err, "cannot remove VM '%s'", name);
	}
	/* Forget the VM first, then delete its files: a crash in between leaves
	 * unreferenced files, never a VM whose images are gone. */
	while (st->doms[idx] != d)
		idx++;
	memmove(&st->doms[idx], &st->doms[idx + 1], (st->n_doms - idx - 1) * sizeof(*st->doms));
	st->n_doms--;
	qp_state_link(st);
	r = qp_state_save(st, err);
	if (r < 0) {
		memmove(&st->doms[idx + 1], &st->doms[idx], (st->n_doms - idx) * sizeof(*st->doms));
		st->doms[idx] = d;
		st->n_doms++;
		qp_state_link(st);
		return r;
	}
	for (size_t i = 0; i < d->n_vols; i++) {
		struct qp_err e2 = { 0 };
		struct qp_volume *v = d->vols[i];

		if (v->pool->drv->vol_remove(v, &e2) < 0 && r == 0) {
			*err = e2;
			r = qp_err_prefix(err, "VM '%s' removed, but not all of its files", name);
		}
	}
	qp_dom_free(d);
	return r;
}

/* ---- start and stop ----------------------------------------------------- */

/* Checks that every source is committed and usable before anything changes. */
static int check_sources(struct qp_domain *d, struct qp_err *err)
{
	for (size_t i = 0; i < d->n_vols; i++) {
		struct qp_volume *v = d->vols[i];
		int r = qp_vol_ready(v, err);

		if (r < 0)
			return qp_err_prefix(err, "cannot start VM '%s'", d->name);
		if (!v->snap_on_start)
			continue;
		if (!v->src)
			return qp_err_set(err, -ENOENT,
					  "cannot start VM '%s': source '%s' of volume '%s' does not exist",
					  d->name, v->source ? v->source : "", v->name);
		if (qp_vol_rtk(v->src) == -1 && qp_dom_started(v->src->vm))
			return qp_err_set(err, -EBUSY,
					  "cannot start VM '%s': its source '%s:%s' is running with snapshots disabled",
					  d->name, v->src->vm->name, v->src->name);
		r = v->pool->drv->vol_verify(v, err);
		if (r < 0)
			return qp_err_prefix(err, "cannot start VM '%s'", d->name);
	}
	return 0;
}

/* Undoes the first @n volume starts: a running copy made by this start goes,
 * one resumed from a crash (@resumed) stays for the next start. */
static void undo_start(struct qp_domain *d, size_t n, const bool *resumed)
{
	while (n-- > 0) {
		struct qp_err ignore;
		struct qp_volume *v = d->vols[n];
		const struct qp_driver *drv = v->pool->drv;

		if (v->save_on_stop && !resumed[n] && drv->vol_discard)
			drv->vol_discard(v, &ignore);
		else
			drv->vol_recover(v, &ignore);
	}
}

int qp_vm_start(struct qp_state *st, const char *name, struct qp_attach **out, size_t *n_out,
		struct qp_err *err)
{
	struct qp_domain *d = qp_dom_find(st, name);
	struct qp_attach *att = NULL;
	bool *resumed = NULL;
	size_t started = 0, n_att = 0;
	int r;

	*out = NULL;
	*n_out = 0;
	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", name);
	if (d->cls == QP_ADMINVM)
		return qp_err_set(err, -EINVAL, "VM '%s' is the AdminVM", name);
	if (qp_dom_started(d))
		return qp_err_set(err, -EBUSY, "VM '%s' is already running", name);
	r = check_sources(d, err);
	if (r < 0)
		return r;
	att = calloc(d->n_vols ? d->n_vols : 1, sizeof(*att));
	resumed = calloc(d->n_vols ? d->n_vols : 1, sizeof(*resumed));
	if (!att || !resumed) {
		r = qp_err_set(err, -ENOMEM, "out of memory");
		goto undo;
	}
	for (; started < d->n_vols; started++) {
		struct qp_volume *v = d->vols[started];

		r = v->pool->drv->vol_is_dirty(v, &resumed[started], err);
		if (r == 0)
			r = v->pool->drv->vol_start(v, err);
		if (r < 0) {
			qp_err_prefix(err, "cannot start volume '%s:%s'", name, v->name);
			goto undo;
		}
	}
	for (size_t i = 0; i < d->n_vols; i++) {
		struct qp_volume *v = d->vols[i];

		r = v->pool->drv->vol_block_device(v, &att[n_att].path, err);
		if (r == -ENODATA)
			continue;	/* nothing to attach (a kernel without modules) */
		if (r == 0 && !(att[n_att].volume = strdup(v->name)))
			r = qp_err_set(err, -ENOMEM, "out of memory");
		att[n_att].rw = v->rw;
		n_att++;
		if (r < 0)
			goto undo;
	}
	d->started = strdup(qp_boot_id());
	if (!d->started) {
		r = qp_err_set(err, -ENOMEM, "out of memory");
		goto undo;
	}
	r = qp_state_save(st, err);
	if (r < 0) {
		free(d->started);
		d->started = NULL;
		goto undo;
	}
	*out = att;
	*n_out = n_att;
	free(resumed);
	return 0;
undo:
	if (resumed)
		undo_start(d, started, resumed);
	qp_attach_free(att, d->n_vols);
	free(resumed);
	return r;
}

int qp_vm_stop(struct qp_state *st, const char *name, unsigned flags, struct qp_err *err)
{
	struct qp_domain *d = qp_dom_find(st, name);
	int r = 0;

	if (flags & ~QP_STOP_FORCE)
		return qp_err_set(err, -EINVAL, "unknown stop flags");
	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", name);
	if (!qp_dom_started(d))
		return qp_err_set(err, -EINVAL, "VM '%s' is not running", name);
	for (size_t i = 0; i < d->n_vols; i++) {
		r = vol_passive(d->vols[i]) ? 0 : qp_vol_ready(d->vols[i], err);
		if (r < 0)
			return qp_err_prefix(err, "cannot stop VM '%s'", name);
	}
	/* A volume held open (through qpoold) would be committed or discarded
	 * under its reader's feet: refused unless forced. */
	for (size_t i = 0; !(flags & QP_STOP_FORCE) && i < d->n_vols; i++) {
		bool busy;

		r = qp_vol_in_use(d->vols[i], &busy, err);
		if (r == 0 && busy)
			r = qp_err_set(err, -EBUSY, "volume '%s:%s' is in use", name,
				       d->vols[i]->name);
		if (r < 0)
			return qp_err_prefix(err, "cannot stop VM '%s'", name);
	}
	/* Each volume commits or discards on its own; one that fails keeps the
	 * VM marked running so that a second stop finishes the job.  A volume
	 * still open through qpoold (forced) takes no write while it does. */
	for (size_t i = 0; i < d->n_vols; i++) {
		struct qp_volume *v = d->vols[i];
		struct qp_err e2 = { 0 };
		int gate = -1;

		if (qp_vol_quiesce(v, &gate, &e2) < 0 ||
		    v->pool->drv->vol_stop(v, &e2) < 0) {
			if (r == 0) {
				*err = e2;
				r = qp_err_prefix(err, "cannot stop volume '%s:%s'", name, v->name);
			}
		}
		qp_vol_quiesce_end(gate);
	}
	if (r < 0)
		return r;
	free(d->started);
	d->started = NULL;
	return qp_state_save(st, err);
}
