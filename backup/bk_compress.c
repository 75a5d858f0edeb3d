/* qpool backup: byte streams, block compression (gzip members, zstd frames),
 * streaming decompression with an output limit, and external filters. */
#include "bk_compress.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define BK_IO_CHUNK (256 * 1024)

/* ---- byte streams ----------------------------------------------------- */

void bk_out_init_fd(struct bk_out *o, int fd)
{
	memset(o, 0, sizeof(*o));
	o->fd = fd;
}

void bk_in_init_fd(struct bk_in *in, int fd)
{
	memset(in, 0, sizeof(*in));
	in->fd = fd;
}

int bk_out_write(struct bk_out *o, const void *buf, size_t len, struct qp_err *err)
{
	const uint8_t *p = buf;
	size_t left = len;
	int ret;

	if (o->write) {
		ret = o->write(o->ctx, buf, len, err);
		if (ret < 0)
			return ret;
		o->written += len;
		return 0;
	}
	while (left > 0) {
		ssize_t n = write(o->fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return qp_err_set(err, -errno, "cannot write backup stream: %s",
					  strerror(errno));
		p += n;
		left -= n;
	}
	o->written += len;
	return 0;
}

ssize_t bk_in_read(struct bk_in *in, void *buf, size_t len, struct qp_err *err)
{
	ssize_t n;

	if (in->read) {
		n = in->read(in->ctx, buf, len, err);
	} else {
		do
			n = read(in->fd, buf, len);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return qp_err_set(err, -errno, "cannot read backup stream: %s",
					  strerror(errno));
	}
	if (n > 0)
		in->nread += n;
	return n;
}

int bk_in_read_full(struct bk_in *in, void *buf, size_t len, const char *what, struct qp_err *err)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = bk_in_read(in, p, len, err);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return qp_err_set(err, -EBADMSG, "truncated archive: input ends inside %s",
					  what);
		p += n;
		len -= n;
	}
	return 0;
}

int bk_buf_reserve(struct bk_buf *b, size_t extra)
{
	size_t cap;
	uint8_t *p;

	if (extra > SIZE_MAX - b->len)
		return -ENOMEM;
	if (b->len + extra <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra)
		cap = cap > SIZE_MAX / 2 ? b->len + extra : cap * 2;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

void bk_buf_release(struct bk_buf *b)
{
	if (!b)
		return;
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---- filter names -------------------------------------------------------- */

static const struct {
	const char *name;
	enum bk_filter f;
	const char *prog;
} bk_filters[] = {
	{ "none", BK_FILTER_NONE, NULL },	    { "gzip", BK_FILTER_GZIP, "gzip" },
	{ "pigz", BK_FILTER_GZIP, "pigz" },	    { "zstd", BK_FILTER_ZSTD, "zstd" },
	{ "zstdmt", BK_FILTER_ZSTD, "zstd" },	    { "bzip2", BK_FILTER_EXTERNAL, "bzip2" },
	{ "pbzip2", BK_FILTER_EXTERNAL, "pbzip2" }, { "xz", BK_FILTER_EXTERNAL, "xz" },
	{ "lzma", BK_FILTER_EXTERNAL, "lzma" },
};

#define BK_NFILTERS (sizeof(bk_filters) / sizeof(bk_filters[0]))

int bk_filter_lookup(const char *name, enum bk_filter *out, struct qp_err *err)
{
	if (!name || !*name) {
		*out = BK_FILTER_NONE;
		return 0;
	}
	for (size_t i = 0; i < BK_NFILTERS; i++) {
		if (strcmp(bk_filters[i].name, name) == 0) {
			*out = bk_filters[i].f;
			return 0;
		}
	}
	return qp_err_set(err, -EINVAL, "unknown compression filter '%s'", name);
}

const char *bk_filter_name(enum bk_filter f)
{
	switch (f) {
	case BK_FILTER_NONE:
		return "none";
	case BK_FILTER_GZIP:
		return "gzip";
	case BK_FILTER_ZSTD:
		return "zstd";
	case BK_FILTER_EXTERNAL:
		return "external";
	}
	return "?";
}

int bk_filter_argv(const char *name, int decompress, const char *argv[4], struct qp_err *err)
{
	for (size_t i = 0; name && i < BK_NFILTERS; i++) {
		if (strcmp(bk_filters[i].name, name) != 0 || !bk_filters[i].prog)
			continue;
		argv[0] = bk_filters[i].prog;
		argv[1] = decompress ? "-d" : "-c";
		argv[2] = decompress ? "-c" : NULL;
		argv[3] = NULL;
		return 0;
	}
	return qp_err_set(err, -EINVAL, "no program for compression filter '%s'", name ? name : "");
}

int bk_filter_check(const char *name, struct qp_err *err)
{
	const char *argv[4], *path = getenv("PATH");
	char buf[4096];
	int r = bk_filter_argv(name, 0, argv, err);

	if (r < 0)
		return r;
	for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");

		if (n && n + strlen(argv[0]) + 2 <= sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, argv[0]);
			if (access(buf, X_OK) == 0)
				return 0;
		}
		p += n + (p[n] == ':');
	}
	return qp_err_set(err, -ENOENT, "compression filter '%s' needs the program '%s', which is not installed",
			  name, argv[0]);
}

