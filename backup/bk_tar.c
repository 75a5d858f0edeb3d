/* qpool backup: outer archive writer, inner stream writer (pax sparse 1.0)
 * and a hardened reader for both layers.  Layouts: backup/FORMAT.md. */
#include "bk_tar.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BK_IO_BUF (1024 * 1024)
#define BK_PAX_MAX (8 * 1024 * 1024)
#define BK_OCTAL11_MAX 077777777777ULL

static const uint8_t bk_zeros[BK_TAR_RECORD];

static uint64_t pad512(uint64_t n)
{
	return (BK_TAR_BLOCK - n % BK_TAR_BLOCK) % BK_TAR_BLOCK;
}

/* ---- names ----------------------------------------------------------------- */

/* A member name must be relative, without `..` components or control
 * characters, and not end with '/'. */
static int name_check(const char *name, size_t len, struct qp_err *err)
{
	if (len == 0)
		return qp_err_set(err, -EBADMSG, "malformed archive: empty member name");
	if (len > BK_TAR_NAME_MAX)
		return qp_err_set(err, -EBADMSG, "malformed archive: member name is too long");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = name[i];

		if (c < 0x20 || c == 0x7f)
			return qp_err_set(err, -EBADMSG,
					  "unsafe member name: it has control characters");
	}
	if (name[0] == '/')
		return qp_err_set(err, -EBADMSG, "unsafe member name '%.*s': it is absolute",
				  (int)len, name);
	if (name[len - 1] == '/')
		return qp_err_set(err, -EBADMSG, "unsafe member name '%.*s': not a file name",
				  (int)len, name);
	for (size_t i = 0; i < len;) {
		size_t j = i;

		while (j < len && name[j] != '/')
			j++;
		if (j - i == 2 && name[i] == '.' && name[i + 1] == '.')
			return qp_err_set(err, -EBADMSG,
					  "unsafe member name '%.*s': it has a '..' component",
					  (int)len, name);
		i = j + 1;
	}
	return 0;
}

/* Writers refuse the same names with -EINVAL. */
static int invalid_name(struct qp_err *err, const char *what)
{
	if (err) {
		err->code = -EINVAL;
		qp_err_prefix(err, "%s", what);
	}
	return -EINVAL;
}

/* ---- header writing ------------------------------------------------------- */

static void put_octal(uint8_t *field, size_t width, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*" PRIo64, (int)(width - 1), v);
	memcpy(field, tmp, width - 1);
	field[width - 1] = '\0';
}

static void put_checksum(uint8_t *h)
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < BK_TAR_BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* A ustar header; @name longer than 100 bytes is cut (a pax record holds it). */
static void build_ustar(uint8_t *h, const char *name, uint64_t size, uint64_t mtime, char type)
{
	size_t n = strlen(name);

	memset(h, 0, BK_TAR_BLOCK);
	memcpy(h, name, n > 100 ? 100 : n);
	put_octal(h + 100, 8, 0644);
	put_octal(h + 108, 8, 0);
	put_octal(h + 116, 8, 0);
	put_octal(h + 124, 12, size > BK_OCTAL11_MAX ? 0 : size);
	put_octal(h + 136, 12, mtime > BK_OCTAL11_MAX ? 0 : mtime);
	h[156] = type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	if (type != 'x') {
		memcpy(h + 265, "root", 4);
		memcpy(h + 297, "root", 4);
	}
	put_octal(h + 329, 8, 0);
	put_octal(h + 337, 8, 0);
	put_checksum(h);
}

/* Appends the pax record "LEN KEY=VALUE\n". */
static int pax_add(struct bk_buf *b, const char *key, const char *val)
{
	size_t base = strlen(key) + strlen(val) + 3, len = base, digits;
	int ret;

	for (;;) {
		digits = snprintf(NULL, 0, "%zu", len);
		if (base + digits == len)
			break;
		len = base + digits;
	}
	ret = bk_buf_reserve(b, len + 1);
	if (ret < 0)
		return ret;
	snprintf((char *)b->data + b->len, len + 1, "%zu %s=%s\n", len, key, val);
	b->len += len;
	return 0;
}

static int pax_add_u64(struct bk_buf *b, const char *key, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	return pax_add(b, key, tmp);
}

static int write_zeros(struct bk_out *out, uint64_t n, struct qp_err *err)
{
	while (n > 0) {
		size_t k = n > sizeof(bk_zeros) ? sizeof(bk_zeros) : n;
		int ret = bk_out_write(out, bk_zeros, k, err);

		if (ret < 0)
			return ret;
		n -= k;
	}
	return 0;
}

/* Writes a pax 'x' header for @real_name holding @pax (when not empty), then
 * the ustar header @hdr_name of @size bytes. */
static int write_headers(struct bk_out *out, const char *real_name, const char *hdr_name,
			 uint64_t size, uint64_t mtime, const struct bk_buf *pax,
			 struct qp_err *err)
{
	uint8_t h[BK_TAR_BLOCK];
	const char *slash = strrchr(real_name, '/');
	char *xname;
	int ret;

