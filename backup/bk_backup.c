/* qpool backup: which VMs and files go into a backup, and the qubes.xml copy. */
#include "bk_backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bk_header.h"
#include "bk_job.h"
#include "bk_writer.h"

/* One volume image going into the backup. */
struct bk_item {
	char path[64]; /* vm<qid>/<volume>.img */
	int fd;
	uint64_t size;
};

struct plan {
	struct qp_domain **doms; /* selected, borrowed from the state */
	size_t n_doms;
	struct bk_item *items;
	size_t n_items;
	char *xml;
	size_t xml_len;
	uint64_t total;
	size_t n_vms;
};

static void plan_release(struct plan *p)
{
	for (size_t i = 0; i < p->n_items; i++)
		if (p->items[i].fd >= 0)
			close(p->items[i].fd);
	free(p->items);
	free(p->doms);
	free(p->xml);
	memset(p, 0, sizeof(*p));
}

static bool listed(char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(names[i], name))
			return true;
	return false;
}

static bool included_by_default(const struct qp_domain *d)
{
	const char *v = qp_dom_prop(d, "include_in_backups");
	bool b;

	if (v && qp_parse_bool(v, &b) == 0)
		return b;
	return d->cls != QP_ADMINVM;
}

static int select_vms(struct qp_state *st, const struct bk_backup_opts *o, struct plan *p,
		      struct qp_err *err)
{
	for (size_t i = 0; i < o->n_vms; i++)
		if (!qp_dom_find(st, o->vms[i]))
			return qp_err_set(err, -ENOENT, "VM '%s' does not exist", o->vms[i]);
	for (size_t i = 0; i < o->n_exclude; i++)
		if (!qp_dom_find(st, o->exclude[i]))
			return qp_err_set(err, -ENOENT, "excluded VM '%s' does not exist",
					  o->exclude[i]);
	p->doms = calloc(st->n_doms + 1, sizeof(*p->doms));
	if (!p->doms)
		return qp_err_set(err, -ENOMEM, "out of memory");
	for (int qid = 0; qid <= 65535 && p->n_doms < st->n_doms; qid++) {
		for (size_t i = 0; i < st->n_doms; i++) {
			struct qp_domain *d = st->doms[i];

			if (d->qid != qid || listed(o->exclude, o->n_exclude, d->name))
				continue;
			if (o->n_vms ? !listed(o->vms, o->n_vms, d->name) : !included_by_default(d))
				continue;
			if (d->cls == QP_ADMINVM) {
				if (o->n_vms)
					return qp_err_set(err, -ENOTSUP,
							  "cannot back up '%s': backing up dom0 is not supported",
							  d->name);
				continue;
			}
			p->doms[p->n_doms++] = d;
		}
	}
	if (p->n_doms == 0)
		return qp_err_set(err, -ENOENT, "no VMs to back up");
	return 0;
}

/* Rank of a volume in the backup: root, then private, then the others. */
static int vol_rank(const struct qp_volume *v)
{
	return !strcmp(v->name, "root") ? 0 : !strcmp(v->name, "private") ? 1 : 2;
}