/* ---- block compression -------------------------------------------------- */

static int gzip_block(int level, const void *in, size_t n, struct bk_buf *out, struct qp_err *err)
{
	z_stream z;
	uLong bound;
	int zr, ret;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return qp_err_set(err, -ENOMEM, "cannot start gzip compression");
	bound = deflateBound(&z, n);
	ret = bk_buf_reserve(out, bound);
	if (ret < 0) {
		qp_err_set(err, ret, "cannot compress block: out of memory");
		goto out;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = n;
	z.next_out = out->data + out->len;
	z.avail_out = bound;
	zr = deflate(&z, Z_FINISH);
	if (zr != Z_STREAM_END) {
		ret = qp_err_set(err, -EIO, "gzip compression failed (%d)", zr);
		goto out;
	}
	out->len += z.total_out;
	ret = 0;
out:
	deflateEnd(&z);
	return ret;
}

static int zstd_block(int level, const void *in, size_t n, struct bk_buf *out, struct qp_err *err)
{
	size_t bound = ZSTD_compressBound(n), r;
	ZSTD_CCtx *cctx;
	int ret;

	ret = bk_buf_reserve(out, bound);
	if (ret < 0)
		return qp_err_set(err, ret, "cannot compress block: out of memory");
	cctx = ZSTD_createCCtx();
	if (!cctx)
		return qp_err_set(err, -ENOMEM, "cannot start zstd compression");
	/* Frames carry a checksum, as the zstd program writes them. */
	r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_compress2(cctx, out->data + out->len, bound, in, n);
	ZSTD_freeCCtx(cctx);
	if (ZSTD_isError(r))
		return qp_err_set(err, -EIO, "zstd compression failed: %s", ZSTD_getErrorName(r));
	out->len += r;
	return 0;
}

int bk_compress_block(enum bk_filter f, int level, const void *in, size_t n, struct bk_buf *out,
		      struct qp_err *err)
{
	int ret;

	if (n > UINT_MAX / 2)
		return qp_err_set(err, -EINVAL, "cannot compress block: %zu bytes is too large", n);
	switch (f) {
	case BK_FILTER_NONE:
		ret = bk_buf_reserve(out, n);
		if (ret < 0)
			return qp_err_set(err, ret, "cannot copy block: out of memory");
		if (n)
			memcpy(out->data + out->len, in, n);
		out->len += n;
		return 0;
	case BK_FILTER_GZIP:
		if (level > 9)
			return qp_err_set(err, -EINVAL, "gzip level %d is out of range", level);
		return gzip_block(level <= 0 ? 6 : level, in, n, out, err);
	case BK_FILTER_ZSTD:
		if (level > ZSTD_maxCLevel())
			return qp_err_set(err, -EINVAL, "zstd level %d is out of range", level);
		return zstd_block(level <= 0 ? 3 : level, in, n, out, err);
	default:
		return qp_err_set(err, -EINVAL, "filter '%s' has no block compressor",
				  bk_filter_name(f));
	}
}

/* ---- streaming decompression -------------------------------------------- */

struct bk_decomp {
	enum bk_filter f;
	uint64_t limit;
	uint64_t total;
	int mid;	/* inside a gzip member or zstd frame */
	int seen_input; /* any input at all */
	int need_flush; /* last step filled the output: call again */
	z_stream z;
	int z_ready;
	ZSTD_DStream *zs;
	uint8_t *inbuf; /* pull mode */
	size_t in_pos, in_len;
	uint8_t *outbuf; /* push mode */
};

int bk_decomp_new(enum bk_filter f, uint64_t limit, struct bk_decomp **out, struct qp_err *err)
{
	struct bk_decomp *d;

	if (f != BK_FILTER_NONE && f != BK_FILTER_GZIP && f != BK_FILTER_ZSTD)
		return qp_err_set(err, -EINVAL, "filter '%s' has no built-in decompressor",
				  bk_filter_name(f));
	d = calloc(1, sizeof(*d));
	if (!d)
		return qp_err_set(err, -ENOMEM, "cannot allocate decompressor");
	d->f = f;
	d->limit = limit;
	if (f == BK_FILTER_GZIP) {
		if (inflateInit2(&d->z, 15 + 16) != Z_OK) {
			free(d);
			return qp_err_set(err, -ENOMEM, "cannot start gzip decompression");
		}
		d->z_ready = 1;
	} else if (f == BK_FILTER_ZSTD) {
		d->zs = ZSTD_createDStream();
		if (!d->zs || ZSTD_isError(ZSTD_initDStream(d->zs))) {
			bk_decomp_free(d);
			return qp_err_set(err, -ENOMEM, "cannot start zstd decompression");
		}
	}
	*out = d;
	return 0;
}

void bk_decomp_free(struct bk_decomp *d)
{
	if (!d)
		return;
	if (d->z_ready)
		inflateEnd(&d->z);
	ZSTD_freeDStream(d->zs);
	free(d->inbuf);
	free(d->outbuf);
	free(d);
}

uint64_t bk_decomp_total(const struct bk_decomp *d)
{
	return d->total;
}

static int gzip_step(struct bk_decomp *d, const uint8_t *in, size_t in_len, size_t *used,
		     uint8_t *out, size_t cap, size_t *made, struct qp_err *err)
{
	z_stream *z = &d->z;
	int zr;

	z->next_in = (Bytef *)in;
	z->avail_in = in_len;
	z->next_out = out;
	z->avail_out = cap;
	while (z->avail_out > 0 && (z->avail_in > 0 || d->mid)) {
		if (!d->mid) {
			inflateReset(z);
			d->mid = 1;
		}
		zr = inflate(z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END) {
			d->mid = 0;
			continue;
		}
		if (zr == Z_BUF_ERROR)
			break; /* needs more input or more room */
		if (zr == Z_MEM_ERROR)
			return qp_err_set(err, -ENOMEM, "gzip decompression: out of memory");
		if (zr != Z_OK)
			return qp_err_set(err, -EBADMSG, "corrupt gzip stream: %s",
					  z->msg ? z->msg : "bad data");
	}
	*used = in_len - z->avail_in;
	*made = cap - z->avail_out;
	return 0;
}

static int zstd_step(struct bk_decomp *d, const uint8_t *in, size_t in_len, size_t *used,
		     uint8_t *out, size_t cap, size_t *made, struct qp_err *err)
{
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, cap, 0 };
	size_t r;

	while (ob.pos < ob.size && (ib.pos < ib.size || d->mid)) {
		size_t in0 = ib.pos, out0 = ob.pos;

		r = ZSTD_decompressStream(d->zs, &ob, &ib);
		if (ZSTD_isError(r))
			return qp_err_set(err, -EBADMSG, "corrupt zstd stream: %s",
					  ZSTD_getErrorName(r));
		d->mid = r != 0;
		if (ib.pos == in0 && ob.pos == out0)
			break; /* needs more input */
	}
	*used = ib.pos;
	*made = ob.pos;
	return 0;
}