	if (pax->len > 0) {
		if (slash)
			xname = qp_strdupf("%.*s/PaxHeaders/%s", (int)(slash - real_name),
					   real_name, slash + 1);
		else
			xname = qp_strdupf("./PaxHeaders/%s", real_name);
		if (!xname)
			return qp_err_set(err, -ENOMEM, "cannot write tar header: out of memory");
		build_ustar(h, xname, pax->len, mtime, 'x');
		free(xname);
		ret = bk_out_write(out, h, sizeof(h), err);
		if (ret == 0)
			ret = bk_out_write(out, pax->data, pax->len, err);
		if (ret == 0)
			ret = write_zeros(out, pad512(pax->len), err);
		if (ret < 0)
			return ret;
	}
	build_ustar(h, hdr_name, size, mtime, '0');
	return bk_out_write(out, h, sizeof(h), err);
}

static int pax_common(struct bk_buf *pax, const char *name, uint64_t size, uint64_t mtime)
{
	int ret = 0;

	if (name && strlen(name) > 100)
		ret = pax_add(pax, "path", name);
	if (ret == 0 && size > BK_OCTAL11_MAX)
		ret = pax_add_u64(pax, "size", size);
	if (ret == 0 && mtime > BK_OCTAL11_MAX)
		ret = pax_add_u64(pax, "mtime", mtime);
	return ret;
}

static uint64_t clamp_time(time_t t)
{
	return t < 0 ? 0 : (uint64_t)t;
}

/* ---- outer archive writer ------------------------------------------------ */

int bk_tar_member_begin(struct bk_out *out, const char *name, uint64_t size, time_t mtime,
			struct qp_err *err)
{
	struct bk_buf pax = { 0 };
	uint64_t mt = clamp_time(mtime);
	int ret;

	if (name_check(name, strlen(name), err) < 0)
		return invalid_name(err, "cannot add member");
	/* Like `tar --posix`, always give the time in a pax record. */
	ret = pax_common(&pax, name, size, BK_OCTAL11_MAX + 1);
	if (ret == 0 && mt <= BK_OCTAL11_MAX)
		ret = pax_add_u64(&pax, "mtime", mt);
	if (ret < 0) {
		bk_buf_release(&pax);
		return qp_err_set(err, ret, "cannot add member '%s': out of memory", name);
	}
	ret = write_headers(out, name, name, size, mt, &pax, err);
	bk_buf_release(&pax);
	return ret;
}

int bk_tar_member_end(struct bk_out *out, uint64_t size, struct qp_err *err)
{
	int ret;

	ret = write_zeros(out, pad512(size) + 2 * BK_TAR_BLOCK, err);
	if (ret < 0)
		return ret;
	return write_zeros(out, (BK_TAR_RECORD - out->written % BK_TAR_RECORD) % BK_TAR_RECORD,
			   err);
}

/* ---- sparse maps ------------------------------------------------------------- */

void bk_sparse_map_release(struct bk_sparse_map *m)
{
	if (!m)
		return;
	free(m->ext);
	memset(m, 0, sizeof(*m));
}

/* Appends an extent, merging with the previous one when adjacent or when the
 * map is full (the hole in between is then stored as data). */
static int map_add(struct bk_sparse_map *m, size_t *cap, uint64_t off, uint64_t len)
{
	struct bk_extent *e;

	if (m->n > 0) {
		struct bk_extent *last = &m->ext[m->n - 1];

		if (last->off + last->len == off || m->n >= BK_TAR_MAX_EXTENTS - 1) {
			last->len = off + len - last->off;
			return 0;
		}
	}
	if (m->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;

		e = realloc(m->ext, nc * sizeof(*e));
		if (!e)
			return -ENOMEM;
		m->ext = e;
		*cap = nc;
	}
	m->ext[m->n].off = off;
	m->ext[m->n].len = len;
	m->n++;
	return 0;
}

