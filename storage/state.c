/* qpool state: objects (pools, domains, volumes), their lookups, and the
 * qubes.xml file that holds them.
 *
 * The file follows the Qubes 4 layout: <qubes> with <labels>, <pools>,
 * <properties> and <domains>.  The only element of qpool's own is
 * <qpool-runtime started="BOOT-ID"/>, the last child of a started domain.
 * It is read and written with libxml2.  Saving goes through a temporary
 * file, fsync, rename and an fsync of the folder, so the file on disk is
 * always either the old or the new state.
 */
#include "qpool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#define STATE_FILE "qubes.xml"
#define STATE_LOCK "qubes.xml.lock"
#define STATE_MAX_BYTES (256u << 20)
#define QID_MAX 65535
#define RUNTIME_ELEM "qpool-runtime"

/* A pool whose driver qpool does not have: kept only to be written back. */
struct unknown_pool {
	struct qp_pool base;
	char *driver;
};

static const struct {
	const char *name;
	const char *color;
} default_labels[] = {
	{ "red", "0xcc0000" },	  { "orange", "0xf57900" }, { "yellow", "0xedd400" },
	{ "green", "0x73d216" },  { "gray", "0x555753" },   { "blue", "0x3465a4" },
	{ "purple", "0x75507b" }, { "black", "0x000000" },
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
static int pool_new_unknown(struct qp_state *st, const char *name, const char *driver,
			    const struct qp_kvlist *config, struct qp_pool **out,
			    struct qp_err *err)
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

static struct qp_state *state_alloc(void)
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

static int state_add_label(struct qp_state *st, int id, const char *color, const char *name)
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

/* ---- parsing ----------------------------------------------------------- */

static bool is_elem(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && !xmlStrcmp(n->name, BAD_CAST name);
}

/* Attribute value (owned, free with xmlFree), NULL when absent. */
static char *attr(const xmlNode *n, const char *name)
{
	return (char *)xmlGetNoNsProp(n, BAD_CAST name);
}

/* Text content (owned, free with xmlFree), never NULL unless out of memory. */
static char *text(const xmlNode *n)
{
	char *s = (char *)xmlNodeGetContent(n);

	return s ? s : (char *)xmlStrdup(BAD_CAST "");
}

static int parse_labels(struct qp_state *st, const xmlNode *labels, struct qp_err *err)
{
	for (const xmlNode *n = labels->children; n; n = n->next) {
		char *id = NULL, *color = NULL, *name = NULL;
		long long num = 0;
		int ret;

		if (!is_elem(n, "label"))
			continue;
		id = attr(n, "id");
		color = attr(n, "color");
		name = text(n);
		if (!id || strncmp(id, "label-", 6) || qp_parse_int(id + 6, 0, INT_MAX, &num) < 0)
			ret = qp_err_set(err, -EINVAL, "bad id '%s' for label '%s'", id ? id : "",
					 name ? name : "");
		else if (!name || !*name)
			ret = qp_err_set(err, -EINVAL, "label '%s' has no name", id);
		else if (qp_label_find(st, name))
			ret = qp_err_set(err, -EINVAL, "duplicate label '%s'", name);
		else if (state_add_label(st, (int)num, color ? color : "", name) < 0)
			ret = qp_err_set(err, -ENOMEM, "out of memory");
		else
			ret = 0;
		xmlFree(id);
		xmlFree(color);
		xmlFree(name);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse_pool(struct qp_state *st, const xmlNode *n, struct qp_err *err)
{
	struct qp_kvlist config = { 0 };
	const char *name = NULL, *driver = NULL;
	struct qp_pool *p = NULL;
	int ret = 0;

	for (const xmlAttr *a = n->properties; a && ret == 0; a = a->next) {
		char *val = (char *)xmlNodeListGetString(n->doc, a->children, 1);
		const char *key = (const char *)a->name;

		ret = qp_kv_set(&config, key, val ? val : "");
		xmlFree(val);
		if (ret < 0)
			ret = qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (ret < 0)
		goto out;
	name = qp_kv_get(&config, "name");
	driver = qp_kv_get(&config, "driver");
	if (!name || !*name || !qp_name_valid(name)) {
		ret = name ? qp_err_set(err, -EINVAL, "bad pool name '%s'", name)
			   : qp_err_set(err, -EINVAL, "pool without a name");
		goto out;
	}
	if (!driver || !*driver) {
		ret = qp_err_set(err, -EINVAL, "pool '%s' has no driver", name);
		goto out;
	}
	if (qp_pool_find(st, name)) {
		ret = qp_err_set(err, -EINVAL, "duplicate pool '%s'", name);
		goto out;
	}
	{
		/* the config is stored without name and driver */
		struct qp_kvlist rest = { 0 };

		for (size_t i = 0; i < config.n && ret == 0; i++)
			if (strcmp(config.v[i].key, "name") && strcmp(config.v[i].key, "driver"))
				ret = qp_kv_set(&rest, config.v[i].key, config.v[i].val);
		if (ret < 0)
			ret = qp_err_set(err, -ENOMEM, "out of memory");
		else if (qp_driver_find(driver))
			ret = qp_pool_new(st, name, driver, &rest, &p, err);
		else
			ret = pool_new_unknown(st, name, driver, &rest, &p, err);
		qp_kv_release(&rest);
	}
	if (ret < 0)
		goto out;
	ret = qp_state_add_pool(st, p);
	if (ret < 0) {
		qp_pool_free(p);
		ret = qp_err_set(err, ret, "out of memory");
	}
out:
	qp_kv_release(&config);
	return ret;
}

static int parse_pools(struct qp_state *st, const xmlNode *pools, struct qp_err *err)
{
	for (const xmlNode *n = pools->children; n; n = n->next) {
		int ret;

		if (!is_elem(n, "pool"))
			continue;
		ret = parse_pool(st, n, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* <properties>, <features>: children named @child with a "name" attribute and text. */
static int parse_kv(const xmlNode *parent, const char *child, bool want_text,
		    struct qp_kvlist *out, const char *what, struct qp_err *err)
{
	for (const xmlNode *n = parent->children; n; n = n->next) {
		char *name, *val;
		int ret;

		if (!is_elem(n, child))
			continue;
		name = attr(n, "name");
		if (!name || !*name) {
			xmlFree(name);
			return qp_err_set(err, -EINVAL, "%s without a name", what);
		}
		val = want_text ? text(n) : (char *)xmlStrdup(BAD_CAST "");
		ret = val ? qp_kv_set(out, name, val) : -ENOMEM;
		xmlFree(name);
		xmlFree(val);
		if (ret < 0)
			return qp_err_set(err, ret, "out of memory");
	}
	return 0;
}

static int parse_bool_attr(const xmlNode *n, const char *key, int *out, struct qp_err *err)
{
	char *s = attr(n, key);
	bool b;
	int ret = 0;

	if (!s)
		return 0;	/* out keeps its default */
	if (qp_parse_bool(s, &b) < 0)
		ret = qp_err_set(err, -EINVAL, "bad boolean '%s' for '%s'", s, key);
	else
		*out = b;
	xmlFree(s);
	return ret;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Strings attributes of a volume, each (owned) or NULL when absent. */
static int dup_attr(const xmlNode *n, const char *key, char **out, bool required,
		    struct qp_err *err)
{
	char *s = attr(n, key);

	if (!s) {
		if (required)
			return qp_err_set(err, -EINVAL, "no '%s' attribute", key);
		return 0;
	}
	free(*out);
	*out = strdup(s);
	xmlFree(s);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

static int parse_volume_fields(struct qp_volume *v, const xmlNode *n, struct qp_err *err)
{
	int rw = 0, sos = 0, sns = 0, eph = -1, ret;
	char *s;

	if ((ret = dup_attr(n, "pool", &v->pool_name, true, err)) < 0 ||
	    (ret = dup_attr(n, "vid", &v->vid, true, err)) < 0 ||
	    (ret = dup_attr(n, "source", &v->source, false, err)) < 0 ||
	    (ret = parse_bool_attr(n, "rw", &rw, err)) < 0 ||
	    (ret = parse_bool_attr(n, "save_on_stop", &sos, err)) < 0 ||
	    (ret = parse_bool_attr(n, "snap_on_start", &sns, err)) < 0 ||
	    (ret = parse_bool_attr(n, "ephemeral", &eph, err)) < 0)
		return ret;
	v->rw = rw;
	v->save_on_stop = sos;
	v->snap_on_start = sns;
	v->ephemeral = eph;
	s = attr(n, "revisions_to_keep");
	if (s) {
		long long rtk = 0;

		if (qp_parse_int(s, -1, INT_MAX, &rtk) < 0)
			ret = qp_err_set(err, -EINVAL, "bad revisions_to_keep '%s'", s);
		v->rtk_set = true;
		v->rtk = (int)rtk;
		xmlFree(s);
		if (ret < 0)
			return ret;
	}
	s = attr(n, "size");
	if (s) {
		if (parse_u64(s, &v->size) < 0)
			ret = qp_err_set(err, -EINVAL, "bad size '%s'", s);
		xmlFree(s);
	}
	return ret;
}

static int parse_volumes(struct qp_domain *d, const xmlNode *vc, struct qp_err *err)
{
	for (const xmlNode *n = vc->children; n; n = n->next) {
		struct qp_volume *v;
		char *name;
		int ret;

		if (!is_elem(n, "volume"))
			continue;
		name = attr(n, "name");
		if (!name || !*name || !qp_name_valid(name)) {
			ret = name ? qp_err_set(err, -EINVAL, "bad volume name '%s'", name)
				   : qp_err_set(err, -EINVAL, "volume without a name");
			xmlFree(name);
			return ret;
		}
		v = qp_vol_new(name);
		xmlFree(name);
		if (!v)
			return qp_err_set(err, -ENOMEM, "out of memory");
		ret = parse_volume_fields(v, n, err);
		if (ret < 0) {
			qp_err_prefix(err, "volume '%s'", v->name);
		} else if ((ret = qp_dom_add_volume(d, v)) < 0) {
			ret = ret == -EEXIST ? qp_err_set(err, -EINVAL, "duplicate volume '%s'",
							  v->name)
					     : qp_err_set(err, ret, "out of memory");
		}
		if (ret < 0) {
			qp_vol_free(v);
			return ret;
		}
	}
	return 0;
}

/* Takes name and qid out of the parsed properties. */
static int dom_take_identity(struct qp_domain *d, const char *id_attr, struct qp_err *err)
{
	const char *name = qp_kv_get(&d->props, "name");
	const char *qid = qp_kv_get(&d->props, "qid");
	long long num;

	if (!name && d->cls == QP_ADMINVM)
		name = "dom0";
	if (!name || !*name)
		return qp_err_set(err, -EINVAL, "cannot parse domain '%s': no name property",
				  id_attr ? id_attr : "?");
	d->name = strdup(name);
	if (!d->name)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (strcmp(name, "dom0") && !qp_name_valid(name))
		return qp_err_set(err, -EINVAL, "cannot parse domain '%s': bad name", name);
	if (!qid && d->cls == QP_ADMINVM)
		qid = "0";
	if (!qid && id_attr && !strncmp(id_attr, "domain-", 7))
		qid = id_attr + 7;
	if (!qid)
		return qp_err_set(err, -EINVAL, "cannot parse domain '%s': no qid property", name);
	if (qp_parse_int(qid, 0, QID_MAX, &num) < 0)
		return qp_err_set(err, -EINVAL, "cannot parse domain '%s': bad qid '%s'", name,
				  qid);
	if ((num == 0) != (d->cls == QP_ADMINVM))
		return qp_err_set(err, -EINVAL, "cannot parse domain '%s': qid 0 is dom0's only",
				  name);
	d->qid = (int)num;
	qp_kv_set(&d->props, "name", NULL);
	qp_kv_set(&d->props, "qid", NULL);
	return 0;
}

/* Older files name labels "label-N": keep names only. */
static int dom_normalize_label(struct qp_state *st, struct qp_domain *d)
{
	const char *l = qp_kv_get(&d->props, "label");
	const struct qp_label *lab;

	if (!l || strncmp(l, "label-", 6))
		return 0;
	lab = qp_label_find(st, l);
	return lab ? qp_kv_set(&d->props, "label", lab->name) : 0;
}

static int parse_dom_children(struct qp_domain *d, const xmlNode *dn, struct qp_err *err)
{
	int ret = 0;

	for (const xmlNode *n = dn->children; n && ret == 0; n = n->next) {
		if (is_elem(n, "features")) {
			ret = parse_kv(n, "feature", true, &d->features, "feature", err);
		} else if (is_elem(n, "tags")) {
			ret = parse_kv(n, "tag", false, &d->tags, "tag", err);
		} else if (is_elem(n, "volume-config")) {
			if (d->cls != QP_ADMINVM)
				ret = parse_volumes(d, n, err);
		} else if (is_elem(n, RUNTIME_ELEM)) {
			ret = dup_attr(n, "started", &d->started, false, err);
			if (ret == 0 && d->started && !*d->started) {
				free(d->started);
				d->started = NULL;
			}
		}
	}
	return ret;
}

static int parse_domain(struct qp_state *st, const xmlNode *dn, struct qp_err *err)
{
	char *cls = attr(dn, "class"), *id = attr(dn, "id");
	struct qp_domain *d = calloc(1, sizeof(*d));
	int ret = -EINVAL;

	if (!d) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!cls || qp_class_parse(cls, &d->cls) < 0) {
		qp_err_set(err, -EINVAL, "cannot parse domain '%s': bad or missing class '%s'",
			   id ? id : "?", cls ? cls : "");
		goto out;
	}
	for (const xmlNode *n = dn->children; n; n = n->next) {
		if (!is_elem(n, "properties"))
			continue;
		ret = parse_kv(n, "property", true, &d->props, "property", err);
		if (ret < 0) {
			qp_err_prefix(err, "cannot parse domain '%s'", id ? id : "?");
			goto out;
		}
	}
	ret = dom_take_identity(d, id, err);
	if (ret < 0)
		goto out;
	ret = parse_dom_children(d, dn, err);
	if (ret == 0)
		ret = dom_normalize_label(st, d) < 0 ? qp_err_set(err, -ENOMEM, "out of memory") : 0;
	if (ret < 0) {
		qp_err_prefix(err, "cannot parse domain '%s'", d->name);
		goto out;
	}
	for (size_t i = 0; i < st->n_doms; i++) {
		if (!strcmp(st->doms[i]->name, d->name) || st->doms[i]->qid == d->qid) {
			ret = qp_err_set(err, -EINVAL, "duplicate domain '%s' (qid %d)", d->name,
					 d->qid);
			goto out;
		}
	}
	ret = qp_state_add_dom(st, d);
	if (ret < 0)
		ret = qp_err_set(err, ret, "out of memory");
	else
		d = NULL;
out:
	qp_dom_free(d);
	xmlFree(cls);
	xmlFree(id);
	return ret;
}

static int parse_tree(struct qp_state *st, const xmlNode *root, struct qp_err *err)
{
	int ret = 0;

	if (!root || !is_elem(root, "qubes"))
		return qp_err_set(err, -EINVAL, "not a qubes.xml document: no <qubes> root");
	/* labels and pools first: domains refer to them */
	for (const xmlNode *n = root->children; n && ret == 0; n = n->next) {
		if (is_elem(n, "labels"))
			ret = parse_labels(st, n, err);
		else if (is_elem(n, "pools"))
			ret = parse_pools(st, n, err);
		else if (is_elem(n, "properties"))
			ret = parse_kv(n, "property", true, &st->props, "global property", err);
	}
	for (const xmlNode *n = root->children; n && ret == 0; n = n->next) {
		if (!is_elem(n, "domains"))
			continue;
		for (const xmlNode *c = n->children; c && ret == 0; c = c->next)
			if (is_elem(c, "domain"))
				ret = parse_domain(st, c, err);
	}
	return ret;
}

/* Parses into an empty @st. */
static int parse_into(struct qp_state *st, const char *buf, size_t len, struct qp_err *err)
{
	xmlParserCtxtPtr ctx;
	xmlDocPtr doc;
	int ret;

	if (len > STATE_MAX_BYTES)
		return qp_err_set(err, -EFBIG, "state document is too large (%zu bytes)", len);
	ctx = xmlNewParserCtxt();
	if (!ctx)
		return qp_err_set(err, -ENOMEM, "out of memory");
	/* no network, no entity expansion, and no printing from the library */
	doc = xmlCtxtReadMemory(ctx, buf, (int)len, STATE_FILE, NULL,
				XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *e = xmlCtxtGetLastError(ctx);
		char msg[256];

		snprintf(msg, sizeof(msg), "%s", e && e->message ? e->message : "unknown error");
		msg[strcspn(msg, "\n")] = '\0';
		ret = qp_err_set(err, -EINVAL, "invalid XML at line %d: %s", e ? e->line : 0, msg);
		xmlFreeParserCtxt(ctx);
		return ret;
	}
	/* qubes.xml never has one; refusing it rules out entity tricks */
	if (doc->intSubset || doc->extSubset)
		ret = qp_err_set(err, -EINVAL, "document type declarations are not allowed");
	else
		ret = parse_tree(st, xmlDocGetRootElement(doc), err);
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctx);
	if (ret == 0)
		qp_state_link(st);
	return ret;
}

int qp_state_parse(const char *buf, size_t len, struct qp_state **out, struct qp_err *err)
{
	struct qp_state *st = state_alloc();
	int ret;

	*out = NULL;
	if (!st)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = parse_into(st, buf, len, err);
	if (ret < 0) {
		qp_state_free(st);
		return ret;
	}
	*out = st;
	return 0;
}

/* ---- formatting -------------------------------------------------------- */

/* XML 1.0 cannot carry control characters or broken UTF-8: refuse them so
 * every saved file parses again. */
static bool xml_ok(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
			return false;
	return xmlCheckUTF8(BAD_CAST s) != 0;
}

/* Pool options become attribute names. */
static bool key_ok(const char *k)
{
	if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || *k == '_'))
		return false;
	return strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
	       strlen(k);
}

struct fmt {
	int bad;		/* set once a string cannot be written */
	const char *bad_str;
};

static const xmlChar *S(struct fmt *f, const char *s)
{
	if (!xml_ok(s) && !f->bad) {
		f->bad = 1;
		f->bad_str = s;
	}
	return BAD_CAST s;
}

static xmlNodePtr add_elem(xmlNodePtr parent, const char *name)
{
	return xmlNewChild(parent, NULL, BAD_CAST name, NULL);
}

static void add_named(struct fmt *f, xmlNodePtr parent, const char *elem, const char *name,
		      const char *val)
{
	xmlNodePtr n = xmlNewTextChild(parent, NULL, BAD_CAST elem, val ? S(f, val) : NULL);

	xmlNewProp(n, BAD_CAST "name", S(f, name));
}

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qp_kv *)a)->key, ((const struct qp_kv *)b)->key);
}

static int fmt_dom_props(struct fmt *f, xmlNodePtr props, const struct qp_domain *d)
{
	struct qp_kv *all = calloc(d->props.n + 2, sizeof(*all));
	char qid[16];
	size_t n = 0;

	if (!all)
		return -ENOMEM;
	snprintf(qid, sizeof(qid), "%d", d->qid);
	all[n++] = (struct qp_kv){ "name", d->name };
	all[n++] = (struct qp_kv){ "qid", qid };
	for (size_t i = 0; i < d->props.n; i++)
		if (strcmp(d->props.v[i].key, "name") && strcmp(d->props.v[i].key, "qid"))
			all[n++] = d->props.v[i];
	qsort(all, n, sizeof(*all), kv_cmp);
	for (size_t i = 0; i < n; i++)
		add_named(f, props, "property", all[i].key, all[i].val);
	free(all);
	return 0;
}

static void fmt_volume(struct fmt *f, xmlNodePtr vc, const struct qp_volume *v)
{
	xmlNodePtr n = add_elem(vc, "volume");
	char num[32];

	xmlNewProp(n, BAD_CAST "name", S(f, v->name));
	xmlNewProp(n, BAD_CAST "pool", S(f, v->pool_name ? v->pool_name : ""));
	xmlNewProp(n, BAD_CAST "vid", S(f, v->vid ? v->vid : ""));
	if (v->rtk_set) {
		snprintf(num, sizeof(num), "%d", v->rtk);
		xmlNewProp(n, BAD_CAST "revisions_to_keep", BAD_CAST num);
	}
	xmlNewProp(n, BAD_CAST "rw", BAD_CAST(v->rw ? "True" : "False"));
	xmlNewProp(n, BAD_CAST "save_on_stop", BAD_CAST(v->save_on_stop ? "True" : "False"));
	xmlNewProp(n, BAD_CAST "snap_on_start", BAD_CAST(v->snap_on_start ? "True" : "False"));
	if (v->ephemeral >= 0)
		xmlNewProp(n, BAD_CAST "ephemeral", BAD_CAST(v->ephemeral ? "True" : "False"));
	if (v->size) {
		snprintf(num, sizeof(num), "%llu", (unsigned long long)v->size);
		xmlNewProp(n, BAD_CAST "size", BAD_CAST num);
	}
	if (v->source)
		xmlNewProp(n, BAD_CAST "source", S(f, v->source));
}

static int fmt_domain(struct fmt *f, xmlNodePtr doms, const struct qp_domain *d)
{
	xmlNodePtr dn = add_elem(doms, "domain"), n;
	char id[32];

	snprintf(id, sizeof(id), "domain-%d", d->qid);
	xmlNewProp(dn, BAD_CAST "id", BAD_CAST id);
	xmlNewProp(dn, BAD_CAST "class", BAD_CAST qp_class_name(d->cls));
	if (fmt_dom_props(f, add_elem(dn, "properties"), d) < 0)
		return -ENOMEM;
	n = add_elem(dn, "features");
	for (size_t i = 0; i < d->features.n; i++)
		add_named(f, n, "feature", d->features.v[i].key, d->features.v[i].val);
	n = add_elem(dn, "tags");
	for (size_t i = 0; i < d->tags.n; i++)
		add_named(f, n, "tag", d->tags.v[i].key, NULL);
	if (d->cls != QP_ADMINVM) {
		n = add_elem(dn, "volume-config");
		for (size_t i = 0; i < d->n_vols; i++)
			fmt_volume(f, n, d->vols[i]);
	}
	if (d->started) {
		n = add_elem(dn, RUNTIME_ELEM);
		xmlNewProp(n, BAD_CAST "started", S(f, d->started));
	}
	return 0;
}

static const char *pool_driver_name(const struct qp_pool *p)
{
	return p->drv ? p->drv->name : ((const struct unknown_pool *)p)->driver;
}

static int fmt_tree(struct fmt *f, xmlNodePtr root, const struct qp_state *st)
{
	xmlNodePtr sec = add_elem(root, "labels");

	for (size_t i = 0; i < st->n_labels; i++) {
		const struct qp_label *l = &st->labels[i];
		xmlNodePtr n = xmlNewTextChild(sec, NULL, BAD_CAST "label", S(f, l->name));
		char id[32];

		snprintf(id, sizeof(id), "label-%d", l->id);
		xmlNewProp(n, BAD_CAST "id", BAD_CAST id);
		xmlNewProp(n, BAD_CAST "color", S(f, l->color));
	}
	sec = add_elem(root, "pools");
	for (size_t i = 0; i < st->n_pools; i++) {
		const struct qp_pool *p = st->pools[i];
		xmlNodePtr n = add_elem(sec, "pool");

		xmlNewProp(n, BAD_CAST "name", S(f, p->name));
		xmlNewProp(n, BAD_CAST "driver", S(f, pool_driver_name(p)));
		for (size_t j = 0; j < p->config.n; j++) {
			const char *k = p->config.v[j].key;

			if (!strcmp(k, "name") || !strcmp(k, "driver"))
				continue;
			if (!key_ok(k) && !f->bad) {
				f->bad = 1;
				f->bad_str = k;
			}
			xmlNewProp(n, BAD_CAST k, S(f, p->config.v[j].val));
		}
	}
	sec = add_elem(root, "properties");
	for (size_t i = 0; i < st->props.n; i++)
		add_named(f, sec, "property", st->props.v[i].key, st->props.v[i].val);
	sec = add_elem(root, "domains");
	for (size_t i = 0; i < st->n_doms; i++)
		if (fmt_domain(f, sec, st->doms[i]) < 0)
			return -ENOMEM;
	return 0;
}

int qp_state_format(const struct qp_state *st, char **out, size_t *len, struct qp_err *err)
{
	xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
	xmlNodePtr root = doc ? xmlNewNode(NULL, BAD_CAST "qubes") : NULL;
	struct fmt f = { 0 };
	xmlChar *mem = NULL;
	int size = 0, ret;

	*out = NULL;
	if (len)
		*len = 0;
	if (!root) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	xmlDocSetRootElement(doc, root);
	if (fmt_tree(&f, root, st) < 0) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (f.bad) {
		ret = qp_err_set(err, -EINVAL,
				 "cannot write state: '%.64s' is not a valid name or text",
				 f.bad_str);
		goto out;
	}
	xmlDocDumpFormatMemoryEnc(doc, &mem, &size, "UTF-8", 1);
	if (!mem || size <= 0 || !(*out = malloc((size_t)size + 1))) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(*out, mem, (size_t)size);
	(*out)[size] = '\0';
	if (len)
		*len = (size_t)size;
	ret = 0;
out:
	xmlFree(mem);
	xmlFreeDoc(doc);
	return ret;
}

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
		if (state_add_label(st, (int)i + 1, default_labels[i].color,
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
		ret = parse_into(st, buf, len, err);
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
	st = state_alloc();
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
					 st->pools[i]->name, pool_driver_name(st->pools[i]));
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
