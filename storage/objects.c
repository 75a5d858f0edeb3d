/* qpool state objects: pools, domains, volumes and labels, their
 * allocation, linking and lookups.  Reading and writing them is in
 * state_xml.c (the format) and state.c (the file).
 */
#include "state_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A pool whose driver qpool does not have: kept only to be written back. */
struct unknown_pool {
	struct qp_pool base;
	char *driver;
};

/* ---- small helpers ----------------------------------------------------- */

static int grow(void *arrp, size_t n, size_t elem)
{
	void **arr = arrp;
	void *p = realloc(*arr, (n + 1) * elem);

	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

static int kv_copy(struct qp_kvlist *dst, const struct qp_kvlist *src)
{
	int ret;

	for (size_t i = 0; src && i < src->n; i++) {
		ret = qp_kv_set(dst, src->v[i].key, src->v[i].val);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- lookups and effective values -------------------------------------- */

const char *qp_default_root(const char *opt_root)
{
	const char *env;

	if (opt_root && *opt_root)
		return opt_root;
	env = getenv("QPOOL_ROOT");
	if (env && *env)
		return env;
	return QP_DEFAULT_ROOT;
}

int qp_vol_rtk(const struct qp_volume *v)
{
	if (v->rtk_set)
		return v->rtk;
	return v->pool ? v->pool->revisions_to_keep : 1;
}

bool qp_vol_ephemeral(const struct qp_volume *v)
{
	if (v->ephemeral >= 0)
		return v->ephemeral > 0;
	if (v->snap_on_start || v->save_on_stop || !v->rw)
		return false;
	return v->pool ? v->pool->ephemeral_volatile : false;
}

const char *qp_vol_kind(const struct qp_volume *v)
{
	if (v->snap_on_start && v->save_on_stop)
		return "origin_snapshot";
	if (v->snap_on_start)
		return "snapshot";
	if (v->save_on_stop)
		return "origin";
	return "volatile";
}

const char *qp_dom_prop(const struct qp_domain *d, const char *key)
{
	if (!strcmp(key, "name"))
		return d->name;
	return qp_kv_get(&d->props, key);
}

struct qp_domain *qp_dom_template(const struct qp_domain *d)
{
	const char *t = qp_kv_get(&d->props, "template");

	if (!t || !*t || !d->st)
		return NULL;
	return qp_dom_find(d->st, t);
}

const char *qp_dom_kernel(const struct qp_domain *d)
{
	const char *k;

	/* A template chain is at most DispVM -> AppVM -> TemplateVM; the bound
	 * guards against a loop in a damaged qubes.xml. */
	for (int depth = 0; d && depth < 8; depth++) {
		k = qp_kv_get(&d->props, "kernel");
		if (k)
			return k;
		if (!qp_dom_template(d))
			break;
		d = qp_dom_template(d);
	}
	return d && d->st ? qp_kv_get(&d->st->props, "default_kernel") : NULL;
}

struct qp_volume *qp_dom_volume(const struct qp_domain *d, const char *name)
{
	for (size_t i = 0; i < d->n_vols; i++)
		if (!strcmp(d->vols[i]->name, name))
			return d->vols[i];
	return NULL;
}

/* A mark left by an earlier boot does not count: that VM is not running. */
bool qp_dom_started(const struct qp_domain *d)
{
	return d->started && !strcmp(d->started, qp_boot_id());
}

struct qp_pool *qp_pool_find(const struct qp_state *st, const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < st->n_pools; i++)
		if (!strcmp(st->pools[i]->name, name))
			return st->pools[i];
	return NULL;
}

struct qp_domain *qp_dom_find(const struct qp_state *st, const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < st->n_doms; i++)
		if (!strcmp(st->doms[i]->name, name))
			return st->doms[i];
	return NULL;
}

struct qp_pool *qp_default_pool(const struct qp_state *st)
{
	struct qp_pool *p = qp_pool_find(st, qp_kv_get(&st->props, "default_pool"));

	return p ? p : qp_pool_find(st, "default");
}

/* By name, or by the "label-N" id older files use. */
const struct qp_label *qp_label_find(const struct qp_state *st, const char *name)
{
	long long id;

	if (!name)
		return NULL;
	for (size_t i = 0; i < st->n_labels; i++)
		if (!strcmp(st->labels[i].name, name))
			return &st->labels[i];
	if (strncmp(name, "label-", 6) || qp_parse_int(name + 6, 0, INT_MAX, &id) < 0)
		return NULL;
	for (size_t i = 0; i < st->n_labels; i++)
		if (st->labels[i].id == id)
			return &st->labels[i];
	return NULL;
}

static struct qp_volume *find_vid(const struct qp_state *st, const char *pool_name,
				  const char *vid)
{
	for (size_t i = 0; i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];

		for (size_t j = 0; j < d->n_vols; j++) {
			struct qp_volume *v = d->vols[j];

			if (v->vid && v->pool_name && !strcmp(v->vid, vid) &&
			    !strcmp(v->pool_name, pool_name))
				return v;
		}
	}
	return NULL;
}

