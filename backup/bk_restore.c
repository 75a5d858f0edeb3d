/* qpool backup: restoring and verifying a backup (see bk_restore.h). */
#include "bk_restore.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk_header.h"
#include "bk_rstream.h"
#include "bk_secure.h"
#include "bk_tar.h"

/* Largest outer member: a chunk of at most 4 GiB and its container. */
#define MEMBER_MAX ((4ULL << 30) + 4096)
#define XML_MAX (16u << 20)

struct rvm;

/* One file the backup's qubes.xml promises: vm<qid>/<volume>.img. */
struct rvol {
	struct rvm *vm;
	char name[QP_NAME_MAX + 1];
	char path[64];
	bool seen, done;
	struct qp_volume *v; /* on the host, NULL when verifying */
	bool staged;
	int fd;
	uint64_t size;
};

struct rvm {
	struct qp_domain *bd; /* in the backup's qubes.xml */
	char prefix[32];      /* vm<qid>/ */
	char *name;	      /* name on the host */
	bool selected;
	bool created;
	uint64_t budget;      /* backup-size left */
	struct rvol vols[8];
	size_t n_vols;
};

struct restore {
	const struct bk_restore_opts *o;
	struct bk_restore_result *res;
	int fd;
	bool leased; /* fd holds a read lease: chunks are read twice, not copied */
	uint64_t archive_size;
	struct bk_in in;
	struct bk_tar_reader *tr;
	struct bk_header *hdr;
	struct bk_prefetch *pf; /* keys of the members ahead */
	enum bk_filter filter;
	const char *tmpdir;
	struct qp_state *bx; /* the backup's qubes.xml */
	struct qp_state *st; /* the host's, locked; NULL when verifying */
	struct rvm *vms;
	size_t n_vms;
	/* the volume whose extraction goes on while the next file is read */
	struct bk_rstream *prev_rs;
	struct rvol *prev_vol;
	/* the file being extracted */
	struct bk_rstream *rs;
	char cur[BK_TAR_NAME_MAX]; /* its path, "" when none */
	unsigned next_chunk;
	struct rvol *cur_vol;      /* NULL for qubes.xml and skipped files */
	bool cur_wanted;
};

static void note(struct restore *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct restore *r, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!r->o->note)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r->o->note(r->o->note_ctx, msg);
}

/* ---- backup-header ----------------------------------------------------------- */

