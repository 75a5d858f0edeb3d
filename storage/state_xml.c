/* qubes.xml as text: parsing into and formatting from qpool state objects.
 *
 * The file follows the Qubes 4 layout: <qubes> with <labels>, <pools>,
 * <properties> and <domains>.  The only element of qpool's own is
 * <qpool-runtime started="BOOT-ID"/>, the last child of a started domain.
 * It is read and written with libxml2.
 */
#include "state_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#define QID_MAX 65535
#define RUNTIME_ELEM "qpool-runtime"

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
		else if (qp_state_add_label(st, (int)num, color ? color : "", name) < 0)
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
			ret = qp_pool_new_unknown(st, name, driver, &rest, &p, err);
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
int qp_state_parse_into(struct qp_state *st, const char *buf, size_t len, struct qp_err *err)
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
	struct qp_state *st = qp_state_alloc();
	int ret;

	*out = NULL;
	if (!st)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = qp_state_parse_into(st, buf, len, err);
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
		xmlNewProp(n, BAD_CAST "driver", S(f, qp_pool_driver_name(p)));
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