void qp_state_link(struct qp_state *st)
{
	size_t total = 0;

	for (size_t i = 0; i < st->n_doms; i++)
		total += st->doms[i]->n_vols;
	for (size_t i = 0; i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];

		d->st = st;
		for (size_t j = 0; j < d->n_vols; j++) {
			struct qp_volume *v = d->vols[j], *s = NULL;
			size_t steps = 0;

			v->vm = d;
			v->pool = qp_pool_find(st, v->pool_name);
			if (v->source && v->pool_name) {
				s = find_vid(st, v->pool_name, v->source);
				/* follow the chain; a loop resolves to nothing */
				while (s && s->source && ++steps <= total)
					s = find_vid(st, s->pool_name, s->source);
				if (s && s->source)
					s = NULL;
			}
			v->src = s;
		}
	}
	for (size_t i = 0; i < st->n_pools; i++)
		st->pools[i]->st = st;
}

/* ---- allocation -------------------------------------------------------- */

/* Fills the generic part of a pool from its config. */
static int pool_base_init(struct qp_pool *p, const char *name, const struct qp_kvlist *config,
			  struct qp_err *err)
{
	const char *s;
	long long rtk = 1;
	bool ev = false;

	p->name = strdup(name);
	if (!p->name || kv_copy(&p->config, config) < 0)
		return qp_err_set(err, -ENOMEM, "cannot create pool '%s': out of memory", name);
	s = qp_kv_get(&p->config, "revisions_to_keep");
	if (s && qp_parse_int(s, -1, INT_MAX, &rtk) < 0)
		return qp_err_set(err, -EINVAL,
				  "bad revisions_to_keep '%s' for pool '%s': must be -1 or more", s,
				  name);
	s = qp_kv_get(&p->config, "ephemeral_volatile");
	if (s && qp_parse_bool(s, &ev) < 0)
		return qp_err_set(err, -EINVAL, "bad ephemeral_volatile '%s' for pool '%s'", s,
				  name);
	p->revisions_to_keep = (int)rtk;
	p->ephemeral_volatile = ev;
	return 0;
}

static void pool_free_base(struct qp_pool *p)
{
	free(p->name);
	qp_kv_release(&p->config);
	free(p);
}

int qp_pool_new(struct qp_state *st, const char *name, const char *driver,
		const struct qp_kvlist *config, struct qp_pool **out, struct qp_err *err)
{
	const struct qp_driver *drv = qp_driver_find(driver);
	struct qp_pool *p;
	int ret;

	*out = NULL;
	if (!drv)
		return qp_err_set(err, -EINVAL, "pool '%s' has unknown driver '%s'", name, driver);
	p = calloc(1, drv->pool_size > sizeof(*p) ? drv->pool_size : sizeof(*p));
	if (!p)
		return qp_err_set(err, -ENOMEM, "cannot create pool '%s': out of memory", name);
	p->st = st;
	ret = pool_base_init(p, name, config, err);
	if (ret < 0)
		goto out;
	p->drv = drv;
	ret = drv->pool_init(p, err);
	if (ret < 0) {
		/* pool_release is only for a pool that pool_init accepted */
		pool_free_base(p);
		return ret;
	}
	*out = p;
	return 0;
out:
	qp_pool_free(p);
	return ret;
}

/* A pool kept with drv NULL because its driver is unknown. */
int qp_pool_new_unknown(struct qp_state *st, const char *name, const char *driver,
			const struct qp_kvlist *config, struct qp_pool **out, struct qp_err *err)
{
	struct unknown_pool *u = calloc(1, sizeof(*u));
	int ret;

	*out = NULL;
	if (!u)
		return qp_err_set(err, -ENOMEM, "cannot create pool '%s': out of memory", name);
	/* qp_pool_free tells the two kinds apart by drv == NULL */
	u->base.st = st;
	u->driver = strdup(driver);
	ret = u->driver ? pool_base_init(&u->base, name, config, err)
			: qp_err_set(err, -ENOMEM, "out of memory");
	if (ret < 0) {
		qp_pool_free(&u->base);
		return ret;
	}
	*out = &u->base;
	return 0;
}

void qp_pool_free(struct qp_pool *p)
{
	if (!p)
		return;
	if (p->drv && p->drv->pool_release)
		p->drv->pool_release(p);
	if (!p->drv)
		free(((struct unknown_pool *)p)->driver);
	pool_free_base(p);
}

const char *qp_pool_driver_name(const struct qp_pool *p)
{
	return p->drv ? p->drv->name : ((const struct unknown_pool *)p)->driver;
}