static int add_item(struct plan *p, size_t *cap, struct qp_volume *v, struct qp_err *err)
{
	struct qp_domain *d = v->vm;
	struct bk_item *it;
	char *path = NULL;
	int r;

	if (qp_vol_rtk(v) == -1 && qp_dom_started(d))
		return qp_err_set(err, -EBUSY,
				  "cannot back up '%s:%s': it is running with snapshots disabled",
				  d->name, v->name);
	if (p->n_items == *cap) {
		struct bk_item *n;

		*cap = *cap ? 2 * *cap : 16;
		n = realloc(p->items, *cap * sizeof(*n));
		if (!n)
			return qp_err_set(err, -ENOMEM, "out of memory");
		p->items = n;
	}
	it = &p->items[p->n_items];
	it->fd = -1;
	if ((size_t)snprintf(it->path, sizeof(it->path), "vm%d/%s.img", d->qid, v->name) >=
	    sizeof(it->path))
		return qp_err_set(err, -ENAMETOOLONG, "volume name '%s' is too long", v->name);
	r = qp_vol_export(v, &path, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot back up '%s'", d->name);
	it->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (it->fd < 0)
		r = qp_err_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
	free(path);
	if (r < 0)
		return r;
	it->size = v->size;
	p->n_items++;
	p->total += v->size;
	return 0;
}

/* Opens the committed content of every save_on_stop volume, root first. */
static int open_volumes(struct plan *p, struct qp_err *err)
{
	size_t cap = 0;

	for (size_t i = 0; i < p->n_doms; i++) {
		struct qp_domain *d = p->doms[i];

		for (int rank = 0; rank < 3; rank++) {
			for (size_t j = 0; j < d->n_vols; j++) {
				int r;

				if (!d->vols[j]->save_on_stop || vol_rank(d->vols[j]) != rank)
					continue;
				r = add_item(p, &cap, d->vols[j], err);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

static bool selected(const struct plan *p, const struct qp_domain *d)
{
	for (size_t i = 0; i < p->n_doms; i++)
		if (p->doms[i] == d)
			return true;
	return false;
}

/* The qubes.xml copy: every domain, dom0 included, with backup-content set
 * ("1" for VMs in the backup, empty otherwise), backup-path vm<qid>/ and
 * backup-size; no runtime marks. */
static int make_xml(struct qp_state *st, struct plan *p, struct qp_err *err)
{
	struct qp_state *copy = NULL;
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = qp_state_format(st, &buf, &len, err);
	if (r == 0)
		r = qp_state_parse(buf, len, &copy, err);
	free(buf);
	if (r < 0)
		return qp_err_prefix(err, "cannot prepare qubes.xml");
	for (size_t i = 0; r == 0 && i < copy->n_doms; i++) {
		struct qp_domain *d = copy->doms[i];
		struct qp_domain *orig = qp_dom_find(st, d->name);
		char path[32], size[32];
		uint64_t sum = 0;

		free(d->started);
		d->started = NULL;
		if (!orig || !selected(p, orig)) {
			if (qp_kv_set(&d->features, "backup-content", "") < 0 ||
			    qp_kv_set(&d->features, "backup-path", NULL) < 0 ||
			    qp_kv_set(&d->features, "backup-size", NULL) < 0)
				r = qp_err_set(err, -ENOMEM, "out of memory");
			continue;
		}
		for (size_t j = 0; j < orig->n_vols; j++)
			if (orig->vols[j]->save_on_stop)
				sum += orig->vols[j]->size;
		snprintf(path, sizeof(path), "vm%d/", d->qid);
		snprintf(size, sizeof(size), "%llu", (unsigned long long)sum);
		if (qp_kv_set(&d->features, "backup-content", "1") < 0 ||
		    qp_kv_set(&d->features, "backup-path", path) < 0 ||
		    qp_kv_set(&d->features, "backup-size", size) < 0)
			r = qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (r == 0)
		r = qp_state_format(copy, &p->xml, &p->xml_len, err);
	qp_state_free(copy);
	return r;
}

/* Takes the state lock only while the exports are opened. */
static int prepare(const char *root, const struct bk_backup_opts *o, struct plan *p,
		   struct qp_err *err)
{
	struct qp_state *st = NULL;
	int r;

	r = qp_state_open(root, QP_STATE_WRITE, &st, err);
	if (r == 0)
		r = select_vms(st, o, p, err);
	if (r == 0)
		r = open_volumes(p, err);
	if (r == 0)
		r = make_xml(st, p, err);
	/* The domains are borrowed from @st: forget them with it. */
	p->n_vms = p->n_doms;
	free(p->doms);
	p->doms = NULL;
	qp_state_free(st);
	return r;
}

/* Creates the archive: @dest itself, or qubes-YYYY-MM-DDTHHMMSS inside it
 * when it is a folder. */
static int open_dest(const char *dest, time_t now, char **path, int *fd, struct qp_err *err)
{
	struct stat sb;
	struct tm tm;
	char stamp[32];

	*fd = -1;
	if (stat(dest, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "qubes-%Y-%m-%dT%H%M%S", &tm);
		*path = qp_strdupf("%s/%s", dest, stamp);
	} else {
		*path = strdup(dest);
	}
	if (!*path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	*fd = open(*path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (*fd < 0)
		return qp_err_set(err, -errno, "cannot create '%s': %s", *path, strerror(errno));
	return 0;
}

static void forward_progress(void *ctx, uint64_t in, uint64_t out)
{
	struct bk_backup_result *res = ctx;

	res->opts_->progress(res->opts_->progress_ctx, in, res->total, out);
}

static int write_archive(int fd, const struct plan *p, const struct bk_backup_opts *o,
			 time_t now, struct bk_backup_result *res, struct qp_err *err)
{
	struct bk_writer_opts wo = { 0 };
	struct bk_writer_stats ws;
	struct bk_header *h = NULL;
	struct bk_wfile *files;
	char id[BK_BACKUP_ID_MAX], *text = NULL;
	size_t len = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int r;

	files = calloc(p->n_items + 1, sizeof(*files));
	if (!files)
		return qp_err_set(err, -ENOMEM, "out of memory");
	files[0] = (struct bk_wfile){ .path = "qubes.xml", .fd = -1, .data = p->xml,
				      .len = p->xml_len };
	for (size_t i = 0; i < p->n_items; i++)
		files[i + 1] = (struct bk_wfile){ .path = p->items[i].path, .fd = p->items[i].fd };
	r = bk_header_backup_id(now, getpid(), id, err);
	if (r == 0)
		r = bk_header_new(id, o->compress, o->filter, &h, err);
	if (r == 0)
		r = bk_header_format(h, &text, &len, err);
	if (r == 0)
		r = bk_filter_lookup(o->compress ? (o->filter ? o->filter : "gzip") : "none",
				     &wo.filter, err);
	wo.filter_name = o->filter;
	if (r < 0)
		goto out;
	wo.backup_id = id;
	wo.header = text;
	wo.header_len = len;
	wo.pass = o->pass;
	wo.passlen = o->passlen;
	wo.kdf = o->kdf;
	/* gzip -1 by default: on two cores level 6 would make compression, not
	 * the key derivation, the cost of a backup, for ~10% smaller archives. */
	wo.level = o->level > 0 ? o->level : wo.filter == BK_FILTER_GZIP ? 1 : 0;
	wo.chunk_size = o->chunk_size ? o->chunk_size : BK_CHUNK_DEFAULT;
	wo.sparse_flags = o->sparse_flags;
	wo.workers = o->workers > 0 ? o->workers : ncpu > 0 ? (int)ncpu : 1;
	if (wo.workers > 64)
		wo.workers = 64;
	/* Derivations need 1 GiB each by default: two at a time, fewer
	 * where memory is short. */
	wo.kdf_ahead = (int)bk_kdf_parallel(bk_scrypt_params_memory(&wo.kdf), 2);
	wo.mtime = now;
	if (o->progress) {
		wo.progress = forward_progress;
		wo.progress_ctx = res;
		res->opts_ = o;
	}
	r = bk_writer_run(fd, files, p->n_items + 1, &wo, &ws, err);
	if (r == 0 && fsync(fd) < 0)
		r = qp_err_set(err, -errno, "cannot write '%s': %s", res->path, strerror(errno));
	res->in_bytes = ws.in_bytes;
	res->out_bytes = ws.out_bytes;
	res->chunks = ws.chunks;
	res->kdf_wasted = ws.kdf_wasted;
out:
	free(text);
	bk_header_free(h);
	free(files);
	return r;
}

int bk_backup_run(const char *root, const struct bk_backup_opts *o, struct bk_backup_result *res,
		  struct qp_err *err)
{
	struct plan p = { 0 };
	time_t now = time(NULL);
	int fd = -1, r;

	memset(res, 0, sizeof(*res));
	if (!o->pass)
		return qp_err_set(err, -EINVAL, "no passphrase");
	r = prepare(root, o, &p, err);
	if (r < 0)
		goto out;
	res->total = p.total;
	res->n_vms = (unsigned)p.n_vms;
	r = open_dest(o->dest, now, &res->path, &fd, err);
	if (r < 0) {
		free(res->path);
		res->path = NULL;
		goto out;
	}
	r = write_archive(fd, &p, o, now, res, err);
	if (close(fd) < 0 && r == 0)
		r = qp_err_set(err, -errno, "cannot write '%s': %s", res->path, strerror(errno));
	if (r < 0) {
		unlink(res->path);
		free(res->path);
		res->path = NULL;
	}
out:
	plan_release(&p);
	return r;
}

void bk_backup_result_release(struct bk_backup_result *res)
{
	if (!res)
		return;
	free(res->path);
	memset(res, 0, sizeof(*res));
}