/* One decompression step into at most @cap bytes, enforcing the limit. */
static int decomp_step(struct bk_decomp *d, const uint8_t *in, size_t in_len, size_t *used,
		       uint8_t *out, size_t cap, size_t *made, struct qp_err *err)
{
	uint64_t room = d->limit - d->total;
	int ret = 0;

	if (in_len)
		d->seen_input = 1;
	if (room < cap)
		cap = room + 1; /* one byte more shows the overflow */
	*used = *made = 0;
	switch (d->f) {
	case BK_FILTER_NONE:
		*used = *made = in_len < cap ? in_len : cap;
		memcpy(out, in, *made);
		break;
	case BK_FILTER_GZIP:
		ret = gzip_step(d, in, in_len, used, out, cap, made, err);
		break;
	case BK_FILTER_ZSTD:
		ret = zstd_step(d, in, in_len, used, out, cap, made, err);
		break;
	default:
		return qp_err_set(err, -EINVAL, "no built-in decompressor");
	}
	if (ret < 0)
		return ret;
	if (*made > room)
		return qp_err_set(err, -EFBIG, "decompressed data exceeds the limit of %llu bytes",
				  (unsigned long long)d->limit);
	d->total += *made;
	d->need_flush = *made > 0 && *made == cap;
	return 0;
}

