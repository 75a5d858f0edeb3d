/* qpool backup, restore side: decrypting members and extracting files. */
#include "bk_rstream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bk_header.h"
#include "bk_secure.h"

enum { IO = 1 << 20, QUEUE = 2 };

/* ---- one member -------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len, struct qp_err *err)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return qp_err_set(err, -errno, "cannot write a temporary file: %s",
					  strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_exact(struct bk_tar_reader *r, void *buf, size_t len, const char *name,
		      struct qp_err *err)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = bk_tar_read(r, (char *)buf + got, len - got, err);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return qp_err_set(err, -EBADMSG, "member '%s' is truncated", name);
		got += (size_t)n;
	}
	return 0;
}

/* Reads the member's data and trailer and checks its MAC: decrypted into
 * @fd, or with @fd < 0 only MACed (for a second reading from the archive). */
static int decrypt_body(struct bk_tar_reader *r, struct bk_scrypt_ctx *ctx, uint64_t left,
			int fd, const char *name, struct qp_err *err)
{
	uint8_t *buf = malloc(IO), mac[BK_SCRYPT_MAC_LEN];
	int ret = 0;

	if (!buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	while (ret == 0 && left > 0) {
		size_t n = left < IO ? (size_t)left : IO;

		ret = read_exact(r, buf, n, name, err);
		if (ret == 0 && fd < 0)
			ret = bk_scrypt_dec_mac(ctx, buf, n, err);
		else if (ret == 0)
			ret = bk_scrypt_dec_update(ctx, buf, n, buf, err);
		if (ret == 0 && fd >= 0)
			ret = write_all(fd, buf, n, err);
		left -= n;
	}
	if (ret == 0)
		ret = read_exact(r, mac, sizeof(mac), name, err);
	if (ret == 0)
		ret = bk_scrypt_dec_final(ctx, mac, err);
	free(buf);
	return ret;
}

/* Reads the scrypt header of the current member of @r and starts reading
 * it: *@key and *@ctx are the caller's. */
static int member_open(struct bk_tar_reader *r, uint64_t size, const char *backup_id,
		       const char *name, const void *pass, size_t passlen,
		       const struct bk_scrypt_limits *limits, struct bk_prefetch *pf,
		       uint8_t hdr[BK_SCRYPT_HDR_LEN], struct bk_scrypt_key **key,
		       struct bk_scrypt_ctx **ctx, struct qp_err *err)
{
	char *fpass = NULL, rel[BK_TAR_NAME_MAX];
	size_t flen = 0, nlen = strlen(name);
	int ret;

	*key = NULL;
	*ctx = NULL;
	if (size < BK_SCRYPT_OVERHEAD)
		return qp_err_set(err, -EBADMSG, "member '%s' is too short for a scrypt container",
				  name);
	if (nlen < 5 || nlen >= sizeof(rel) || strcmp(name + nlen - 4, ".enc"))
		return qp_err_set(err, -EBADMSG, "member '%s' is not an .enc member", name);
	memcpy(rel, name, nlen - 4);
	rel[nlen - 4] = '\0';
	ret = read_exact(r, hdr, BK_SCRYPT_HDR_LEN, name, err);
	if (ret == 0)
		*key = bk_prefetch_take(pf, name, hdr);
	if (ret == 0 && !*key)
		ret = bk_header_pass_for_file(backup_id, rel, pass, passlen, &fpass, &flen, err);
	if (ret == 0 && !*key)
		ret = bk_scrypt_dec_header(hdr, fpass, flen, limits, key, err);
	bk_secure_free(fpass);
	if (ret == -EKEYREJECTED)
		qp_err_set(err, ret,
			   "member '%s' does not belong to this backup at this place (renamed, swapped or from another backup)",
			   name);
	if (ret == 0)
		ret = bk_scrypt_dec_init(*key, hdr, ctx, err);
	return ret;
}

int bk_member_decrypt(struct bk_tar_reader *r, uint64_t size, const char *backup_id,
		      const char *name, const void *pass, size_t passlen,
		      const struct bk_scrypt_limits *limits, struct bk_prefetch *pf,
		      const char *tmpdir, int *fd, struct qp_err *err)
{
	uint8_t hdr[BK_SCRYPT_HDR_LEN];
	struct bk_scrypt_key *key = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	int out = -1, ret;

	*fd = -1;
	ret = member_open(r, size, backup_id, name, pass, passlen, limits, pf, hdr, &key, &ctx,
			  err);
	if (ret < 0)
		goto out;
	out = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (out < 0) {
		ret = qp_err_set(err, -errno, "cannot create a temporary file in '%s': %s", tmpdir,
				 strerror(errno));
		goto out;
	}
	ret = decrypt_body(r, ctx, size - BK_SCRYPT_OVERHEAD, out, name, err);
	if (ret == 0 && lseek(out, 0, SEEK_SET) < 0)
		ret = qp_err_set(err, -errno, "cannot rewind a temporary file: %s", strerror(errno));
out:
	if (ret < 0 && ret != -EKEYREJECTED)
		qp_err_prefix(err, "cannot decrypt '%s'", name);
	if (ret < 0 && out >= 0)
		close(out);
	else
		*fd = out;
	bk_scrypt_ctx_free(ctx);
	bk_scrypt_key_free(key);
	return ret;
}

int bk_member_verify(struct bk_tar_reader *r, uint64_t size, const char *backup_id,
		     const char *name, const void *pass, size_t passlen,
		     const struct bk_scrypt_limits *limits, struct bk_prefetch *pf,
		     struct bk_scrypt_ctx **dec, struct qp_err *err)
{
	uint8_t hdr[BK_SCRYPT_HDR_LEN];
	struct bk_scrypt_key *key = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	int ret;

	*dec = NULL;
	ret = member_open(r, size, backup_id, name, pass, passlen, limits, pf, hdr, &key, &ctx,
			  err);
	if (ret == 0)
		ret = decrypt_body(r, ctx, size - BK_SCRYPT_OVERHEAD, -1, name, err);
	/* A context of its own for the second reading. */
	if (ret == 0)
		ret = bk_scrypt_dec_init(key, hdr, dec, err);
	if (ret < 0 && ret != -EKEYREJECTED)
		qp_err_prefix(err, "cannot decrypt '%s'", name);
	bk_scrypt_ctx_free(ctx);
	bk_scrypt_key_free(key);
	return ret;
}

/* ---- extraction thread ------------------------------------------------------------ */

/* A verified chunk: plaintext in the temporary file @fd, or ciphertext in
 * @len bytes at @off of the archive @src, decrypted with @ctx as it is
 * read.  @src holds a read lease: no one opened the archive for writing
 * since its chunk was verified while the lease is still there. */
struct chunk {
	int fd;
	int src;
	uint64_t off, len;
	struct bk_scrypt_ctx *ctx;
};

#define NO_CHUNK ((struct chunk){ .fd = -1, .src = -1 })

static void chunk_release(struct chunk *c)
{
	if (c->fd >= 0)
		close(c->fd);
	bk_scrypt_ctx_free(c->ctx);
	*c = NO_CHUNK;
}

/* Reads the next bytes of chunk @c: the count, 0 at its end. */
static ssize_t chunk_read(struct chunk *c, void *buf, size_t len, struct qp_err *err)
{
	ssize_t n;

	if (c->fd >= 0) {
		do
			n = read(c->fd, buf, len);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return qp_err_set(err, -errno, "cannot read a temporary file: %s",
					  strerror(errno));
		return n;
	}
	if (c->len == 0) {
		/* Every byte came from the archive while the lease held. */
		if (fcntl(c->src, F_GETLEASE) != F_RDLCK)
			return qp_err_set(err, -EBUSY,
					  "the archive was opened for writing during the restore");
		return 0;
	}
	do
		n = pread(c->src, buf, len < c->len ? len : (size_t)c->len, (off_t)c->off);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return qp_err_set(err, n < 0 ? -errno : -EIO, "cannot read the archive: %s",
				  n < 0 ? strerror(errno) : "it shrank");
	if (bk_scrypt_dec_ctr(c->ctx, buf, (size_t)n, buf, err) < 0)
		return -EIO;
	c->off += (uint64_t)n;
	c->len -= (uint64_t)n;
	return n;
}

/* ---- the thread -------------------------------------------------------------------- */

struct bk_rstream {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct chunk queue[QUEUE];
	size_t head, count;
	bool eof, stop, done;
	struct chunk cur; /* being read by the thread */
	/* thread's setup */
	enum bk_filter f;
	char prog[32];	/* filter name, for BK_FILTER_EXTERNAL */
	uint64_t limit;
	char name[BK_TAR_NAME_MAX];
	bk_rstream_open_fn open;
	void *ctx;
	size_t max_mem;
	/* result */
	int ret;
	struct qp_err err;
	char *data;
	size_t len;
};

/* bk_in callback: the verified chunks, one after the other. */
static ssize_t chunks_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct bk_rstream *rs = ctx;

	for (;;) {
		if (rs->cur.fd >= 0 || rs->cur.ctx) {
			ssize_t n = chunk_read(&rs->cur, buf, len, err);

			if (n != 0)
				return n;
			chunk_release(&rs->cur);
		}
		pthread_mutex_lock(&rs->lock);
		while (!rs->count && !rs->eof && !rs->stop)
			pthread_cond_wait(&rs->cond, &rs->lock);
		if (rs->stop) {
			pthread_mutex_unlock(&rs->lock);
			return qp_err_set(err, -ECANCELED, "restore cancelled");
		}
		if (!rs->count) {
			pthread_mutex_unlock(&rs->lock);
			return 0;
		}
		rs->cur = rs->queue[rs->head];
		rs->head = (rs->head + 1) % QUEUE;
		rs->count--;
		pthread_cond_broadcast(&rs->cond);
		pthread_mutex_unlock(&rs->lock);
	}
}