static int read_member(struct restore *r, const char *want, uint64_t max, uint8_t **buf,
		       size_t *len, struct qp_err *err)
{
	struct bk_tar_entry ent;
	size_t got = 0;
	int ret;

	ret = bk_tar_next(r->tr, &ent, err);
	if (ret == 0)
		return qp_err_set(err, -EBADMSG, "not a backup: '%s' is missing", want);
	if (ret < 0)
		return ret;
	if (strcmp(ent.name, want))
		return qp_err_set(err, -EBADMSG, "not a backup: '%s' comes where '%s' belongs",
				  ent.name, want);
	if (ent.size > max)
		return qp_err_set(err, -EBADMSG, "'%s' is too large", want);
	*buf = malloc((size_t)ent.size + 1);
	if (!*buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	while (got < ent.size) {
		ssize_t n = bk_tar_read(r->tr, *buf + got, (size_t)ent.size - got, err);

		if (n <= 0)
			return n < 0 ? (int)n : qp_err_set(err, -EBADMSG, "'%s' is truncated", want);
		got += (size_t)n;
	}
	*len = got;
	return 0;
}

/* Decrypts backup-header.hmac, compares it with backup-header, and only
 * then parses the header. */
static int check_header(struct restore *r, struct qp_err *err)
{
	uint8_t *text = NULL, *mac = NULL, *plain = NULL;
	size_t tlen = 0, mlen = 0;
	struct bk_scrypt_key *key = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	char *pass = NULL, id[128];
	size_t plen = 0;
	int ret;

	ret = read_member(r, "backup-header", BK_HEADER_MAX, &text, &tlen, err);
	if (ret == 0)
		ret = read_member(r, "backup-header.hmac", BK_HEADER_MAX + BK_SCRYPT_OVERHEAD, &mac,
				  &mlen, err);
	if (ret == 0 && mlen < BK_SCRYPT_OVERHEAD)
		ret = qp_err_set(err, -EBADMSG, "'backup-header.hmac' is truncated");
	/* The members' keys are derived while the header's is: with the id
	 * the header's text names, checked against the parsed header below. */
	if (ret == 0 && bk_header_peek_id((const char *)text, tlen, id, sizeof(id)))
		bk_prefetch_start(r->o->path, id, r->o->pass, r->o->passlen, &r->o->limits,
				  &r->pf);
	if (ret == 0)
		ret = bk_header_pass_for_header(r->o->pass, r->o->passlen, &pass, &plen, err);
	if (ret == 0)
		ret = bk_scrypt_dec_header(mac, pass, plen, &r->o->limits, &key, err);
	if (ret == 0)
		ret = bk_scrypt_dec_init(key, mac, &ctx, err);
	if (ret == 0) {
		plain = malloc(mlen);
		ret = plain ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (ret == 0)
		ret = bk_scrypt_dec_update(ctx, mac + BK_SCRYPT_HDR_LEN, mlen - BK_SCRYPT_OVERHEAD,
					   plain, err);
	if (ret == 0)
		ret = bk_scrypt_dec_final(ctx, mac + mlen - BK_SCRYPT_MAC_LEN, err);
	if (ret == 0 && (mlen - BK_SCRYPT_OVERHEAD != tlen || memcmp(plain, text, tlen)))
		ret = qp_err_set(err, -EBADMSG, "'backup-header' does not match its .hmac");
	if (ret == 0)
		ret = bk_header_parse((const char *)text, tlen, &r->hdr, err);
	if (ret == 0 && r->pf && strcmp(id, r->hdr->backup_id)) {
		bk_prefetch_stop(r->pf);
		r->pf = NULL;
	}
	if (ret == 0 && !r->pf)
		bk_prefetch_start(r->o->path, r->hdr->backup_id, r->o->pass, r->o->passlen,
				  &r->o->limits, &r->pf);
	if (ret == 0)
		ret = bk_filter_lookup(r->hdr->compressed ? r->hdr->compression_filter : "none",
				       &r->filter, err);
	if (ret == 0 && r->filter == BK_FILTER_EXTERNAL)
		ret = bk_filter_check(r->hdr->compression_filter, err);
	bk_scrypt_ctx_free(ctx);
	bk_scrypt_key_free(key);
	bk_secure_free(pass);
	free(text);
	free(mac);
	free(plain);
	if (ret == -EKEYREJECTED)
		return qp_err_set(err, ret, "wrong passphrase");
	return ret;
}

/* ---- the backup's qubes.xml --------------------------------------------------- */

static bool listed(char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(names[i], name))
			return true;
	return false;
}

/* The files of @d: its save_on_stop volumes from <volume-config>, else the
 * ones its class has. */
static int expect_vols(struct rvm *m, struct qp_err *err)
{
	static const char *const tpl[] = { "root", "private", NULL }, *const app[] = { "private", NULL };
	const char *const *def = NULL;
	struct qp_domain *d = m->bd;

	for (size_t i = 0; i < d->n_vols && m->n_vols < 8; i++) {
		if (!d->vols[i]->save_on_stop)
			continue;
		if (!qp_name_valid(d->vols[i]->name))
			return qp_err_set(err, -EBADMSG, "VM '%s' has an invalid volume name", d->name);
		snprintf(m->vols[m->n_vols++].name, QP_NAME_MAX + 1, "%s", d->vols[i]->name);
	}
	if (d->n_vols == 0)
		def = d->cls == QP_TEMPLATEVM || d->cls == QP_STANDALONEVM ? tpl
		      : d->cls == QP_APPVM				   ? app
									   : NULL;
	for (size_t i = 0; def && def[i]; i++)
		snprintf(m->vols[m->n_vols++].name, QP_NAME_MAX + 1, "%s", def[i]);
	for (size_t i = 0; i < m->n_vols; i++) {
		m->vols[i].vm = m;
		m->vols[i].fd = -1;
		snprintf(m->vols[i].path, sizeof(m->vols[i].path), "%s%s.img", m->prefix,
			 m->vols[i].name);
	}
	return 0;
}

static int valid_prefix(const char *p)
{
	size_t n = strlen(p);

	if (n < 4 || n > 12 || strncmp(p, "vm", 2) || p[n - 1] != '/')
		return 0;
	for (size_t i = 2; i < n - 1; i++)
		if (p[i] < '0' || p[i] > '9')
			return 0;
	return 1;
}

/* Every domain with backup content, checked. */
static int read_xml(struct restore *r, const char *xml, size_t len, struct qp_err *err)
{
	int ret = qp_state_parse(xml, len, &r->bx, err);

	if (ret < 0)
		return qp_err_prefix(err, "cannot read the backup's qubes.xml");
	r->vms = calloc(r->bx->n_doms + 1, sizeof(*r->vms));
	if (!r->vms)
		return qp_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < r->bx->n_doms; i++) {
		struct qp_domain *d = r->bx->doms[i];
		const char *content = qp_kv_get(&d->features, "backup-content");
		const char *path = qp_kv_get(&d->features, "backup-path");
		const char *size = qp_kv_get(&d->features, "backup-size");
		struct rvm *m = &r->vms[r->n_vms];
		long long sz;

		if (!content || !*content)
			continue;
		if (!path || !valid_prefix(path))
			return qp_err_set(err, -EBADMSG, "VM '%s' has no valid backup-path", d->name);
		if (!size || qp_parse_int(size, 0, INT64_MAX, &sz) < 0)
			return qp_err_set(err, -EBADMSG, "VM '%s' has no valid backup-size", d->name);
		for (size_t j = 0; j < r->n_vms; j++)
			if (!strcmp(r->vms[j].prefix, path))
				return qp_err_set(err, -EBADMSG, "two VMs share backup-path '%s'", path);
		m->bd = d;
		snprintf(m->prefix, sizeof(m->prefix), "%s", path);
		m->budget = (uint64_t)sz;
		m->selected = d->cls != QP_ADMINVM &&
			      (r->o->n_vms == 0 || listed(r->o->vms, r->o->n_vms, d->name)) &&
			      !listed(r->o->exclude, r->o->n_exclude, d->name);
		if (d->cls == QP_ADMINVM && (r->o->n_vms == 0 || listed(r->o->vms, r->o->n_vms, d->name)))
			note(r, "skipping '%s': dom0's home is not restored", d->name);
		ret = expect_vols(m, err);
		if (ret < 0)
			return ret;
		r->n_vms++;
	}
	for (size_t i = 0; i < r->o->n_vms; i++) {
		bool found = false;

		for (size_t j = 0; j < r->n_vms; j++)
			found |= !strcmp(r->vms[j].bd->name, r->o->vms[i]);
		if (!found)
			return qp_err_set(err, -ENOENT, "VM '%s' is not in the backup", r->o->vms[i]);
	}
	return 0;
}

