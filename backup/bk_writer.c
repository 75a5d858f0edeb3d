/* qpool backup: the writer pipeline (see bk_writer.h and backup/FORMAT.md). */
#include "bk_writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "bk_aout.h"
#include "bk_header.h"
#include "bk_job.h"
#include "bk_secure.h"
#include "bk_tar.h"

enum slot_state { SLOT_FREE, SLOT_FILLED, SLOT_WORKING, SLOT_DONE };

struct slot {
	enum slot_state state;
	uint64_t seq;
	size_t file; /* index into the key sequence: 1.. for files */
	bool last;   /* last block of its file */
	struct bk_buf in, out;
};

/* A key derivation started ahead for chunk @chunk of item @item (item 0 is
 * backup-header.hmac, item i >= 1 is files[i - 1]). */
struct kdf_ahead {
	size_t item;
	unsigned chunk;
	struct bk_kdf_job *job;
};

struct writer {
	const struct bk_writer_opts *o;
	const struct bk_wfile *files;
	size_t n;
	/* ---- shared, under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond_work, cond_done, cond_free;
	struct slot slots[BK_WRITER_SLOTS];
	size_t scanned; /* files whose sparse map is in maps[] */
	uint64_t next_fill; /* producer's next sequence number */
	bool stop;
	int ret;
	struct qp_err err;
	/* ---- producer only */
	struct slot *cur;
	size_t cur_item;
	/* ---- written by the scanner, read once scanned says so */
	struct bk_sparse_map *maps;
	pthread_t scanner;
	bool scanning;
	/* ---- caller only */
	struct bk_out out; /* through aout */
	struct bk_aout *aout;
	unsigned *ub; /* per item: chunks the key lookahead plans for */
	uint64_t *lim; /* per item: bytes of stream per chunk */
	struct kdf_ahead ahead[8];
	size_t n_ahead;
	size_t gen_item; /* next key the lookahead would start */
	unsigned gen_chunk;
	struct bk_scrypt_ctx *ctx; /* open chunk, or NULL */
	uint64_t chunk_bytes;
	uint64_t member_off, member_hdr_len;
	char member[BK_TAR_NAME_MAX];
	uint64_t in_bytes;
	struct bk_writer_stats *stats;
};