struct dsrc {
	struct bk_decomp *d;
	struct bk_in *src;
};

static ssize_t decomp_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct dsrc *s = ctx;

	return bk_decomp_read(s->d, s->src, buf, len, err);
}

/* After the inner archive's end only zeros may follow (GNU tar pads its
 * output to a record). */
static int drain_zeros(struct bk_in *in, struct qp_err *err)
{
	uint8_t *buf = malloc(IO);
	int ret = 0;

	if (!buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	for (;;) {
		ssize_t n = bk_in_read(in, buf, IO, err);

		if (n <= 0) {
			ret = (int)n;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i]) {
				ret = qp_err_set(err, -EBADMSG, "data after the end of the inner archive");
				goto out;
			}
	}
out:
	free(buf);
	return ret;
}

static int read_mem(struct bk_rstream *rs, struct bk_tar_reader *tr,
		    const struct bk_tar_entry *ent, struct qp_err *err)
{
	size_t got = 0;

	if (ent->sparse || ent->size > rs->max_mem)
		return qp_err_set(err, -EFBIG, "'%s' is too large or not a regular file", ent->name);
	rs->data = malloc((size_t)ent->size + 1);
	if (!rs->data)
		return qp_err_set(err, -ENOMEM, "out of memory");
	while (got < ent->size) {
		ssize_t n = bk_tar_read(tr, rs->data + got, (size_t)ent->size - got, err);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return qp_err_set(err, -EBADMSG, "'%s' is truncated", ent->name);
		got += (size_t)n;
	}
	rs->data[got] = '\0';
	rs->len = got;
	return 0;
}

