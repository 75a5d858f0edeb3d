/* VM owners: who owns a VM's folder and volume files in qpoold's tree.
 * Kept as the domain feature "qpool-owner" = "UID:GID". */
#include "qpool.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Numeric ids only: 0 .. 2^32 - 2 ((uid_t)-1 means "no change" to chown). */
static int parse_id(const char *s, size_t len, unsigned long *out)
{
	char buf[16], *end;
	unsigned long long v;

	if (!len || len >= sizeof(buf) || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || *end || v >= 0xffffffffULL)
		return -EINVAL;
	*out = (unsigned long)v;
	return 0;
}

static gid_t primary_gid(uid_t uid)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res)
		return res->pw_gid;
	return (gid_t)uid;
}

int qp_owner_parse(const char *s, uid_t *uid, gid_t *gid, struct qp_err *err)
{
	const char *colon = s ? strchr(s, ':') : NULL;
	unsigned long u, g;

	if (!s)
		return qp_err_set(err, -EINVAL, "no owner given");
	if (parse_id(s, colon ? (size_t)(colon - s) : strlen(s), &u) < 0 ||
	    (colon && parse_id(colon + 1, strlen(colon + 1), &g) < 0))
		return qp_err_set(err, -EINVAL, "invalid owner '%s' (expected UID[:GID], numeric)",
				  s);
	*uid = (uid_t)u;
	*gid = colon ? (gid_t)g : primary_gid((uid_t)u);
	return 0;
}

int qp_dom_owner(const struct qp_domain *d, bool *has, uid_t *uid, gid_t *gid,
		 struct qp_err *err)
{
	const char *val = qp_kv_get(&d->features, QP_FEATURE_OWNER);

	*has = false;
	if (!val || !*val)
		return 0;
	if (!strchr(val, ':') || qp_owner_parse(val, uid, gid, err) < 0)
		return qp_err_set(err, -EINVAL, "VM '%s' has an invalid owner '%s'", d->name, val);
	*has = true;
	return 0;
}

int qp_dom_set_owner(struct qp_domain *d, const char *owner, struct qp_err *err)
{
	char buf[32];
	uid_t uid;
	gid_t gid;
	int r;

	if (d->cls == QP_ADMINVM)
		return qp_err_set(err, -EINVAL, "the AdminVM '%s' cannot have an owner", d->name);
	if (!owner || !strcmp(owner, "none")) {
		if (qp_kv_set(&d->features, QP_FEATURE_OWNER, NULL) < 0)
			return qp_err_set(err, -ENOMEM, "out of memory");
		return 0;
	}
	r = qp_owner_parse(owner, &uid, &gid, err);
	if (r < 0)
		return r;
	snprintf(buf, sizeof(buf), "%lu:%lu", (unsigned long)uid, (unsigned long)gid);
	if (qp_kv_set(&d->features, QP_FEATURE_OWNER, buf) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

int qp_vm_set_owner(struct qp_state *st, const char *name, const char *owner,
		    struct qp_err *err)
{
	struct qp_domain *d = qp_dom_find(st, name);
	char *old = NULL;
	const char *cur;
	int r;

	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", name);
	cur = qp_kv_get(&d->features, QP_FEATURE_OWNER);
	if (cur && !(old = strdup(cur)))
		return qp_err_set(err, -ENOMEM, "out of memory");
	r = qp_dom_set_owner(d, owner, err);
	if (r == 0) {
		r = qp_state_save(st, err);
		/* Not recorded: keep the object as it was. */
		if (r < 0 && qp_kv_set(&d->features, QP_FEATURE_OWNER, old) < 0)
			r = qp_err_set(err, -ENOMEM, "out of memory");
	}
	free(old);
	return r;
}