int bk_decomp_update(struct bk_decomp *d, const void *in, size_t n, struct bk_out *sink,
		     struct qp_err *err)
{
	const uint8_t *p = in;
	size_t used, made;
	int ret;

	if (!d->outbuf) {
		d->outbuf = malloc(BK_IO_CHUNK);
		if (!d->outbuf)
			return qp_err_set(err, -ENOMEM, "cannot allocate decompression buffer");
	}
	do {
		ret = decomp_step(d, p, n, &used, d->outbuf, BK_IO_CHUNK, &made, err);
		if (ret < 0)
			return ret;
		p += used;
		n -= used;
		if (made) {
			ret = bk_out_write(sink, d->outbuf, made, err);
			if (ret < 0)
				return ret;
		} else if (used == 0 && n > 0) {
			return qp_err_set(err, -EBADMSG, "corrupt compressed stream: no progress");
		}
	} while (n > 0 || d->need_flush);
	return 0;
}

int bk_decomp_finish(struct bk_decomp *d, struct qp_err *err)
{
	if (d->f == BK_FILTER_NONE)
		return 0;
	if (d->mid)
		return qp_err_set(err, -EBADMSG, "truncated %s stream", bk_filter_name(d->f));
	if (!d->seen_input)
		return qp_err_set(err, -EBADMSG, "empty %s stream", bk_filter_name(d->f));
	return 0;
}

ssize_t bk_decomp_read(struct bk_decomp *d, struct bk_in *src, void *buf, size_t len,
		       struct qp_err *err)
{
	size_t used, made;
	ssize_t n;
	int ret;

	if (len == 0)
		return qp_err_set(err, -EINVAL, "decompression into an empty buffer");
	if (!d->inbuf) {
		d->inbuf = malloc(BK_IO_CHUNK);
		if (!d->inbuf)
			return qp_err_set(err, -ENOMEM, "cannot allocate decompression buffer");
	}
	for (;;) {
		if (d->in_pos == d->in_len && !d->need_flush) {
			n = bk_in_read(src, d->inbuf, BK_IO_CHUNK, err);
			if (n < 0)
				return n;
			if (n == 0) {
				ret = bk_decomp_finish(d, err);
				return ret < 0 ? ret : 0;
			}
			d->in_pos = 0;
			d->in_len = n;
		}
		ret = decomp_step(d, d->inbuf + d->in_pos, d->in_len - d->in_pos, &used, buf, len,
				  &made, err);
		if (ret < 0)
			return ret;
		d->in_pos += used;
		if (made)
			return (ssize_t)made;
		if (used == 0 && d->in_pos < d->in_len)
			return qp_err_set(err, -EBADMSG, "corrupt compressed stream: no progress");
	}
}

/* ---- external filter programs -------------------------------------------- */

static void child_exec(const char *const argv[], int in_fd, int out_fd, int err_fd)
{
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(127);
	close_range(3, ~0U, 0);
	execvp(argv[0], (char *const *)argv);
	dprintf(2, "cannot run '%s': %s\n", argv[0], strerror(errno));
	_exit(127);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int bk_filter_spawn(const char *const argv[], int stdin_fd, int stdout_fd, struct bk_child *c,
		    struct qp_err *err)
{
	int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 };
	int ret;

	c->name = argv[0];
	c->pid = -1;
	c->in_fd = c->out_fd = -1;
	c->err_fd = memfd_create("bk-filter-stderr", MFD_CLOEXEC);
	if (c->err_fd < 0)
		return qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], strerror(errno));
	if ((stdin_fd < 0 && pipe2(in_p, O_CLOEXEC) < 0) ||
	    (stdout_fd < 0 && pipe2(out_p, O_CLOEXEC) < 0)) {
		ret = qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], strerror(errno));
		goto fail;
	}
	c->pid = fork();
	if (c->pid < 0) {
		ret = qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], strerror(errno));
		goto fail;
	}
	if (c->pid == 0)
		child_exec(argv, stdin_fd >= 0 ? stdin_fd : in_p[0],
			   stdout_fd >= 0 ? stdout_fd : out_p[1], c->err_fd);
	close_fd(&in_p[0]);
	close_fd(&out_p[1]);
	c->in_fd = in_p[1];
	c->out_fd = out_p[0];
	return 0;