/* ---- external filter programs: the chunks go through the program ------------------- */

struct ext {
	struct bk_child c;
	struct bk_in *src;	/* the chunks */
	pthread_t feeder;
	bool feeding;
	int ret;		/* the feeder's */
	struct qp_err err;
	uint64_t limit, total;
	const char *name;
};

static void *feed_main(void *arg)
{
	struct ext *x = arg;
	uint8_t *buf = malloc(IO);
	sigset_t set;

	/* A program that stops reading makes writes fail with EPIPE. */
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	x->ret = buf ? 0 : qp_err_set(&x->err, -ENOMEM, "out of memory");
	while (x->ret == 0) {
		ssize_t n = bk_in_read(x->src, buf, IO, &x->err);
		struct bk_out o;

		if (n <= 0) {
			x->ret = (int)n;
			break;
		}
		bk_out_init_fd(&o, x->c.in_fd);
		x->ret = bk_out_write(&o, buf, (size_t)n, &x->err);
	}
	close(x->c.in_fd);
	x->c.in_fd = -1;
	free(buf);
	return NULL;
}

static ssize_t ext_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct ext *x = ctx;
	ssize_t n;

	while ((n = read(x->c.out_fd, buf, len)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return qp_err_set(err, -errno, "cannot read from '%s': %s", x->name, strerror(errno));
	x->total += (uint64_t)n;
	if (x->total > x->limit)
		return qp_err_set(err, -EFBIG, "'%s' gives more data than the backup declares",
				  x->name);
	return n;
}

static int ext_start(struct ext *x, const char *name, struct bk_in *src, uint64_t limit,
		     struct qp_err *err)
{
	const char *argv[4];
	int r;

	x->name = name;
	x->src = src;
	x->limit = limit;
	r = bk_filter_argv(name, 1, argv, err);
	if (r == 0)
		r = bk_filter_check(name, err);
	if (r == 0)
		r = bk_filter_spawn(argv, -1, -1, &x->c, err);
	if (r < 0)
		return r;
	r = pthread_create(&x->feeder, NULL, feed_main, x);
	if (r) {
		kill(x->c.pid, SIGKILL);
		bk_filter_wait(&x->c, &(struct qp_err){ 0 });
		return qp_err_set(err, -r, "cannot start a thread: %s", strerror(r));
	}
	x->feeding = true;
	return 0;
}

/* After the output's end (@ret 0) or a failure: the program's verdict. */
static int ext_finish(struct ext *x, int ret, struct qp_err *err)
{
	struct qp_err e2 = { 0 };
	int r;

	bool exited = false;

	if (!x->feeding)
		return ret;
	close(x->c.out_fd);
	x->c.out_fd = -1;
	if (ret < 0) {
		/* A program that refused the data has exited, or does so now
		 * that its output is closed; its message says more than ours. */
		for (int i = 0; i < 50 && !exited; i++) {
			siginfo_t si = { 0 };

			exited = waitid(P_PID, (id_t)x->c.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
				 si.si_pid == x->c.pid;
			if (!exited)
				nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);
		}
		/* Else stop it: the feeder's writes then fail. */
		if (!exited)
			kill(x->c.pid, SIGKILL);
	}
	pthread_join(x->feeder, NULL);
	x->feeding = false;
	r = bk_filter_wait(&x->c, &e2);
	if (ret < 0 && exited && r < 0) {
		*err = e2;
		return qp_err_prefix(err, "'%s' cannot decompress the data", x->name);
	}
	if (ret < 0)
		return ret;
	if (x->ret < 0 && x->ret != -EPIPE) {
		*err = x->err;
		return x->ret;
	}
	if (r < 0 || x->ret < 0) {
		*err = e2;
		return qp_err_prefix(err, "'%s' cannot decompress the data", x->name);
	}
	return 0;
}

static int extract(struct bk_rstream *rs, struct qp_err *err)
{
	struct bk_in chunks = { .read = chunks_read, .ctx = rs, .fd = -1 };
	struct dsrc ds = { .src = &chunks };
	struct bk_in plain = { .read = decomp_read, .ctx = &ds, .fd = -1 };
	struct bk_tar_reader *tr = NULL;
	struct bk_tar_entry ent;
	struct ext x = { .c = { .pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 } };
	int fd = -1, ret;

	if (rs->f == BK_FILTER_EXTERNAL) {
		ret = ext_start(&x, rs->prog, &chunks, rs->limit, err);
		plain = (struct bk_in){ .read = ext_read, .ctx = &x, .fd = -1 };
	} else {
		ret = bk_decomp_new(rs->f, rs->limit, &ds.d, err);
	}
	if (ret == 0)
		ret = bk_tar_reader_new(&plain, BK_TAR_INNER, rs->limit, &tr, err);
	if (ret == 0)
		ret = bk_tar_next(tr, &ent, err);
	if (ret == 0)
		ret = qp_err_set(err, -EBADMSG, "the inner archive of '%s' is empty", rs->name);
	if (ret < 0)
		goto out;
	if (strcmp(ent.name, rs->name)) {
		ret = qp_err_set(err, -EBADMSG, "unexpected entry in the inner archive of '%s'",
				 rs->name);
		goto out;
	}
	if (rs->open) {
		bool sync = false;

		ret = rs->open(rs->ctx, &ent, &fd, &sync, err);
		if (ret == 0)
			ret = bk_tar_extract(tr, fd, err);
		if (ret == 0 && sync && fsync(fd) < 0)
			ret = qp_err_set(err, -errno, "cannot write it: %s", strerror(errno));
	} else {
		ret = read_mem(rs, tr, &ent, err);
	}
	if (ret == 0) {
		ret = bk_tar_next(tr, &ent, err);
		if (ret > 0)
			ret = qp_err_set(err, -EBADMSG, "more than one entry in the inner archive of '%s'",
					 rs->name);
	}
	if (ret == 0)
		ret = drain_zeros(&plain, err);
out:
	ret = ext_finish(&x, ret, err);
	bk_tar_reader_free(tr);
	bk_decomp_free(ds.d);
	if (ret < 0)
		qp_err_prefix(err, "cannot restore '%s'", rs->name);
	return ret;
}

static void *rstream_main(void *arg)
{
	struct bk_rstream *rs = arg;
	struct qp_err err = { 0 };
	int ret = extract(rs, &err);

	pthread_mutex_lock(&rs->lock);
	rs->ret = ret;
	rs->err = err;
	rs->done = true;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

int bk_rstream_start(enum bk_filter f, const char *prog, uint64_t limit, const char *name,
		     bk_rstream_open_fn open, void *ctx, size_t max_mem, struct bk_rstream **out,
		     struct qp_err *err)
{
	struct bk_rstream *rs;
	int r;

	*out = NULL;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return qp_err_set(err, -ENOMEM, "out of memory");
	rs->cur = NO_CHUNK;
	rs->f = f;
	if (f == BK_FILTER_EXTERNAL && (!prog || strlen(prog) >= sizeof(rs->prog))) {
		free(rs);
		return qp_err_set(err, -EINVAL, "no program for the compression filter");
	}
	snprintf(rs->prog, sizeof(rs->prog), "%s", prog ? prog : "");
	rs->limit = limit;
	snprintf(rs->name, sizeof(rs->name), "%s", name);
	rs->open = open;
	rs->ctx = ctx;
	rs->max_mem = max_mem;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);
	r = pthread_create(&rs->thread, NULL, rstream_main, rs);
	if (r) {
		pthread_mutex_destroy(&rs->lock);
		pthread_cond_destroy(&rs->cond);
		free(rs);
		return qp_err_set(err, -r, "cannot start a thread: %s", strerror(r));
	}
	*out = rs;
	return 0;
}

static int push(struct bk_rstream *rs, struct chunk c, struct qp_err *err)
{
	pthread_mutex_lock(&rs->lock);
	while (rs->count == QUEUE && !rs->done)
		pthread_cond_wait(&rs->cond, &rs->lock);
	if (rs->done) {
		int ret = rs->ret < 0 ? rs->ret : -EBADMSG;

		if (rs->ret < 0)
			*err = rs->err;
		else
			qp_err_set(err, ret, "cannot restore '%s': data after the end of its archive",
				   rs->name);
		pthread_mutex_unlock(&rs->lock);
		chunk_release(&c);
		return ret;
	}
	rs->queue[(rs->head + rs->count) % QUEUE] = c;
	rs->count++;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	return 0;
}

int bk_rstream_push(struct bk_rstream *rs, int fd, struct qp_err *err)
{
	struct chunk c = NO_CHUNK;

	c.fd = fd;
	return push(rs, c, err);
}

int bk_rstream_push_range(struct bk_rstream *rs, int src, uint64_t off, uint64_t len,
			  struct bk_scrypt_ctx *ctx, struct qp_err *err)
{
	struct chunk c = { .fd = -1, .src = src, .off = off, .len = len, .ctx = ctx };

	return push(rs, c, err);
}

static void rstream_free(struct bk_rstream *rs)
{
	pthread_join(rs->thread, NULL);
	while (rs->count) {
		chunk_release(&rs->queue[rs->head]);
		rs->head = (rs->head + 1) % QUEUE;
		rs->count--;
	}
	chunk_release(&rs->cur);
	pthread_mutex_destroy(&rs->lock);
	pthread_cond_destroy(&rs->cond);
	free(rs->data);
	free(rs);
}

int bk_rstream_finish(struct bk_rstream *rs, char **data, size_t *len, struct qp_err *err)
{
	int ret;

	pthread_mutex_lock(&rs->lock);
	rs->eof = true;
	pthread_cond_broadcast(&rs->cond);
	while (!rs->done)
		pthread_cond_wait(&rs->cond, &rs->lock);
	pthread_mutex_unlock(&rs->lock);
	ret = rs->ret;
	if (ret < 0)
		*err = rs->err;
	if (ret == 0 && data) {
		*data = rs->data;
		*len = rs->len;
		rs->data = NULL;
	}
	rstream_free(rs);
	return ret;
}

void bk_rstream_abort(struct bk_rstream *rs)
{
	if (!rs)
		return;
	pthread_mutex_lock(&rs->lock);
	rs->stop = true;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	rstream_free(rs);
}