static struct rvm *find_rvm(struct restore *r, const char *name)
{
	for (size_t i = 0; i < r->n_vms; i++)
		if (!strcmp(r->vms[i].bd->name, name))
			return &r->vms[i];
	return NULL;
}

/* ---- the host: names, templates, new VMs ---------------------------------------- */

static bool name_taken(struct restore *r, const char *name, const struct rvm *self)
{
	if (qp_dom_find(r->st, name))
		return true;
	for (size_t i = 0; i < r->n_vms; i++)
		if (&r->vms[i] != self && r->vms[i].selected && r->vms[i].name &&
		    !strcmp(r->vms[i].name, name))
			return true;
	return false;
}

static int pick_names(struct restore *r, struct qp_err *err)
{
	for (size_t i = 0; i < r->n_vms; i++) {
		struct rvm *m = &r->vms[i];
		const char *name = m->bd->name;

		if (!m->selected)
			continue;
		if (!qp_name_valid(name))
			return qp_err_set(err, -EBADMSG, "the backup has an invalid VM name");
		if (!name_taken(r, name, m)) {
			m->name = strdup(name);
		} else if (r->o->conflict == BK_CONFLICT_SKIP) {
			note(r, "skipping '%s': a VM of that name exists", name);
			m->selected = false;
			continue;
		} else if (r->o->conflict == BK_CONFLICT_RENAME) {
			for (int n = 1; n < 1000 && !m->name; n++) {
				char *c = qp_strdupf("%.*s%d", QP_NAME_MAX - 4, name, n);

				if (c && qp_name_valid(c) && !name_taken(r, c, m))
					m->name = c;
				else
					free(c);
			}
			if (m->name)
				note(r, "restoring '%s' as '%s'", name, m->name);
		} else {
			return qp_err_set(err, -EEXIST,
					  "VM '%s' already exists; use --rename-conflicting or --skip-conflicting",
					  name);
		}
		if (!m->name)
			return qp_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

/* The name of @m's template on the host once restored, or NULL (noted)
 * when it is neither in the restore nor on the host. */
static const char *template_of(struct restore *r, struct rvm *m)
{
	const char *t = qp_dom_prop(m->bd, "template");
	struct rvm *tm;
	struct qp_domain *hd;

	if (!t)
		return NULL;
	tm = find_rvm(r, t);
	if (tm && tm->selected)
		return tm->name;
	hd = qp_dom_find(r->st, t);
	if (hd && (m->bd->cls == QP_DISPVM ? hd->cls == QP_APPVM : hd->cls == QP_TEMPLATEVM))
		return hd->name;
	return NULL;
}

static void check_templates(struct restore *r)
{
	bool changed = true;

	while (changed) {
		changed = false;
		for (size_t i = 0; i < r->n_vms; i++) {
			struct rvm *m = &r->vms[i];

			if (!m->selected || (m->bd->cls != QP_APPVM && m->bd->cls != QP_DISPVM))
				continue;
			if (!template_of(r, m)) {
				note(r, "skipping '%s': its template '%s' is neither in the backup nor on this host",
				     m->bd->name, qp_dom_prop(m->bd, "template") ?: "");
				m->selected = false;
				changed = true;
			}
		}
	}
}

static int create_vm(struct restore *r, struct rvm *m, struct qp_err *err)
{
	const char *label = qp_dom_prop(m->bd, "label");
	struct qp_vm_spec spec = { .name = m->name, .cls = m->bd->cls, .pool = r->o->pool };
	struct qp_domain *d;
	int ret;

	spec.template_name = template_of(r, m);
	spec.label = label && qp_label_find(r->st, label) ? label : NULL;
	ret = qp_vm_create(r->st, &spec, err);
	if (ret < 0)
		return qp_err_prefix(err, "cannot restore '%s'", m->bd->name);
	m->created = true;
	d = qp_dom_find(r->st, m->name);
	for (size_t i = 0; d && i < m->n_vols; i++) {
		m->vols[i].v = qp_dom_volume(d, m->vols[i].name);
		if (!m->vols[i].v || !m->vols[i].v->save_on_stop)
			return qp_err_set(err, -ENOTSUP, "cannot restore '%s': a %s has no volume '%s' to restore into",
					  m->bd->name, qp_class_name(m->bd->cls), m->vols[i].name);
	}
	return 0;
}

static int plan_host(struct restore *r, const char *root, struct qp_err *err)
{
	static const enum qp_class order[] = { QP_TEMPLATEVM, QP_STANDALONEVM, QP_APPVM, QP_DISPVM };
	int ret;

	if (r->o->verify_only)
		return 0;
	ret = qp_state_open(root, QP_STATE_WRITE, &r->st, err);
	if (ret < 0)
		return ret;
	if (r->o->pool && !qp_pool_find(r->st, r->o->pool))
		return qp_err_set(err, -ENOENT, "pool '%s' does not exist", r->o->pool);
	ret = pick_names(r, err);
	if (ret < 0)
		return ret;
	check_templates(r);
	for (size_t c = 0; c < sizeof(order) / sizeof(order[0]); c++)
		for (size_t i = 0; i < r->n_vms; i++)
			if (r->vms[i].selected && r->vms[i].bd->cls == order[c]) {
				ret = create_vm(r, &r->vms[i], err);
				if (ret < 0)
					return ret;
			}
	return 0;
}

/* Extraction thread: the entry of a volume image was found. */
static int open_vol(void *ctx, const struct bk_tar_entry *ent, int *fd, bool *sync,
		    struct qp_err *err)
{
	struct rvol *rv = ctx;
	char *path = NULL;

	if (!ent->sparse && ent->size != ent->realsize)
		return qp_err_set(err, -EBADMSG, "'%s' has an inconsistent size", rv->path);
	if (ent->realsize > rv->vm->budget)
		return qp_err_set(err, -EFBIG, "'%s' is larger than the backup-size of VM '%s'",
				  rv->path, rv->vm->bd->name);
	if (ent->realsize == 0)
		return qp_err_set(err, -EBADMSG, "'%s' is empty", rv->path);
	rv->vm->budget -= ent->realsize;
	rv->size = ent->realsize;
	if (!rv->v) {
		rv->fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	} else {
		int ret = rv->v->pool->drv->vol_import_begin(rv->v, rv->size, &path, err);

		if (ret < 0)
			return ret;
		rv->staged = true;
		rv->fd = open(path, O_WRONLY | O_CLOEXEC);
		ret = rv->fd < 0 ? qp_err_set(err, -errno, "cannot open '%s': %s", path,
					      strerror(errno))
				 : 0;
		free(path);
		if (ret < 0)
			return ret;
	}
	if (rv->fd < 0)
		return qp_err_set(err, -errno, "cannot open /dev/null: %s", strerror(errno));
	*fd = rv->fd;
	*sync = rv->v != NULL;
	return 0;
}

/* ---- members ---------------------------------------------------------------------- */

/* Splits "<base>.NNN.enc" (NNN: %03u) into @base and the chunk number. */
static int parse_member(const char *name, char *base, size_t cap, unsigned *chunk,
			struct qp_err *err)
{
	size_t n = strlen(name), d;
	const char *dot;
	char canon[16];
	unsigned long v;

	if (n < 9 || n >= cap || strcmp(name + n - 4, ".enc"))
		return qp_err_set(err, -EBADMSG, "unexpected member '%s'", name);
	memcpy(base, name, n - 4);
	base[n - 4] = '\0';
	dot = strrchr(base, '.');
	if (!dot || dot == base)
		return qp_err_set(err, -EBADMSG, "unexpected member '%s'", name);
	d = strlen(dot + 1);
	if (d < 3 || d > 6 || strspn(dot + 1, "0123456789") != d)
		return qp_err_set(err, -EBADMSG, "member '%s' has no chunk number", name);
	v = strtoul(dot + 1, NULL, 10);
	snprintf(canon, sizeof(canon), "%03lu", v);
	if (strcmp(canon, dot + 1))
		return qp_err_set(err, -EBADMSG, "member '%s' has no chunk number", name);
	*chunk = (unsigned)v;
	base[dot - base] = '\0';
	return 0;
}

/* Finds what the file @base is: qubes.xml, a promised volume image, or a
 * file qpool leaves out (firewall.xml, notes.txt, dom0's home). */
static int classify(struct restore *r, const char *base, struct qp_err *err)
{
	r->cur_vol = NULL;
	r->cur_wanted = false;
	if (!strcmp(base, "qubes.xml"))
		return qp_err_set(err, -EBADMSG, "'qubes.xml' appears twice");
	if (!strncmp(base, "dom0-home/", 10))
		return 0;
	for (size_t i = 0; i < r->n_vms; i++) {
		struct rvm *m = &r->vms[i];
		size_t pl = strlen(m->prefix);

		if (strncmp(base, m->prefix, pl))
			continue;
		if (!strcmp(base + pl, "firewall.xml") || !strcmp(base + pl, "notes.txt"))
			return 0;
		for (size_t j = 0; j < m->n_vols; j++) {
			if (strcmp(m->vols[j].path, base))
				continue;
			if (m->vols[j].seen)
				return qp_err_set(err, -EBADMSG, "'%s' appears twice", base);
			m->vols[j].seen = true;
			r->cur_vol = &m->vols[j];
			r->cur_wanted = m->selected;
			return 0;
		}
	}
	return qp_err_set(err, -EBADMSG, "unexpected member '%s.000.enc'", base);
}

/* Waits for the extraction of the previous volume. */
static int finish_prev(struct restore *r, struct qp_err *err)
{
	int ret;

	if (!r->prev_rs)
		return 0;
	ret = bk_rstream_finish(r->prev_rs, NULL, NULL, err);
	r->prev_rs = NULL;
	if (ret == 0)
		r->prev_vol->done = true;
	return ret;
}

/* The last chunk of the current file was pushed.  qubes.xml is waited for
 * (it decides what comes next); a volume goes on extracting (and syncing)
 * while the next file's chunks are decrypted, one volume at a time. */
static int finish_file(struct restore *r, const char *root, struct qp_err *err)
{
	struct bk_rstream *rs = r->rs;
	char *xml = NULL;
	size_t len = 0;
	int ret = 0;

	r->rs = NULL;
	if (!strcmp(r->cur, "qubes.xml")) {
		ret = bk_rstream_finish(rs, &xml, &len, err);
		if (ret == 0)
			ret = read_xml(r, xml, len, err);
		free(xml);
		if (ret == 0)
			ret = plan_host(r, root, err);
	} else if (rs) {
		ret = finish_prev(r, err);
		if (ret == 0) {
			r->prev_rs = rs;
			r->prev_vol = r->cur_vol;
		} else {
			bk_rstream_abort(rs);
		}
	}
	r->cur[0] = '\0';
	return ret;
}

static int next_member(struct restore *r, const char *root, const struct bk_tar_entry *ent,
		       struct qp_err *err)
{
	char base[BK_TAR_NAME_MAX];
	unsigned chunk = 0;
	int fd, ret;

	ret = parse_member(ent->name, base, sizeof(base), &chunk, err);
	if (ret < 0)
		return ret;
	if (!r->cur[0] || strcmp(base, r->cur)) {
		bool first = !r->bx && !r->cur[0];

		if (r->cur[0]) {
			ret = finish_file(r, root, err);
			if (ret < 0)
				return ret;
		}
		if (first != !strcmp(base, "qubes.xml"))
			return qp_err_set(err, -EBADMSG, "'%s' comes where 'qubes.xml.000.enc' belongs",
					  ent->name);
		if (chunk != 0)
			return qp_err_set(err, -EBADMSG, "'%s' comes before chunk 000 of '%s'",
					  ent->name, base);
		if (first) {
			r->cur_vol = NULL;
			r->cur_wanted = true;
			ret = bk_rstream_start(r->filter, r->hdr->compression_filter,
					       XML_MAX + (1 << 20), "qubes.xml", NULL, NULL, XML_MAX,
					       &r->rs, err);
		} else {
			ret = classify(r, base, err);
			if (ret == 0 && r->cur_wanted)
				ret = bk_rstream_start(r->filter, r->hdr->compression_filter,
						       r->cur_vol->vm->budget + (64u << 20), base,
						       open_vol, r->cur_vol, 0, &r->rs, err);
		}
		if (ret < 0)
			return ret;
		snprintf(r->cur, sizeof(r->cur), "%s", base);
		r->next_chunk = 0;
	} else if (chunk != r->next_chunk) {
		return qp_err_set(err, -EBADMSG, "'%s' comes where chunk %03u of '%s' belongs",
				  ent->name, r->next_chunk, base);
	}
	r->next_chunk++;
	if (!r->cur_wanted)
		return 0;
	if (r->leased) {
		/* The data starts after the container's header. */
		uint64_t off = r->in.nread + BK_SCRYPT_HDR_LEN;
		struct bk_scrypt_ctx *dec = NULL;

		ret = bk_member_verify(r->tr, ent->size, r->hdr->backup_id, ent->name, r->o->pass,
				       r->o->passlen, &r->o->limits, r->pf, &dec, err);
		if (ret == 0)
			ret = bk_rstream_push_range(r->rs, r->fd, off,
						    ent->size - BK_SCRYPT_OVERHEAD, dec, err);
	} else {
		ret = bk_member_decrypt(r->tr, ent->size, r->hdr->backup_id, ent->name,
					r->o->pass, r->o->passlen, &r->o->limits, r->pf,
					r->tmpdir, &fd, err);
		if (ret == 0)
			ret = bk_rstream_push(r->rs, fd, err);
	}
	if (ret == 0)
		r->res->chunks++;
	return ret;
}

/* ---- the whole restore ---------------------------------------------------------------- */

static unsigned report_missing(struct restore *r)
{
	unsigned missing = 0;

	for (size_t i = 0; i < r->n_vms; i++) {
		struct rvm *m = &r->vms[i];

		if (!m->selected)
			continue;
		for (size_t j = 0; j < m->n_vols; j++)
			if (!m->vols[j].done) {
				note(r, "VM '%s': '%s' is missing from the archive", m->bd->name,
				     m->vols[j].path);
				missing++;
			}
	}
	return missing;
}

static int commit(struct restore *r, struct qp_err *err)
{
	int ret = 0;

	for (size_t i = 0; i < r->n_vms; i++) {
		struct rvm *m = &r->vms[i];

		for (size_t j = 0; m->selected && j < m->n_vols; j++) {
			struct rvol *rv = &m->vols[j];
			int r2;

			if (rv->fd >= 0)
				close(rv->fd);
			rv->fd = -1;
			r->res->vol_bytes += rv->size;
			if (!rv->staged)
				continue;
			rv->staged = false;
			r2 = rv->v->pool->drv->vol_import_end(rv->v, true, err);
			if (r2 < 0 && ret == 0)
				ret = r2;
			else if (r2 == 0)
				rv->v->size = rv->size;
		}
		if (m->selected)
			r->res->n_vms++;
	}
	if (r->st) {
		int r2 = qp_state_save(r->st, err);

		ret = ret ? ret : r2;
	}
	return ret;
}

static void rollback(struct restore *r)
{
	struct qp_err ignore;

	bk_rstream_abort(r->rs);
	r->rs = NULL;
	bk_rstream_abort(r->prev_rs);
	r->prev_rs = NULL;
	for (size_t i = 0; i < r->n_vms; i++)
		for (size_t j = 0; j < r->vms[i].n_vols; j++) {
			struct rvol *rv = &r->vms[i].vols[j];

			if (rv->fd >= 0)
				close(rv->fd);
			rv->fd = -1;
			if (rv->staged)
				rv->v->pool->drv->vol_import_end(rv->v, false, &ignore);
			rv->staged = false;
		}
	/* AppVMs and DispVMs before their templates. */
	for (size_t i = r->n_vms; i-- > 0;)
		if (r->vms[i].created && r->vms[i].bd->cls == QP_DISPVM)
			qp_vm_remove(r->st, r->vms[i].name, &ignore);
	for (size_t i = r->n_vms; i-- > 0;)
		if (r->vms[i].created && r->vms[i].bd->cls == QP_APPVM)
			qp_vm_remove(r->st, r->vms[i].name, &ignore);
	for (size_t i = r->n_vms; i-- > 0;)
		if (r->vms[i].created && r->vms[i].bd->cls != QP_APPVM &&
		    r->vms[i].bd->cls != QP_DISPVM)
			qp_vm_remove(r->st, r->vms[i].name, &ignore);
}

static int read_archive(struct restore *r, const char *root, struct qp_err *err)
{
	struct bk_tar_entry ent;
	int ret;

	ret = check_header(r, err);
	while (ret == 0) {
		ret = bk_tar_next(r->tr, &ent, err);
		if (ret <= 0)
			break;
		ret = next_member(r, root, &ent, err);
		if (r->o->progress)
			r->o->progress(r->o->progress_ctx, r->in.nread, r->archive_size);
	}
	if (ret == 0 && r->cur[0])
		ret = finish_file(r, root, err);
	if (ret == 0)
		ret = finish_prev(r, err);
	if (ret == 0 && !r->bx)
		ret = qp_err_set(err, -EBADMSG, "'qubes.xml.000.enc' is missing");
	bk_prefetch_stop(r->pf);
	r->pf = NULL;
	return ret;
}

/* A read lease on the archive: it is granted only while no one has the
 * file open for writing, and whoever opens it for writing later must wait
 * until the lease is given up, or broken after /proc/sys/fs/lease-break-time
 * seconds.  While the lease holds, a chunk read once to check its MAC can
 * be read again to decrypt it (from the page cache) instead of being
 * copied to a temporary file: the streams check that it still holds after
 * each chunk.  A break is signalled with SIGIO, ignored here.  Without a
 * lease (not a regular file, not the owner nor root, a writer), chunks go
 * through temporary files. */
static bool take_lease(int fd, const struct stat *sb, struct sigaction *old)
{
	struct sigaction ign = { .sa_handler = SIG_IGN };

	if (!S_ISREG(sb->st_mode) || sigaction(SIGIO, &ign, old) < 0)
		return false;
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
		return true;
	sigaction(SIGIO, old, NULL);
	return false;
}

int bk_restore_run(const char *root, const struct bk_restore_opts *o,
		   struct bk_restore_result *res, struct qp_err *err)
{
	struct restore r = { .o = o, .res = res, .fd = -1 };
	struct sigaction old_sigio;
	struct stat sb = { 0 };
	int ret;

	memset(res, 0, sizeof(*res));
	r.tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	r.fd = open(o->path, O_RDONLY | O_CLOEXEC);
	if (r.fd < 0)
		return qp_err_set(err, -errno, "cannot open '%s': %s", o->path, strerror(errno));
	if (fstat(r.fd, &sb) == 0)
		r.archive_size = (uint64_t)sb.st_size;
	r.leased = take_lease(r.fd, &sb, &old_sigio);
	bk_in_init_fd(&r.in, r.fd);
	ret = bk_tar_reader_new(&r.in, BK_TAR_OUTER, MEMBER_MAX, &r.tr, err);
	if (ret == 0)
		ret = read_archive(&r, root, err);
	if (ret == 0) {
		res->missing = report_missing(&r);
		if (res->missing && !o->verify_only)
			ret = qp_err_set(err, -EBADMSG,
					 "the archive lacks %u file%s that its qubes.xml promises",
					 res->missing, res->missing == 1 ? "" : "s");
	}
	if (ret == 0)
		ret = commit(&r, err);
	else
		rollback(&r);
	res->archive_bytes = r.in.nread;
	if (ret < 0 && ret != -EKEYREJECTED)
		qp_err_prefix(err, "cannot %s '%s'", o->verify_only ? "verify" : "restore from",
			      o->path);
	bk_tar_reader_free(r.tr);
	bk_header_free(r.hdr);
	for (size_t i = 0; i < r.n_vms; i++)
		free(r.vms[i].name);
	free(r.vms);
	qp_state_free(r.bx);
	qp_state_free(r.st);
	if (r.leased) {
		(void)fcntl(r.fd, F_SETLEASE, F_UNLCK);
		sigaction(SIGIO, &old_sigio, NULL);
	}
	close(r.fd);
	return ret;
}