/* Records the first failure and wakes every thread. */
static int w_fail(struct writer *w, int ret, const struct qp_err *err)
{
	pthread_mutex_lock(&w->lock);
	if (w->ret == 0) {
		w->ret = ret;
		w->err = *err;
	}
	w->stop = true;
	pthread_cond_broadcast(&w->cond_work);
	pthread_cond_broadcast(&w->cond_done);
	pthread_cond_broadcast(&w->cond_free);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

/* ---- compression workers --------------------------------------------------- */

/* One gzip member holding @n bytes of @in without compression (deflate's
 * stored blocks): what incompressible data costs least as. */
static int gzip_stored(const void *in, size_t n, struct bk_buf *out, struct qp_err *err)
{
	z_stream z = { 0 };
	int r;

	r = bk_buf_reserve(out, n + n / 16000 * 5 + 64);
	if (r < 0)
		return qp_err_set(err, r, "out of memory");
	if (deflateInit2(&z, 0, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return qp_err_set(err, -ENOMEM, "cannot start gzip");
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)n;
	z.next_out = out->data + out->len;
	z.avail_out = (uInt)(out->cap - out->len);
	r = deflate(&z, Z_FINISH);
	if (r == Z_STREAM_END)
		out->len += z.total_out;
	deflateEnd(&z);
	return r == Z_STREAM_END ? 0 : qp_err_set(err, -EIO, "gzip failed (%d)", r);
}

/* Compresses one block.  For gzip, a 64 KiB sample from the middle is tried
 * at level 1 first: when it does not shrink by 3%, the block is stored, which
 * keeps random data (encrypted or compressed content) at memory speed. */
static int compress_block(const struct bk_writer_opts *o, struct slot *s, struct qp_err *err)
{
	enum { SAMPLE = 64 << 10 };
	int r;

	s->out.len = 0;
	if (s->in.len == 0)
		return 0;
	if (o->filter == BK_FILTER_GZIP && s->in.len >= 4 * SAMPLE) {
		struct bk_buf probe = { 0 };

		r = bk_compress_block(BK_FILTER_GZIP, 1, s->in.data + s->in.len / 2 - SAMPLE / 2,
				      SAMPLE, &probe, err);
		if (r == 0 && probe.len > SAMPLE - SAMPLE / 32) {
			bk_buf_release(&probe);
			return gzip_stored(s->in.data, s->in.len, &s->out, err);
		}
		bk_buf_release(&probe);
		if (r < 0)
			return r;
	}
	if (o->filter == BK_FILTER_EXTERNAL)
		return bk_filter_block(o->filter_name, s->in.data, s->in.len, &s->out, err);
	return bk_compress_block(o->filter, o->level, s->in.data, s->in.len, &s->out, err);
}

static void *worker_main(void *arg)
{
	struct writer *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct slot *s = NULL;
		struct qp_err err = { 0 };
		int r;

		for (size_t i = 0; i < BK_WRITER_SLOTS; i++)
			if (w->slots[i].state == SLOT_FILLED && (!s || w->slots[i].seq < s->seq))
				s = &w->slots[i];
		if (w->stop)
			break;
		if (!s) {
			pthread_cond_wait(&w->cond_work, &w->lock);
			continue;
		}
		s->state = SLOT_WORKING;
		pthread_mutex_unlock(&w->lock);
		if (w->o->filter == BK_FILTER_NONE) {
			struct bk_buf t = s->out;

			s->out = s->in;
			s->in = t;
			s->in.len = 0;
			r = 0;
		} else {
			r = compress_block(w->o, s, &err);
		}
		if (r < 0)
			w_fail(w, r, &err);
		pthread_mutex_lock(&w->lock);
		s->state = SLOT_DONE;
		pthread_cond_broadcast(&w->cond_done);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* ---- producer ------------------------------------------------------------------ */

/* Hands the current block to the workers and takes the next free slot. */
static int publish(struct writer *w, bool last, struct qp_err *err)
{
	struct slot *s;

	pthread_mutex_lock(&w->lock);
	if (w->cur) {
		w->cur->last = last;
		w->cur->state = SLOT_FILLED;
		w->cur = NULL;
		pthread_cond_broadcast(&w->cond_work);
	}
	s = &w->slots[w->next_fill % BK_WRITER_SLOTS];
	while (!w->stop && s->state != SLOT_FREE)
		pthread_cond_wait(&w->cond_free, &w->lock);
	if (w->stop) {
		pthread_mutex_unlock(&w->lock);
		return qp_err_set(err, -ECANCELED, "backup cancelled");
	}
	s->seq = w->next_fill++;
	s->file = w->cur_item;
	s->last = false;
	s->in.len = 0;
	w->cur = s;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* bk_out callback: fills blocks. */
static int produce(void *ctx, const void *buf, size_t len, struct qp_err *err)
{
	struct writer *w = ctx;
	const uint8_t *p = buf;
	int r;

	while (len > 0) {
		struct slot *s = w->cur;
		size_t n;

		if (s->in.len == BK_WRITER_BLOCK) {
			r = publish(w, false, err);
			if (r < 0)
				return r;
			continue;
		}
		if (s->in.cap < BK_WRITER_BLOCK) {
			r = bk_buf_reserve(&s->in, BK_WRITER_BLOCK - s->in.len);
			if (r < 0)
				return qp_err_set(err, r, "out of memory");
		}
		n = BK_WRITER_BLOCK - s->in.len;
		n = n < len ? n : len;
		memcpy(s->in.data + s->in.len, p, n);
		s->in.len += n;
		p += n;
		len -= n;
	}
	return 0;
}

/* The sparse maps of the images, in order, ahead of the producer: the scan
 * for zeros reads every image once before its tar header can be written,
 * and that read runs while the first keys are derived instead of in the
 * middle of the stream.  It also brings the image into the page cache for
 * the producer's second read. */
static void *scanner_main(void *arg)
{
	struct writer *w = arg;
	struct qp_err err = { 0 };
	int r = 0;

	for (size_t i = 0; r == 0 && i < w->n; i++) {
		const struct bk_wfile *f = &w->files[i];

		if (f->fd >= 0) {
			r = bk_sparse_scan(f->fd, w->o->sparse_flags, &w->maps[i], &err);
			if (r < 0) {
				qp_err_prefix(&err, "cannot read '%s'", f->path);
				w_fail(w, r, &err);
			}
		}
		pthread_mutex_lock(&w->lock);
		if (r == 0)
			w->scanned = i + 1;
		if (w->stop)
			r = -ECANCELED;
		pthread_cond_broadcast(&w->cond_free);
		pthread_mutex_unlock(&w->lock);
	}
	return NULL;
}

/* Waits for the sparse map of file @i. */
static int wait_map(struct writer *w, size_t i, struct qp_err *err)
{
	bool ready;

	pthread_mutex_lock(&w->lock);
	while (!w->stop && w->scanned <= i)
		pthread_cond_wait(&w->cond_free, &w->lock);
	ready = w->scanned > i;
	pthread_mutex_unlock(&w->lock);
	return ready ? 0 : qp_err_set(err, -ECANCELED, "backup cancelled");
}

static void *producer_main(void *arg)
{
	struct writer *w = arg;
	struct bk_out out = { .write = produce, .ctx = w, .fd = -1 };
	struct qp_err err = { 0 };
	int r = 0;

	for (size_t i = 0; r == 0 && i < w->n; i++) {
		const struct bk_wfile *f = &w->files[i];

		w->cur_item = i + 1;
		r = publish(w, false, &err);
		if (r == 0 && f->fd >= 0)
			r = wait_map(w, i, &err);
		if (r == 0 && f->fd >= 0)
			r = bk_inner_write_sparse_map(&out, f->fd, f->path, w->o->mtime, &w->maps[i],
						      &err);
		else if (r == 0)
			r = bk_inner_write_file(&out, f->path, f->data, f->len, w->o->mtime, &err);
		if (r < 0)
			qp_err_prefix(&err, "cannot read '%s'", f->path);
		if (r == 0) {
			pthread_mutex_lock(&w->lock);
			w->cur->last = true;
			w->cur->state = SLOT_FILLED;
			w->cur = NULL;
			pthread_cond_broadcast(&w->cond_work);
			pthread_mutex_unlock(&w->lock);
		}
	}
	if (r < 0 && r != -ECANCELED)
		w_fail(w, r, &err);
	return NULL;
}

/* ---- keys ---------------------------------------------------------------------- */

/* The scrypt passphrase of chunk @chunk of item @item, in secure memory. */
static int item_pass(struct writer *w, size_t item, unsigned chunk, char **pass, size_t *len,
		     struct qp_err *err)
{
	char name[BK_TAR_NAME_MAX];

	if (item == 0)
		return bk_header_pass_for_header(w->o->pass, w->o->passlen, pass, len, err);
	if ((size_t)snprintf(name, sizeof(name), "%s.%03u", w->files[item - 1].path, chunk) >=
	    sizeof(name))
		return qp_err_set(err, -ENAMETOOLONG, "member name too long");
	return bk_header_pass_for_file(w->o->backup_id, name, w->o->pass, w->o->passlen, pass, len,
				       err);
}

static int kdf_start(struct writer *w, size_t item, unsigned chunk, struct qp_err *err)
{
	struct kdf_ahead *a = &w->ahead[w->n_ahead];
	char *pass = NULL;
	size_t len = 0;
	int r;

	r = item_pass(w, item, chunk, &pass, &len, err);
	if (r == 0)
		r = bk_kdf_job_start(pass, len, &w->o->kdf, NULL, &a->job, err);
	bk_secure_free(pass);
	if (r < 0)
		return r;
	a->item = item;
	a->chunk = chunk;
	w->n_ahead++;
	return 0;
}

/* Starts derivations along the planned sequence until kdf_ahead run. */
static int kdf_fill(struct writer *w, struct qp_err *err)
{
	size_t max = (size_t)w->o->kdf_ahead;

	if (max > sizeof(w->ahead) / sizeof(w->ahead[0]))
		max = sizeof(w->ahead) / sizeof(w->ahead[0]);
	while (w->n_ahead < max && w->gen_item <= w->n) {
		int r;

		if (w->gen_chunk >= w->ub[w->gen_item]) {
			w->gen_item++;
			w->gen_chunk = 0;
			continue;
		}
		r = kdf_start(w, w->gen_item, w->gen_chunk, err);
		if (r < 0)
			return r;
		w->gen_chunk++;
	}
	return 0;
}

static bool before(size_t i1, unsigned c1, size_t i2, unsigned c2)
{
	return i1 < i2 || (i1 == i2 && c1 < c2);
}

/* The key of chunk @chunk of @item: from the lookahead when it planned it,
 * else derived now.  Keys planned for chunks that did not happen are
 * dropped. */
static int kdf_get(struct writer *w, size_t item, unsigned chunk, struct bk_scrypt_key **key,
		   struct qp_err *err)
{
	int r;

	while (w->n_ahead > 0 && before(w->ahead[0].item, w->ahead[0].chunk, item, chunk)) {
		bk_kdf_job_free(w->ahead[0].job);
		memmove(&w->ahead[0], &w->ahead[1], --w->n_ahead * sizeof(w->ahead[0]));
		w->stats->kdf_wasted++;
	}
	if (before(w->gen_item, w->gen_chunk, item, chunk + 1)) {
		w->gen_item = item;
		w->gen_chunk = chunk + 1;
	}
	if (w->n_ahead == 0) {
		r = kdf_start(w, item, chunk, err);
		if (r < 0)
			return r;
	}
	r = kdf_fill(w, err);
	if (r < 0)
		return r;
	r = bk_kdf_job_wait(w->ahead[0].job, key, err);
	bk_kdf_job_free(w->ahead[0].job);
	memmove(&w->ahead[0], &w->ahead[1], --w->n_ahead * sizeof(w->ahead[0]));
	if (r == 0)
		r = kdf_fill(w, err);
	return r;
}

/* ---- chunks ---------------------------------------------------------------------- */

static int mem_write(void *ctx, const void *buf, size_t len, struct qp_err *err)
{
	struct bk_buf *b = ctx;

	if (bk_buf_reserve(b, len) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	memcpy(b->data + b->len, buf, len);
	b->len += len;
	return 0;
}

static int chunk_open(struct writer *w, size_t item, unsigned chunk, struct qp_err *err)
{
	struct bk_scrypt_key *key = NULL;
	uint8_t hdr[BK_SCRYPT_HDR_LEN];
	int r;

	if (item == 0)
		snprintf(w->member, sizeof(w->member), "backup-header.hmac");
	else
		snprintf(w->member, sizeof(w->member), "%s.%03u.enc", w->files[item - 1].path,
			 chunk);
	r = kdf_get(w, item, chunk, &key, err);
	if (r == 0)
		r = bk_scrypt_enc_init(key, hdr, &w->ctx, err);
	bk_scrypt_key_free(key);
	if (r < 0)
		return r;
	w->member_off = w->out.written;
	/* Placeholder size: the header is rewritten with the real one. */
	r = bk_tar_member_begin(&w->out, w->member, 0, w->o->mtime, err);
	if (r < 0)
		return r;
	w->member_hdr_len = w->out.written - w->member_off;
	w->chunk_bytes = 0;
	return bk_out_write(&w->out, hdr, sizeof(hdr), err);
}

static int chunk_close(struct writer *w, struct qp_err *err)
{
	struct bk_buf hb = { 0 };
	struct bk_out mem = { .write = mem_write, .ctx = &hb, .fd = -1 };
	uint8_t mac[BK_SCRYPT_MAC_LEN];
	uint64_t size = w->chunk_bytes + BK_SCRYPT_OVERHEAD;
	int r;

	r = bk_scrypt_enc_final(w->ctx, mac, err);
	bk_scrypt_ctx_free(w->ctx);
	w->ctx = NULL;
	if (r == 0)
		r = bk_out_write(&w->out, mac, sizeof(mac), err);
	if (r == 0)
		r = bk_tar_member_begin(&mem, w->member, size, w->o->mtime, err);
	if (r == 0 && hb.len != w->member_hdr_len)
		r = qp_err_set(err, -EOVERFLOW, "tar header of '%s' changed length", w->member);
	if (r == 0)
		r = bk_aout_pwrite(w->aout, hb.data, hb.len, w->member_off, err);
	bk_buf_release(&hb);
	if (r == 0)
		r = bk_tar_member_end(&w->out, size, err);
	if (r == 0)
		w->stats->chunks++;
	return r;
}

/* Appends @len bytes of item @item's compressed stream (encrypted in place). */
static int chunk_data(struct writer *w, size_t item, uint8_t *p, size_t len, unsigned *chunk,
		      struct qp_err *err)
{
	int r;

	while (len > 0) {
		size_t n;

		if (!w->ctx) {
			r = chunk_open(w, item, *chunk, err);
			if (r < 0)
				return r;
		}
		n = w->lim[item] - w->chunk_bytes < len ? (size_t)(w->lim[item] - w->chunk_bytes)
							: len;
		r = bk_scrypt_enc_update(w->ctx, p, n, p, err);
		if (r == 0)
			r = bk_out_write(&w->out, p, n, err);
		if (r < 0)
			return r;
		w->chunk_bytes += n;
		p += n;
		len -= n;
		if (w->chunk_bytes == w->lim[item]) {
			r = chunk_close(w, err);
			if (r < 0)
				return r;
			(*chunk)++;
		}
	}
	return 0;
}

/* backup-header, then backup-header.hmac. */
static int write_header(struct writer *w, struct qp_err *err)
{
	uint8_t *copy;
	unsigned chunk = 0;
	int r;

	r = bk_tar_member_begin(&w->out, "backup-header", w->o->header_len, w->o->mtime, err);
	if (r == 0)
		r = bk_out_write(&w->out, w->o->header, w->o->header_len, err);
	if (r == 0)
		r = bk_tar_member_end(&w->out, w->o->header_len, err);
	if (r < 0)
		return r;
	copy = malloc(w->o->header_len + 1);
	if (!copy)
		return qp_err_set(err, -ENOMEM, "out of memory");
	memcpy(copy, w->o->header, w->o->header_len);
	r = chunk_open(w, 0, 0, err);
	if (r == 0)
		r = chunk_data(w, 0, copy, w->o->header_len, &chunk, err);
	if (r == 0 && w->ctx)
		r = chunk_close(w, err);
	free(copy);
	return r;
}

/* The caller's loop: blocks in order → chunks → archive. */
static int consume(struct writer *w, struct qp_err *err)
{
	size_t item = 1;
	unsigned chunk = 0;
	uint64_t seq = 0;
	int r;

	while (item <= w->n) {
		struct slot *s = &w->slots[seq % BK_WRITER_SLOTS];

		pthread_mutex_lock(&w->lock);
		while (!w->stop && !(s->state == SLOT_DONE && s->seq == seq))
			pthread_cond_wait(&w->cond_done, &w->lock);
		pthread_mutex_unlock(&w->lock);
		if (w->stop)
			return -ECANCELED;
		if (s->file != item)
			return qp_err_set(err, -EPROTO, "block of file %zu out of order", s->file);
		w->in_bytes += s->in.len ? s->in.len : s->out.len;
		r = chunk_data(w, item, s->out.data, s->out.len, &chunk, err);
		if (r == 0 && s->last && w->ctx)
			r = chunk_close(w, err);
		if (r < 0)
			return r;
		if (s->last) {
			item++;
			chunk = 0;
		}
		pthread_mutex_lock(&w->lock);
		s->state = SLOT_FREE;
		pthread_cond_broadcast(&w->cond_free);
		pthread_mutex_unlock(&w->lock);
		seq++;
		if (w->o->progress)
			w->o->progress(w->o->progress_ctx, w->in_bytes, w->out.written);
	}
	return 0;
}

/* How many chunks item @i can take at most, so the key lookahead plans for
 * them: the inner stream's size (data extents of an image plus headers and
 * map), plus what compression can add to incompressible data.
 *
 * Every chunk costs a key derivation, so a chunk may grow up to 1/16 past
 * the chunk size when that saves one: a 1 GiB volume of random data (a
 * stream of 1 GiB and a few KiB) is one chunk of 1 GiB and a few KiB, not
 * a second chunk of a few KiB.  The stream of item i is cut every lim[i]
 * bytes: the chunk size, or a little more when the bound allows one chunk
 * fewer. */
static int plan(struct writer *w, struct qp_err *err)
{
	uint64_t stretch = w->o->chunk_size + w->o->chunk_size / 16;

	if (stretch > BK_WRITER_CHUNK_MAX)
		stretch = BK_WRITER_CHUNK_MAX;

	w->ub = calloc(w->n + 1, sizeof(*w->ub));
	w->lim = calloc(w->n + 1, sizeof(*w->lim));
	if (!w->ub || !w->lim)
		return qp_err_set(err, -ENOMEM, "out of memory");
	w->ub[0] = 1;
	w->lim[0] = w->o->chunk_size;
	for (size_t i = 0; i < w->n; i++) {
		const struct bk_wfile *f = &w->files[i];
		uint64_t est = f->len + 8192;

		if (f->fd >= 0) {
			struct bk_sparse_map m = { 0 };
			int r = bk_sparse_scan(f->fd, 0, &m, err);

			if (r < 0)
				return qp_err_prefix(err, "cannot read '%s'", f->path);
			est = 8192 + 48 * (uint64_t)m.n;
			for (size_t e = 0; e < m.n; e++)
				est += m.ext[e].len;
			bk_sparse_map_release(&m);
		}
		if (w->o->filter != BK_FILTER_NONE)
			est += est / 256 + 64 * (est / BK_WRITER_BLOCK + 1);
		w->ub[i + 1] = (unsigned)((est + stretch - 1) / stretch);
		if (w->ub[i + 1] == 0)
			w->ub[i + 1] = 1;
		w->lim[i + 1] = (est + w->ub[i + 1] - 1) / w->ub[i + 1];
		if (w->lim[i + 1] < w->o->chunk_size)
			w->lim[i + 1] = w->o->chunk_size;
	}
	return 0;
}

static void writer_release(struct writer *w, pthread_t *threads, int nthreads)
{
	w_fail(w, -ECANCELED, &(struct qp_err){ .code = -ECANCELED });
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	if (w->scanning)
		pthread_join(w->scanner, NULL);
	for (size_t i = 0; w->maps && i < w->n; i++)
		bk_sparse_map_release(&w->maps[i]);
	free(w->maps);
	for (size_t i = 0; i < BK_WRITER_SLOTS; i++) {
		bk_buf_release(&w->slots[i].in);
		bk_buf_release(&w->slots[i].out);
	}
	for (size_t i = 0; i < w->n_ahead; i++)
		bk_kdf_job_free(w->ahead[i].job);
	bk_scrypt_ctx_free(w->ctx);
	bk_aout_free(w->aout);
	free(w->ub);
	free(w->lim);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond_work);
	pthread_cond_destroy(&w->cond_done);
	pthread_cond_destroy(&w->cond_free);
}

int bk_writer_run(int fd, const struct bk_wfile *files, size_t n, const struct bk_writer_opts *o,
		  struct bk_writer_stats *stats, struct qp_err *err)
{
	struct writer w = { .o = o, .files = files, .n = n, .stats = stats };
	pthread_t threads[65];
	int nthreads = 0, r;

	memset(stats, 0, sizeof(*stats));
	if (o->chunk_size < 1 || o->chunk_size > BK_WRITER_CHUNK_MAX)
		return qp_err_set(err, -EINVAL, "chunk size must be from 1 byte to 4 GiB");
	if (o->workers < 1 || o->workers > 64 || o->kdf_ahead < 1)
		return qp_err_set(err, -EINVAL, "invalid thread counts");
	if (o->filter == BK_FILTER_EXTERNAL && (r = bk_filter_check(o->filter_name, err)) < 0)
		return r;
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond_work, NULL);
	pthread_cond_init(&w.cond_done, NULL);
	pthread_cond_init(&w.cond_free, NULL);
	r = bk_aout_start(fd, "the archive", &w.aout, err);
	w.out = (struct bk_out){ .write = bk_aout_write, .ctx = w.aout, .fd = -1 };
	if (r == 0)
		r = plan(&w, err);
	/* The first keys (header, qubes.xml) start before anything else. */
	if (r == 0)
		r = kdf_fill(&w, err);
	if (r == 0 && !(w.maps = calloc(n ? n : 1, sizeof(*w.maps))))
		r = qp_err_set(err, -ENOMEM, "out of memory");
	if (r == 0) {
		r = -pthread_create(&w.scanner, NULL, scanner_main, &w);
		if (r < 0)
			qp_err_set(err, r, "cannot start a thread: %s", strerror(-r));
		w.scanning = r == 0;
	}
	for (int i = 0; r == 0 && i < o->workers + 1; i++) {
		r = -pthread_create(&threads[nthreads], NULL, i ? worker_main : producer_main, &w);
		if (r < 0)
			qp_err_set(err, r, "cannot start a thread: %s", strerror(-r));
		else
			nthreads++;
	}
	if (r == 0)
		r = write_header(&w, err);
	if (r == 0)
		r = consume(&w, err);
	if (r == 0 && w.aout)
		r = bk_aout_finish(w.aout, err);
	if (r == -ECANCELED || (r == 0 && w.ret < 0)) {
		pthread_mutex_lock(&w.lock);
		r = w.ret ? w.ret : r;
		if (w.ret)
			*err = w.err;
		pthread_mutex_unlock(&w.lock);
	}
	if (r < 0)
		w.stop = true;
	stats->in_bytes = w.in_bytes;
	stats->out_bytes = w.out.written;
	writer_release(&w, threads, nthreads);
	return r;
}