fail:
	close_fd(&in_p[0]);
	close_fd(&in_p[1]);
	close_fd(&out_p[0]);
	close_fd(&out_p[1]);
	close_fd(&c->err_fd);
	return ret;
}

int bk_filter_block(const char *name, const void *in, size_t n, struct bk_buf *out,
		    struct qp_err *err)
{
	struct bk_child c = { .name = NULL, .pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 };
	const char *argv[4];
	posix_spawn_file_actions_t fa;
	int in_fd = -1, out_fd = -1, r;
	bool fa_ok = false;
	struct bk_out o;
	struct bk_in i;
	struct stat st;

	r = bk_filter_argv(name, 0, argv, err);
	if (r < 0)
		return r;
	/* The block in and out through memory files: no pipes to keep fed. */
	in_fd = memfd_create("bk-filter-in", MFD_CLOEXEC);
	out_fd = memfd_create("bk-filter-out", MFD_CLOEXEC);
	c.err_fd = memfd_create("bk-filter-stderr", MFD_CLOEXEC);
	if (in_fd < 0 || out_fd < 0 || c.err_fd < 0 || posix_spawn_file_actions_init(&fa)) {
		r = qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], strerror(errno));
		goto out;
	}
	fa_ok = true;
	bk_out_init_fd(&o, in_fd);
	r = bk_out_write(&o, in, n, err);
	if (r == 0 && lseek(in_fd, 0, SEEK_SET) < 0)
		r = qp_err_set(err, -errno, "cannot rewind a memory file: %s", strerror(errno));
	if (r < 0)
		goto out;
	/* posix_spawn, not fork: no copy of this process's page tables (which
	 * may map scrypt's gigabyte) for every block. */
	if (posix_spawn_file_actions_adddup2(&fa, in_fd, 0) ||
	    posix_spawn_file_actions_adddup2(&fa, out_fd, 1) ||
	    posix_spawn_file_actions_adddup2(&fa, c.err_fd, 2)) {
		r = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	c.name = argv[0];
	r = posix_spawnp(&c.pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	if (r) {
		c.pid = -1;
		r = qp_err_set(err, -r, "cannot run '%s': %s", argv[0], strerror(r));
		goto out;
	}
	r = bk_filter_wait(&c, err);
	if (r == 0 && (fstat(out_fd, &st) < 0 || lseek(out_fd, 0, SEEK_SET) < 0))
		r = qp_err_set(err, -errno, "cannot read the output of '%s': %s", argv[0],
			       strerror(errno));
	if (r == 0 && bk_buf_reserve(out, (size_t)st.st_size) < 0)
		r = qp_err_set(err, -ENOMEM, "out of memory");
	if (r < 0)
		goto out;
	bk_in_init_fd(&i, out_fd);
	r = bk_in_read_full(&i, out->data + out->len, (size_t)st.st_size, argv[0], err);
	if (r == 0)
		out->len += (size_t)st.st_size;
out:
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	close_fd(&in_fd);
	close_fd(&out_fd);
	close_fd(&c.err_fd);
	return r;
}

/* The last non-empty line the child wrote to stderr, into @line. */
static void last_line(int fd, char *line, size_t size)
{
	char buf[4096];
	off_t end = lseek(fd, 0, SEEK_END);
	off_t start = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, start);
	char *p;

	line[0] = '\0';
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	p = strrchr(buf, '\n');
	p = p ? p + 1 : buf;
	n = strlen(p) < size ? (ssize_t)strlen(p) : (ssize_t)size - 1;
	memcpy(line, p, n);
	line[n] = '\0';
}

int bk_filter_wait(struct bk_child *c, struct qp_err *err)
{
	char line[512];
	int status, ret = 0;

	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	if (c->pid > 0) {
		while (waitpid(c->pid, &status, 0) < 0) {
			if (errno != EINTR) {
				ret = qp_err_set(err, -errno, "cannot wait for '%s': %s",
						 c->name, strerror(errno));
				goto out;
			}
		}
		c->pid = -1;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			last_line(c->err_fd, line, sizeof(line));
			if (WIFSIGNALED(status))
				ret = qp_err_set(err, -EIO, "'%s' killed by signal %d%s%s",
						 c->name, WTERMSIG(status), *line ? ": " : "", line);
			else
				ret = qp_err_set(err, -EIO, "'%s' failed with status %d%s%s",
						 c->name, WEXITSTATUS(status), *line ? ": " : "", line);
		}
	}
out:
	close_fd(&c->err_fd);
	return ret;
}