int qp_state_add_pool(struct qp_state *st, struct qp_pool *p)
{
	if (qp_pool_find(st, p->name))
		return -EEXIST;
	if (grow(&st->pools, st->n_pools, sizeof(*st->pools)) < 0)
		return -ENOMEM;
	st->pools[st->n_pools++] = p;
	p->st = st;
	return 0;
}

void qp_state_del_pool(struct qp_state *st, struct qp_pool *p)
{
	for (size_t i = 0; i < st->n_pools; i++) {
		if (st->pools[i] != p)
			continue;
		memmove(&st->pools[i], &st->pools[i + 1],
			(st->n_pools - i - 1) * sizeof(*st->pools));
		st->n_pools--;
		break;
	}
	for (size_t i = 0; i < st->n_doms; i++)
		for (size_t j = 0; j < st->doms[i]->n_vols; j++)
			if (st->doms[i]->vols[j]->pool == p)
				st->doms[i]->vols[j]->pool = NULL;
	qp_pool_free(p);
}

struct qp_domain *qp_dom_new(const char *name, enum qp_class cls)
{
	struct qp_domain *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->name = strdup(name);
	if (!d->name) {
		free(d);
		return NULL;
	}
	d->cls = cls;
	d->qid = cls == QP_ADMINVM ? 0 : -1;
	return d;
}

void qp_dom_free(struct qp_domain *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_vols; i++)
		qp_vol_free(d->vols[i]);
	free(d->vols);
	free(d->name);
	free(d->started);
	qp_kv_release(&d->props);
	qp_kv_release(&d->features);
	qp_kv_release(&d->tags);
	free(d);
}

int qp_state_add_dom(struct qp_state *st, struct qp_domain *d)
{
	if (qp_dom_find(st, d->name))
		return -EEXIST;
	if (grow(&st->doms, st->n_doms, sizeof(*st->doms)) < 0)
		return -ENOMEM;
	st->doms[st->n_doms++] = d;
	d->st = st;
	return 0;
}

void qp_state_del_dom(struct qp_state *st, struct qp_domain *d)
{
	for (size_t i = 0; i < st->n_doms; i++) {
		if (st->doms[i] != d)
			continue;
		memmove(&st->doms[i], &st->doms[i + 1], (st->n_doms - i - 1) * sizeof(*st->doms));
		st->n_doms--;
		break;
	}
	qp_dom_free(d);
	qp_state_link(st);	/* other volumes may have pointed into d */
}

struct qp_volume *qp_vol_new(const char *name)
{
	struct qp_volume *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	/* pool_name and vid stay NULL until the caller sets them */
	v->name = strdup(name);
	if (!v->name) {
		free(v);
		return NULL;
	}
	v->ephemeral = -1;
	return v;
}

void qp_vol_free(struct qp_volume *v)
{
	if (!v)
		return;
	free(v->name);
	free(v->pool_name);
	free(v->vid);
	free(v->source);
	free(v);
}

int qp_dom_add_volume(struct qp_domain *d, struct qp_volume *v)
{
	if (qp_dom_volume(d, v->name))
		return -EEXIST;
	if (grow(&d->vols, d->n_vols, sizeof(*d->vols)) < 0)
		return -ENOMEM;
	d->vols[d->n_vols++] = v;
	v->vm = d;
	return 0;
}

int qp_state_next_qid(const struct qp_state *st)
{
	for (int qid = 0;; qid++) {
		bool used = false;

		for (size_t i = 0; i < st->n_doms && !used; i++)
			used = st->doms[i]->qid == qid;
		if (!used)
			return qid;
	}
}

struct qp_state *qp_state_alloc(void)
{
	struct qp_state *st = calloc(1, sizeof(*st));

	if (st)
		st->lock_fd = -1;
	return st;
}

void qp_state_free(struct qp_state *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_doms; i++)
		qp_dom_free(st->doms[i]);
	free(st->doms);
	for (size_t i = 0; i < st->n_pools; i++)
		qp_pool_free(st->pools[i]);
	free(st->pools);
	for (size_t i = 0; i < st->n_labels; i++) {
		free(st->labels[i].name);
		free(st->labels[i].color);
	}
	free(st->labels);
	qp_kv_release(&st->props);
	if (st->lock_fd >= 0)
		close(st->lock_fd);	/* releases the flock */
	free(st->root);
	free(st);
}

int qp_state_add_label(struct qp_state *st, int id, const char *color, const char *name)
{
	struct qp_label *l;

	if (grow(&st->labels, st->n_labels, sizeof(*st->labels)) < 0)
		return -ENOMEM;
	l = &st->labels[st->n_labels];
	l->id = id;
	l->color = strdup(color);
	l->name = strdup(name);
	st->n_labels++;
	return l->color && l->name ? 0 : -ENOMEM;
}

/* The options every pool has (revisions_to_keep, ephemeral_volatile), for
 * drivers whose pool_set has nothing of its own to set. */
int qp_pool_set_base(struct qp_pool *p, const char *key, const char *val, struct qp_err *err)
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