static int is_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Splits the data extent [off, off+len) at 512-byte blocks of zeros. */
static int scan_zeros(int fd, uint64_t off, uint64_t len, struct bk_sparse_map *m, size_t *cap,
		      uint8_t *buf, struct qp_err *err)
{
	uint64_t end = off + len, run = UINT64_MAX;
	int ret;

	while (off < end) {
		size_t want = end - off > BK_IO_BUF ? BK_IO_BUF : end - off;
		ssize_t n = pread(fd, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return qp_err_set(err, n < 0 ? -errno : -EIO, "cannot read image: %s",
					  n < 0 ? strerror(errno) : "it shrank");
		for (size_t i = 0; i < (size_t)n; i += BK_TAR_BLOCK) {
			size_t k = (size_t)n - i < BK_TAR_BLOCK ? (size_t)n - i : BK_TAR_BLOCK;
			int zero = is_zero(buf + i, k);

			if (!zero && run == UINT64_MAX)
				run = off + i;
			if (zero && run != UINT64_MAX) {
				ret = map_add(m, cap, run, off + i - run);
				if (ret < 0)
					return qp_err_set(err, ret,
							  "cannot scan image: out of memory");
				run = UINT64_MAX;
			}
		}
		off += n;
	}
	if (run != UINT64_MAX && map_add(m, cap, run, end - run) < 0)
		return qp_err_set(err, -ENOMEM, "cannot scan image: out of memory");
	return 0;
}

static int scan_extent(int fd, unsigned flags, uint64_t off, uint64_t len, struct bk_sparse_map *m,
		       size_t *cap, uint8_t *buf, struct qp_err *err)
{
	if (flags & BK_SPARSE_SCAN_ZEROS)
		return scan_zeros(fd, off, len, m, cap, buf, err);
	if (map_add(m, cap, off, len) < 0)
		return qp_err_set(err, -ENOMEM, "cannot scan image: out of memory");
	return 0;
}

int bk_sparse_scan(int fd, unsigned flags, struct bk_sparse_map *out, struct qp_err *err)
{
	struct bk_sparse_map m = { 0 };
	uint8_t *buf = NULL;
	size_t cap = 0;
	off_t size, off = 0, d, h;
	int ret = -EINVAL;

	if (flags & ~BK_SPARSE_SCAN_ZEROS)
		return qp_err_set(err, -EINVAL, "unknown sparse scan flags 0x%x", flags);
	size = lseek(fd, 0, SEEK_END);
	if (size < 0)
		return qp_err_set(err, -errno, "cannot get image size: %s", strerror(errno));
	m.realsize = size;
	if ((flags & BK_SPARSE_SCAN_ZEROS) && !(buf = malloc(BK_IO_BUF)))
		return qp_err_set(err, -ENOMEM, "cannot scan image: out of memory");
	while (off < size) {
		d = lseek(fd, off, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
			d = off; /* no hole support: all data */
			h = size;
		} else if (d < 0 || (h = lseek(fd, d, SEEK_HOLE)) < 0) {
			ret = qp_err_set(err, -errno, "cannot find image extents: %s",
					 strerror(errno));
			goto out;
		}
		if (h > size)
			h = size;
		if (h <= d)
			break;
		ret = scan_extent(fd, flags, d, h - d, &m, &cap, buf, err);
		if (ret < 0)
			goto out;
		off = h;
	}
	/* The map ends with an entry that reaches the end of the file. */
	if (m.n == 0 || m.ext[m.n - 1].off + m.ext[m.n - 1].len < m.realsize) {
		if (map_add(&m, &cap, m.realsize, 0) < 0) {
			ret = qp_err_set(err, -ENOMEM, "cannot scan image: out of memory");
			goto out;
		}
	}
	*out = m;
	memset(&m, 0, sizeof(m));
	ret = 0;
out:
	free(buf);
	bk_sparse_map_release(&m);
	return ret;
}

/* ---- inner stream writer --------------------------------------------------- */

static int map_text(const struct bk_sparse_map *m, struct bk_buf *b)
{
	char line[48];
	size_t n;

	n = snprintf(line, sizeof(line), "%zu\n", m->n);
	if (bk_buf_reserve(b, n) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, line, n);
	b->len += n;
	for (size_t i = 0; i < m->n; i++) {
		n = snprintf(line, sizeof(line), "%" PRIu64 "\n%" PRIu64 "\n", m->ext[i].off,
			     m->ext[i].len);
		if (bk_buf_reserve(b, n + BK_TAR_BLOCK) < 0)
			return -ENOMEM;
		memcpy(b->data + b->len, line, n);
		b->len += n;
	}
	n = pad512(b->len);
	memset(b->data + b->len, 0, n);
	b->len += n;
	return 0;
}

/* "<dir>/GNUSparseFile.<pid>/<base>", at most 100 bytes. */
static char *sparse_hdr_name(const char *name)
{
	const char *slash = strrchr(name, '/');
	const char *base = slash ? slash + 1 : name;
	int dirlen = slash ? (int)(slash - name) : 1;
	const char *dir = slash ? name : ".";
	char *s = qp_strdupf("%.*s/GNUSparseFile.%d/%s", dirlen, dir, (int)getpid(), base);

	if (s && strlen(s) > 100) {
		free(s);
		s = qp_strdupf("GNUSparseFile.%d/%.70s", (int)getpid(), base);
	}
	return s;
}

static int copy_extent(struct bk_out *out, int fd, const struct bk_extent *e, uint8_t *buf,
		       struct qp_err *err)
{
	uint64_t off = e->off, end = e->off + e->len;
	int ret;

	while (off < end) {
		size_t want = end - off > BK_IO_BUF ? BK_IO_BUF : end - off;
		ssize_t n = pread(fd, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return qp_err_set(err, n < 0 ? -errno : -EIO, "cannot read image: %s",
					  n < 0 ? strerror(errno) : "it shrank");
		ret = bk_out_write(out, buf, n, err);
		if (ret < 0)
			return ret;
		off += n;
	}
	return 0;
}

static int sparse_pax(struct bk_buf *pax, const char *name, uint64_t realsize, uint64_t stored,
		      uint64_t mtime)
{
	int ret = pax_add(pax, "GNU.sparse.major", "1");

	if (ret == 0)
		ret = pax_add(pax, "GNU.sparse.minor", "0");
	if (ret == 0)
		ret = pax_add(pax, "GNU.sparse.name", name);
	if (ret == 0)
		ret = pax_add_u64(pax, "GNU.sparse.realsize", realsize);
	if (ret == 0)
		ret = pax_common(pax, NULL, stored, mtime);
	return ret;
}

int bk_inner_write_sparse(struct bk_out *out, int fd, const char *name, time_t mtime,
			  unsigned flags, struct qp_err *err)
{
	struct bk_sparse_map m = { 0 };
	int ret;

	if (name_check(name, strlen(name), err) < 0)
		return invalid_name(err, "cannot archive image");
	ret = bk_sparse_scan(fd, flags, &m, err);
	if (ret == 0)
		ret = bk_inner_write_sparse_map(out, fd, name, mtime, &m, err);
	bk_sparse_map_release(&m);
	return ret;
}

int bk_inner_write_sparse_map(struct bk_out *out, int fd, const char *name, time_t mtime,
			      const struct bk_sparse_map *m, struct qp_err *err)
{
	struct bk_buf map = { 0 }, pax = { 0 };
	uint64_t stored, mt = clamp_time(mtime);
	char *hdr_name = NULL;
	uint8_t *buf = NULL;
	int ret;

	if (name_check(name, strlen(name), err) < 0)
		return invalid_name(err, "cannot archive image");
	ret = -ENOMEM;
	if (map_text(m, &map) < 0 || !(hdr_name = sparse_hdr_name(name)) ||
	    !(buf = malloc(BK_IO_BUF)))
		goto nomem;
	stored = map.len;
	for (size_t i = 0; i < m->n; i++)
		stored += m->ext[i].len;
	if (sparse_pax(&pax, name, m->realsize, stored, mt) < 0)
		goto nomem;
	ret = write_headers(out, name, hdr_name, stored, mt, &pax, err);
	if (ret == 0)
		ret = bk_out_write(out, map.data, map.len, err);
	for (size_t i = 0; ret == 0 && i < m->n; i++)
		ret = copy_extent(out, fd, &m->ext[i], buf, err);
	if (ret == 0)
		ret = write_zeros(out, pad512(stored) + 2 * BK_TAR_BLOCK, err);
	goto out;
nomem:
	ret = qp_err_set(err, -ENOMEM, "cannot archive image '%s': out of memory", name);
out:
	free(buf);
	free(hdr_name);
	bk_buf_release(&pax);
	bk_buf_release(&map);
	return ret;
}

int bk_inner_write_file(struct bk_out *out, const char *name, const void *data, size_t len,
			time_t mtime, struct qp_err *err)
{
	struct bk_buf pax = { 0 };
	uint64_t mt = clamp_time(mtime);
	int ret;

	if (name_check(name, strlen(name), err) < 0)
		return invalid_name(err, "cannot archive file");
	if (pax_common(&pax, name, len, mt) < 0) {
		bk_buf_release(&pax);
		return qp_err_set(err, -ENOMEM, "cannot archive '%s': out of memory", name);
	}
	ret = write_headers(out, name, name, len, mt, &pax, err);
	bk_buf_release(&pax);
	if (ret == 0 && len)
		ret = bk_out_write(out, data, len, err);
	if (ret == 0)
		ret = write_zeros(out, pad512(len) + 2 * BK_TAR_BLOCK, err);
	return ret;
}

/* ---- reader ------------------------------------------------------------------- */

/* What extended headers said about the next entry. */
struct pending {
	int have;   /* an 'x' or 'L' header was read */
	char *path; /* pax path or GNU long name */
	char *sparse_name;
	uint64_t size;
	int has_size;
	uint64_t mtime;
	int has_mtime;
	int sp_major, sp_minor; /* -1 when absent */
	uint64_t sp_realsize;
	int has_sp_realsize;
	int sp_old; /* 0.0/0.1 map records seen */
	uint64_t sp_numblocks;
	int has_sp_numblocks;
	int sp_need_len; /* 0.0: an offset waits for its numbytes */
	struct bk_sparse_map map;
	size_t map_cap;
};

struct bk_tar_reader {
	struct bk_in *in;
	enum bk_tar_mode mode;
	uint64_t limit;
	int done;
	char *name;
	uint64_t remain; /* data bytes left in the current entry */
	uint64_t pad;	 /* padding after them */
	int sparse;
	uint64_t realsize;
	struct bk_sparse_map map;
	size_t map_cap;
	struct pending p;
	uint8_t *buf;
	uint64_t unsynced; /* bytes extracted since writeback was started */
};

#define WRITEBACK (64u << 20)

static void pending_reset(struct pending *p)
{
	free(p->path);
	free(p->sparse_name);
	bk_sparse_map_release(&p->map);
	memset(p, 0, sizeof(*p));
	p->sp_major = p->sp_minor = -1;
}

int bk_tar_reader_new(struct bk_in *in, enum bk_tar_mode mode, uint64_t limit,
		      struct bk_tar_reader **out, struct qp_err *err)
{
	struct bk_tar_reader *r;

	if (mode != BK_TAR_OUTER && mode != BK_TAR_INNER)
		return qp_err_set(err, -EINVAL, "unknown tar reader mode %d", (int)mode);
	r = calloc(1, sizeof(*r));
	if (!r || !(r->buf = malloc(BK_IO_BUF))) {
		free(r);
		return qp_err_set(err, -ENOMEM, "cannot allocate tar reader");
	}
	r->in = in;
	r->mode = mode;
	r->limit = limit;
	pending_reset(&r->p);
	*out = r;
	return 0;
}

void bk_tar_reader_free(struct bk_tar_reader *r)
{
	if (!r)
		return;
	pending_reset(&r->p);
	bk_sparse_map_release(&r->map);
	free(r->name);
	free(r->buf);
	free(r);
}

const struct bk_sparse_map *bk_tar_sparse_map(const struct bk_tar_reader *r)
{
	return r->sparse ? &r->map : NULL;
}

/* Reads one block: 1, 0 at a clean end of input, or a negative errno. */
static int read_block(struct bk_tar_reader *r, uint8_t *b, struct qp_err *err)
{
	size_t got = 0;

	while (got < BK_TAR_BLOCK) {
		ssize_t n = bk_in_read(r->in, b + got, BK_TAR_BLOCK - got, err);

		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		got += n;
	}
	if (got == 0)
		return 0;
	if (got < BK_TAR_BLOCK)
		return qp_err_set(err, -EBADMSG, "truncated archive: input ends inside a header");
	return 1;
}

/* Seeks over @n bytes of a regular file that holds them all. */
static bool skip_seek(struct bk_in *in, uint64_t n)
{
	struct stat st;
	off_t at;

	if (in->read || in->fd < 0 || fstat(in->fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	at = lseek(in->fd, 0, SEEK_CUR);
	if (at < 0 || (uint64_t)st.st_size < (uint64_t)at || (uint64_t)st.st_size - (uint64_t)at < n)
		return false;
	if (lseek(in->fd, (off_t)n, SEEK_CUR) < 0)
		return false;
	in->nread += n;
	return true;
}

static int discard(struct bk_tar_reader *r, uint64_t n, struct qp_err *err)
{
	if (n > BK_IO_BUF && skip_seek(r->in, n))
		return 0;
	while (n > 0) {
		size_t k = n > BK_IO_BUF ? BK_IO_BUF : n;
		int ret = bk_in_read_full(r->in, r->buf, k, "member data", err);

		if (ret < 0)
			return ret;
		n -= k;
	}
	return 0;
}

/* A numeric header field: octal (spaces/NULs around) or GNU base-256. */
static int parse_num(const uint8_t *f, size_t w, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -1; /* negative or too large */
		for (i = 1; i < w; i++) {
			if (v >> 55)
				return -1;
			v = v << 8 | f[i];
		}
	} else {
		while (i < w && f[i] == ' ')
			i++;
		for (; i < w && f[i] >= '0' && f[i] <= '7'; i++) {
			if (v >> 60)
				return -1;
			v = v << 3 | (uint64_t)(f[i] - '0');
		}
		for (; i < w; i++)
			if (f[i] != ' ' && f[i] != '\0')
				return -1;
	}
	if (v > INT64_MAX)
		return -1;
	*out = v;
	return 0;
}

static int checksum_ok(const uint8_t *h)
{
	uint64_t want;
	unsigned usum = 0;
	int ssum = 0;

	if (parse_num(h + 148, 8, &want) < 0)
		return 0;
	for (int i = 0; i < BK_TAR_BLOCK; i++) {
		uint8_t c = i >= 148 && i < 156 ? ' ' : h[i];

		usum += c;
		ssum += (signed char)c;
	}
	return want == usum || (int64_t)want == ssum;
}

static int parse_dec(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 19)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > INT64_MAX)
		return -1;
	*out = v;
	return 0;
}

static int bad(struct qp_err *err, const char *what)
{
	return qp_err_set(err, -EBADMSG, "malformed archive: %s", what);
}

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

/* Adds an entry without merging (the reader keeps maps as written). */
static int map_push(struct bk_sparse_map *m, size_t *cap, uint64_t off, uint64_t len)
{
	if (m->n >= BK_TAR_MAX_EXTENTS)
		return -E2BIG;
	if (m->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct bk_extent *e = realloc(m->ext, nc * sizeof(*e));

		if (!e)
			return -ENOMEM;
		m->ext = e;
		*cap = nc;
	}
	m->ext[m->n].off = off;
	m->ext[m->n].len = len;
	m->n++;
	return 0;
}

/* GNU.sparse.map of format 0.1: "off,len,off,len...". */
static int parse_map01(struct pending *p, const char *v, size_t len, struct qp_err *err)
{
	uint64_t nums[2];
	size_t i = 0, k = 0;

	while (i < len) {
		size_t j = i;

		while (j < len && v[j] != ',')
			j++;
		if (parse_dec(v + i, j - i, &nums[k]) < 0)
			return bad(err, "bad GNU.sparse.map");
		if (++k == 2) {
			if (p->map.n >= BK_TAR_MAX_EXTENTS)
				return bad(err, "sparse map has too many entries");
			if (map_push(&p->map, &p->map_cap, nums[0], nums[1]) < 0)
				return qp_err_set(err, -ENOMEM, "out of memory");
			k = 0;
		}
		i = j + 1;
		if (j < len && j + 1 == len)
			return bad(err, "bad GNU.sparse.map");
	}
	if (k)
		return bad(err, "bad GNU.sparse.map");
	return 0;
}

static int pax_sparse_record(struct bk_tar_reader *r, const char *k, const char *v, size_t vlen,
			     struct qp_err *err)
{
	struct pending *p = &r->p;
	uint64_t n = 0;
	int num = parse_dec(v, vlen, &n) == 0;

	if (r->mode == BK_TAR_OUTER)
		return bad(err, "sparse member in the outer archive");
	if (strcmp(k, "GNU.sparse.name") == 0) {
		free(p->sparse_name);
		p->sparse_name = dupn(v, vlen);
		return p->sparse_name ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (strcmp(k, "GNU.sparse.map") == 0) {
		p->sp_old = 1;
		return parse_map01(p, v, vlen, err);
	}
	if (!num)
		return bad(err, "bad number in a GNU.sparse record");
	if (strcmp(k, "GNU.sparse.major") == 0)
		p->sp_major = n > 9 ? 9 : (int)n;
	else if (strcmp(k, "GNU.sparse.minor") == 0)
		p->sp_minor = n > 9 ? 9 : (int)n;
	else if (strcmp(k, "GNU.sparse.realsize") == 0 || strcmp(k, "GNU.sparse.size") == 0) {
		p->sp_realsize = n;
		p->has_sp_realsize = 1;
	} else if (strcmp(k, "GNU.sparse.numblocks") == 0) {
		p->sp_numblocks = n;
		p->has_sp_numblocks = 1;
	} else if (strcmp(k, "GNU.sparse.offset") == 0) {
		if (p->sp_need_len)
			return bad(err, "GNU.sparse.offset without numbytes");
		p->sp_old = p->sp_need_len = 1;
		if (map_push(&p->map, &p->map_cap, n, 0) < 0)
			return bad(err, "sparse map has too many entries");
	} else if (strcmp(k, "GNU.sparse.numbytes") == 0) {
		if (!p->sp_need_len)
			return bad(err, "GNU.sparse.numbytes without offset");
		p->sp_need_len = 0;
		p->map.ext[p->map.n - 1].len = n;
	}
	return 0;
}

static int pax_record(struct bk_tar_reader *r, const char *k, const char *v, size_t vlen,
		      struct qp_err *err)
{
	struct pending *p = &r->p;

	if (strcmp(k, "path") == 0) {
		free(p->path);
		p->path = dupn(v, vlen);
		if (!p->path)
			return qp_err_set(err, -ENOMEM, "out of memory");
		if (strlen(p->path) != vlen)
			return qp_err_set(err, -EBADMSG,
					  "unsafe member name: it has control characters");
	} else if (strcmp(k, "size") == 0) {
		if (parse_dec(v, vlen, &p->size) < 0)
			return bad(err, "bad pax size record");
		p->has_size = 1;
	} else if (strcmp(k, "mtime") == 0) {
		size_t i = 0;

		while (i < vlen && v[i] != '.')
			i++;
		if (parse_dec(v, i, &p->mtime) == 0)
			p->has_mtime = 1;
	} else if (strncmp(k, "GNU.sparse.", 11) == 0) {
		return pax_sparse_record(r, k, v, vlen, err);
	}
	return 0;
}

/* Parses pax records "LEN KEY=VALUE\n" in @d (NUL-terminated at @len). */
static int parse_pax(struct bk_tar_reader *r, char *d, size_t len, struct qp_err *err)
{
	size_t pos = 0;
	int ret;

	while (pos < len) {
		size_t i = pos, rl = 0;
		char *rec, *eq;

		while (i < len && d[i] >= '0' && d[i] <= '9' && i - pos < 9)
			rl = rl * 10 + (size_t)(d[i++] - '0');
		if (i == pos || i >= len || d[i] != ' ' || rl > len - pos || rl < i - pos + 4)
			return bad(err, "bad pax record length");
		rec = d + i + 1;
		if (d[pos + rl - 1] != '\n')
			return bad(err, "pax record does not end with a newline");
		d[pos + rl - 1] = '\0';
		eq = memchr(rec, '=', d + pos + rl - 1 - rec);
		if (!eq || eq == rec || memchr(rec, '\0', eq - rec))
			return bad(err, "pax record without a keyword");
		*eq = '\0';
		ret = pax_record(r, rec, eq + 1, d + pos + rl - 1 - (eq + 1), err);
		if (ret < 0)
			return ret;
		pos += rl;
	}
	return 0;
}

/* Reads the data of an extended header ('x' or 'L') of @size bytes. */
static int read_ext_data(struct bk_tar_reader *r, uint64_t size, uint64_t max, char **out,
			 struct qp_err *err)
{
	char *d;
	int ret;

	if (size > max)
		return bad(err, "extended header is too large");
	d = malloc(size + 1);
	if (!d)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = bk_in_read_full(r->in, d, size, "an extended header", err);
	if (ret == 0)
		ret = discard(r, pad512(size), err);
	if (ret < 0) {
		free(d);
		return ret;
	}
	d[size] = '\0';
	*out = d;
	return 0;
}

static int ext_header(struct bk_tar_reader *r, char type, uint64_t size, struct qp_err *err)
{
	char *d;
	int ret;

	if (r->p.have)
		return bad(err, "two extended headers in a row");
	r->p.have = 1;
	if (type == 'L') {
		ret = read_ext_data(r, size, BK_TAR_NAME_MAX + 1, &d, err);
		if (ret < 0)
			return ret;
		free(r->p.path);
		r->p.path = d;
		return 0;
	}
	ret = read_ext_data(r, size, BK_PAX_MAX, &d, err);
	if (ret < 0)
		return ret;
	ret = parse_pax(r, d, size, err);
	free(d);
	return ret;
}

/* The entry name from the header (ustar prefix joined when present). */
static char *header_name(const uint8_t *h)
{
	size_t n = strnlen((const char *)h, 100), pn;

	if (memcmp(h + 257, "ustar\0", 6) == 0 && h[345]) {
		pn = strnlen((const char *)h + 345, 155);
		return qp_strdupf("%.*s/%.*s", (int)pn, h + 345, (int)n, h);
	}
	return dupn((const char *)h, n);
}

/* Old GNU sparse entries: 4 in the header, 21 per extension block. */
static int read_old_gnu_map(struct bk_tar_reader *r, const uint8_t *h, struct qp_err *err)
{
	uint8_t b[BK_TAR_BLOCK];
	const uint8_t *ent = h + 386;
	int count = 4, ext = h[482];
	uint64_t off, len;
	int ret;

	if (parse_num(h + 483, 12, &r->realsize) < 0)
		return bad(err, "bad sparse realsize");
	for (;;) {
		for (int i = 0; i < count && ent[i * 24]; i++) {
			if (parse_num(ent + i * 24, 12, &off) < 0 ||
			    parse_num(ent + i * 24 + 12, 12, &len) < 0)
				return bad(err, "bad sparse map entry");
			if (map_push(&r->map, &r->map_cap, off, len) < 0)
				return bad(err, "sparse map has too many entries");
		}
		if (!ext)
			return 0;
		ret = read_block(r, b, err);
		if (ret == 0)
			ret = bad(err, "input ends inside a sparse header");
		if (ret < 0)
			return ret;
		ent = b;
		count = 21;
		ext = b[504];
	}
}

/* Format 1.0: the map is text at the start of the data. */
static int read_map_10(struct bk_tar_reader *r, struct qp_err *err)
{
	uint8_t b[BK_TAR_BLOCK];
	uint64_t acc = 0, count = 0, first = 0, have = 0;
	int ndig = 0, ret;

	for (;;) {
		if (r->remain < BK_TAR_BLOCK)
			return bad(err, "sparse map is larger than its member");
		ret = bk_in_read_full(r->in, b, sizeof(b), "a sparse map", err);
		if (ret < 0)
			return ret;
		r->remain -= BK_TAR_BLOCK;
		for (int i = 0; i < BK_TAR_BLOCK; i++) {
			if (b[i] >= '0' && b[i] <= '9') {
				if (++ndig > 19)
					return bad(err, "number too long in the sparse map");
				acc = acc * 10 + (uint64_t)(b[i] - '0');
				continue;
			}
			if (b[i] != '\n' || ndig == 0)
				return bad(err, "bad character in the sparse map");
			if (have == 0 && acc > BK_TAR_MAX_EXTENTS)
				return bad(err, "sparse map has too many entries");
			if (have == 0)
				count = acc;
			else if (have % 2)
				first = acc;
			else if (map_push(&r->map, &r->map_cap, first, acc) < 0)
				return qp_err_set(err, -ENOMEM, "out of memory");
			have++;
			acc = 0;
			ndig = 0;
			if (have == 2 * count + 1)
				return 0; /* the rest of the block is padding */
		}
	}
}

/* Maps must go forward, not overlap, stay within realsize and account for
 * every stored byte. */
static int check_map(struct bk_tar_reader *r, struct qp_err *err)
{
	uint64_t end = 0, sum = 0;

	for (size_t i = 0; i < r->map.n; i++) {
		const struct bk_extent *e = &r->map.ext[i];

		if (e->off < end)
			return bad(err, "sparse map goes backwards or overlaps");
		if (e->len > r->realsize || e->off > r->realsize - e->len)
			return bad(err, "sparse map exceeds the file size");
		end = e->off + e->len;
		sum += e->len;
	}
	if (sum != r->remain)
		return bad(err, "sparse map does not match the stored data");
	r->map.realsize = r->realsize;
	return 0;
}

static int setup_sparse(struct bk_tar_reader *r, const uint8_t *h, char type, struct qp_err *err)
{
	struct pending *p = &r->p;
	int ret;

	bk_sparse_map_release(&r->map);
	r->map_cap = 0;
	if (type == 'S') {
		r->sparse = 1;
		ret = read_old_gnu_map(r, h, err);
		return ret < 0 ? ret : check_map(r, err);
	}
	if (p->sp_major < 0 && !p->sp_old)
		return 0; /* a regular file */
	if (!p->has_sp_realsize)
		return bad(err, "sparse member without its real size");
	r->sparse = 1;
	r->realsize = p->sp_realsize;
	if (p->sp_major >= 0) {
		if (p->sp_major != 1 || p->sp_minor != 0)
			return qp_err_set(err, -EBADMSG, "unsupported sparse format %d.%d",
					  p->sp_major, p->sp_minor);
		ret = read_map_10(r, err);
		return ret < 0 ? ret : check_map(r, err);
	}
	if (p->sp_need_len || (p->has_sp_numblocks && p->sp_numblocks != p->map.n))
		return bad(err, "sparse map does not match GNU.sparse.numblocks");
	r->map = p->map;
	r->map_cap = p->map_cap;
	memset(&p->map, 0, sizeof(p->map));
	return check_map(r, err);
}

static int type_allowed(const struct bk_tar_reader *r, char type)
{
	if (type == '0' || type == '\0' || type == 'x')
		return 1;
	return r->mode == BK_TAR_INNER && (type == 'S' || type == 'L');
}

static int entry_header(struct bk_tar_reader *r, const uint8_t *h, struct bk_tar_entry *ent,
			struct qp_err *err)
{
	struct pending *p = &r->p;
	char type = (char)h[156];
	uint64_t size, mtime = 0;
	const char *src;
	int ret;

	free(r->name);
	r->name = NULL;
	if (parse_num(h + 124, 12, &size) < 0)
		return bad(err, "bad member size");
	parse_num(h + 136, 12, &mtime);
	src = p->sparse_name ? p->sparse_name : p->path;
	r->name = src ? strdup(src) : header_name(h);
	if (!r->name)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = name_check(r->name, strlen(r->name), err);
	if (ret < 0)
		return ret;
	r->remain = p->has_size ? p->size : size;
	r->pad = pad512(r->remain);
	r->realsize = r->remain;
	r->sparse = 0;
	ret = setup_sparse(r, h, type, err);
	if (ret < 0)
		return qp_err_prefix(err, "member '%s'", r->name);
	if (r->realsize > r->limit)
		return qp_err_set(err, -EFBIG,
				  "member '%s' is larger than the limit of %" PRIu64 " bytes",
				  r->name, r->limit);
	ent->name = r->name;
	ent->size = p->has_size ? p->size : size;
	ent->realsize = r->realsize;
	ent->mtime = (time_t)(p->has_mtime ? p->mtime : mtime);
	ent->sparse = r->sparse;
	pending_reset(p);
	return 1;
}

int bk_tar_next(struct bk_tar_reader *r, struct bk_tar_entry *ent, struct qp_err *err)
{
	uint8_t h[BK_TAR_BLOCK];
	uint64_t size;
	int ret;

	if (r->done)
		return 0;
	ret = discard(r, r->remain + r->pad, err);
	r->remain = r->pad = 0;
	if (ret < 0)
		goto fail;
	for (;;) {
		ret = read_block(r, h, err);
		if (ret < 0)
			goto fail;
		if (ret == 0 || is_zero(h, sizeof(h))) {
			if (r->p.have) {
				ret = bad(err, "archive ends after an extended header");
				goto fail;
			}
			if (ret == 0 || r->mode == BK_TAR_INNER) {
				/* an inner stream ends here; take its second zero
				 * block when there is one */
				if (ret > 0 && (ret = read_block(r, h, err)) < 0)
					goto fail;
				r->done = 1;
				return 0;
			}
			continue;
		}
		if (!checksum_ok(h)) {
			ret = qp_err_set(err, -EBADMSG, "malformed archive: bad header checksum");
			goto fail;
		}
		if (memcmp(h + 257, "ustar", 5) != 0) {
			ret = bad(err, "not a ustar header");
			goto fail;
		}
		if (!type_allowed(r, (char)h[156])) {
			ret = qp_err_set(err, -EBADMSG, "unsupported member type '%c' for '%.100s'",
					 h[156] >= 0x20 && h[156] < 0x7f ? h[156] : '?',
					 name_check((char *)h, strnlen((char *)h, 100), NULL) ?
						 "?" :
						 (char *)h);
			goto fail;
		}
		if (h[156] != 'x' && h[156] != 'L')
			break;
		if (parse_num(h + 124, 12, &size) < 0) {
			ret = bad(err, "bad extended header size");
			goto fail;
		}
		ret = ext_header(r, (char)h[156], size, err);
		if (ret < 0)
			goto fail;
	}
	ret = entry_header(r, h, ent, err);
	if (ret > 0)
		return ret;
fail:
	r->done = 1; /* no resynchronisation after an error */
	r->remain = r->pad = 0;
	pending_reset(&r->p);
	return ret;
}

ssize_t bk_tar_read(struct bk_tar_reader *r, void *buf, size_t len, struct qp_err *err)
{
	int ret;

	if (r->sparse)
		return qp_err_set(err, -EINVAL, "member '%s' is sparse: extract it", r->name);
	if (len > r->remain)
		len = r->remain;
	if (len == 0)
		return 0;
	ret = bk_in_read_full(r->in, buf, len, "member data", err);
	if (ret < 0)
		return ret;
	r->remain -= len;
	return (ssize_t)len;
}

/* Copies @len stream bytes to @dest at @off; aligned blocks of zeros are
 * skipped so that they stay holes. */
static int copy_out(struct bk_tar_reader *r, int dest, uint64_t off, uint64_t len,
		    struct qp_err *err)
{
	while (len > 0) {
		size_t k = len > BK_IO_BUF ? BK_IO_BUF : len;
		int ret = bk_in_read_full(r->in, r->buf, k, "member data", err);

		if (ret < 0)
			return ret;
		r->remain -= k;
		/* Runs of 4 KiB blocks that are not all zeros, one write each. */
		for (size_t i = 0; i < k;) {
			size_t end = i;

			while (end < k && (k - end < 4096 || !is_zero(r->buf + end, 4096)))
				end += k - end < 4096 ? k - end : 4096;
			for (size_t w = i; w < end;) {
				ssize_t x = pwrite(dest, r->buf + w, end - w, off + w);

				if (x < 0 && errno == EINTR)
					continue;
				if (x < 0)
					return qp_err_set(err, -errno, "cannot write '%s': %s",
							  r->name, strerror(errno));
				w += x;
			}
			r->unsynced += end - i;
			i = end < k ? end + 4096 : end;
		}
		/* Writeback starts now rather than at the caller's fsync; a
		 * hint (it fails on what is not a file). */
		if (r->unsynced >= WRITEBACK) {
			(void)sync_file_range(dest, 0, 0, SYNC_FILE_RANGE_WRITE);
			r->unsynced = 0;
		}
		off += k;
		len -= k;
	}
	return 0;
}

int bk_tar_extract(struct bk_tar_reader *r, int dest, struct qp_err *err)
{
	struct stat st;
	int ret = 0;

	if (!r->name)
		return qp_err_set(err, -EINVAL, "no current member to extract");
	if (r->sparse) {
		for (size_t i = 0; ret == 0 && i < r->map.n; i++)
			ret = copy_out(r, dest, r->map.ext[i].off, r->map.ext[i].len, err);
	} else {
		ret = copy_out(r, dest, 0, r->remain, err);
	}
	if (ret < 0)
		return ret;
	if (fstat(dest, &st) == 0 && S_ISREG(st.st_mode) && ftruncate(dest, r->realsize) < 0)
		return qp_err_set(err, -errno, "cannot set the size of '%s': %s", r->name,
				  strerror(errno));
	return 0;
}
