/* Unit tests for backup/bk_tar: outer members and inner sparse entries round
 * trip, and hostile archives are refused. */
#include "backup/bk_tar.h"

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static int buf_write(void *ctx, const void *p, size_t n, struct qp_err *err)
{
	struct bk_buf *b = ctx;

	if (bk_buf_reserve(b, n) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

struct mem_src {
	const uint8_t *p;
	size_t len, pos;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct mem_src *m = ctx;
	size_t k = m->len - m->pos;

	(void)err;
	if (k > len)
		k = len;
	if (k > 300) /* short reads, like a pipe */
		k = 300;
	memcpy(buf, m->p + m->pos, k);
	m->pos += k;
	return (ssize_t)k;
}

/* ---- hand-made archives ---- */

static void put_oct(uint8_t *f, size_t w, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*llo", (int)(w - 1), (unsigned long long)v);
	memcpy(f, tmp, w - 1);
}

static void seal(uint8_t *h)
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

/* Appends a ustar header. */
static uint8_t *hdr(struct bk_buf *b, const char *name, uint64_t size, char type)
{
	uint8_t *h;

	bk_buf_reserve(b, 512);
	h = b->data + b->len;
	memset(h, 0, 512);
	memcpy(h, name, strnlen(name, 100));
	put_oct(h + 100, 8, 0644);
	put_oct(h + 124, 12, size);
	put_oct(h + 136, 12, 0);
	h[156] = type;
	memcpy(h + 257, "ustar\00000", 8);
	seal(h);
	b->len += 512;
	return h;
}

static void data(struct bk_buf *b, const void *p, size_t n)
{
	size_t padded = (n + 511) / 512 * 512;

	bk_buf_reserve(b, padded);
	memset(b->data + b->len, 0, padded);
	memcpy(b->data + b->len, p, n);
	b->len += padded;
}

static void pax(struct bk_buf *b, const char *records)
{
	hdr(b, "PaxHeaders/x", strlen(records), 'x');
	data(b, records, strlen(records));
}

static void zeros(struct bk_buf *b, size_t n)
{
	bk_buf_reserve(b, n);
	memset(b->data + b->len, 0, n);
	b->len += n;
}

/* Reads every entry of @b in @mode: 1 when all went fine, else the error. */
static int read_all(const struct bk_buf *b, enum bk_tar_mode mode, uint64_t limit,
		    struct qp_err *err)
{
	struct mem_src m = { b->data, b->len, 0 };
	struct bk_in in = { .read = mem_read, .ctx = &m };
	struct bk_tar_reader *r;
	struct bk_tar_entry e;
	uint8_t buf[1000];
	int ret, n = 0;

	ret = bk_tar_reader_new(&in, mode, limit, &r, err);
	while (ret == 0 && (ret = bk_tar_next(r, &e, err)) > 0) {
		n++;
		if (e.sparse) {
			int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

			ret = bk_tar_extract(r, fd, err);
			close(fd);
		} else {
			while ((ret = (int)bk_tar_read(r, buf, sizeof(buf), err)) > 0)
				;
		}
		if (ret < 0)
			break;
		ret = 0;
	}
	bk_tar_reader_free(r);
	return ret < 0 ? ret : 1;
}

/* ---- outer archive ---- */

TEST(outer_round_trip)
{
	struct bk_buf b = { 0 };
	struct bk_out out = { .write = buf_write, .ctx = &b };
	struct qp_err err = { 0 };
	char longname[300];
	uint8_t payload[2000], got[2100];
	struct mem_src m;
	struct bk_in in = { .read = mem_read, .ctx = &m };
	struct bk_tar_reader *r;
	struct bk_tar_entry e;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	snprintf(longname, sizeof(longname), "vm12/%0200d/private.img.000.enc", 0);
	CHECK_EQ_INT(bk_tar_member_begin(&out, "backup-header", 5, 1700000000, &err), 0);
	CHECK_EQ_INT(bk_out_write(&out, "a=b\nc", 5, &err), 0);
	CHECK_EQ_INT(bk_tar_member_end(&out, 5, &err), 0);
	CHECK_EQ_INT(b.len % BK_TAR_RECORD, 0);
	CHECK_EQ_INT(bk_tar_member_begin(&out, longname, sizeof(payload), 1700000000, &err), 0);
	CHECK_EQ_INT(bk_out_write(&out, payload, sizeof(payload), &err), 0);
	CHECK_EQ_INT(bk_tar_member_end(&out, sizeof(payload), &err), 0);
	CHECK_EQ_INT(bk_tar_member_begin(&out, "empty", 0, 0, &err), 0);
	CHECK_EQ_INT(bk_tar_member_end(&out, 0, &err), 0);
	CHECK_EQ_INT(bk_tar_member_begin(&out, "../x", 0, 0, &err), -EINVAL);
	CHECK_EQ_INT(bk_tar_member_begin(&out, "/abs", 0, 0, &err), -EINVAL);

	m = (struct mem_src){ b.data, b.len, 0 };
	CHECK_EQ_INT(bk_tar_reader_new(&in, BK_TAR_OUTER, UINT64_MAX, &r, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_STR(e.name, "backup-header");
	CHECK_EQ_INT(e.size, 5);
	CHECK_EQ_INT(e.mtime, 1700000000);
	CHECK_EQ_INT(bk_tar_read(r, got, sizeof(got), &err), 5);
	CHECK(memcmp(got, "a=b\nc", 5) == 0);
	CHECK_EQ_INT(bk_tar_read(r, got, sizeof(got), &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_STR(e.name, longname);
	CHECK_EQ_INT(e.size, sizeof(payload));
	CHECK_EQ_INT(bk_tar_read(r, got, 1000, &err), 1000);
	CHECK_EQ_INT(bk_tar_read(r, got + 1000, 1100, &err), 1000);
	CHECK(memcmp(got, payload, sizeof(payload)) == 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_STR(e.name, "empty");
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 0);
	bk_tar_reader_free(r);

	/* skipping unread data works, and the limit applies */
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), 1);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, 1999, &err), -EFBIG);
	bk_buf_release(&b);
}

TEST(outer_huge_member_uses_pax_size)
{
	const uint64_t huge = 9ULL << 30;
	struct bk_buf b = { 0 };
	struct bk_out out = { .write = buf_write, .ctx = &b };
	struct qp_err err = { 0 };
	struct mem_src m;
	struct bk_in in = { .read = mem_read, .ctx = &m };
	struct bk_tar_reader *r;
	struct bk_tar_entry e;

	CHECK_EQ_INT(bk_tar_member_begin(&out, "vm1/big.000.enc", huge, 1, &err), 0);
	CHECK(memmem(b.data, b.len, "size=9663676416\n", 16) != NULL);
	m = (struct mem_src){ b.data, b.len, 0 };
	CHECK_EQ_INT(bk_tar_reader_new(&in, BK_TAR_OUTER, UINT64_MAX, &r, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_INT(e.size, huge);
	/* the data is missing */
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), -EBADMSG);
	bk_tar_reader_free(r);
	bk_buf_release(&b);
}

static int outer_one(const char *name, char type, struct qp_err *err)
{
	struct bk_buf b = { 0 };
	int ret;

	hdr(&b, name, 3, type);
	data(&b, "abc", 3);
	zeros(&b, 1024);
	ret = read_all(&b, BK_TAR_OUTER, UINT64_MAX, err);
	bk_buf_release(&b);
	return ret;
}

TEST(outer_refuses_unsafe_names_and_types)
{
	struct qp_err err = { 0 };

	CHECK_EQ_INT(outer_one("vm3/ok.000.enc", '0', &err), 1);
	CHECK_EQ_INT(outer_one("../x", '0', &err), -EBADMSG);
	CHECK(strstr(err.msg, "'..'") != NULL);
	CHECK_EQ_INT(outer_one("a/../../x", '0', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("a/..", '0', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("/etc/passwd", '0', &err), -EBADMSG);
	CHECK(strstr(err.msg, "absolute") != NULL);
	CHECK_EQ_INT(outer_one("a\nb", '0', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("a\033b", '0', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("dir/", '0', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("link", '2', &err), -EBADMSG);
	CHECK(strstr(err.msg, "type '2'") != NULL);
	CHECK_EQ_INT(outer_one("dir", '5', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("dev", '3', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("hard", '1', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("sparse", 'S', &err), -EBADMSG);
	CHECK_EQ_INT(outer_one("global", 'g', &err), -EBADMSG);
}

TEST(outer_refuses_corrupt_headers)
{
	struct qp_err err = { 0 };
	struct bk_buf b = { 0 }, t;
	uint8_t *h;

	/* bad checksum */
	h = hdr(&b, "x", 3, '0');
	h[0] = 'y';
	data(&b, "abc", 3);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	CHECK(strstr(err.msg, "checksum") != NULL);
	/* truncated data, truncated header */
	b.len = 0;
	hdr(&b, "x", 3000, '0');
	data(&b, "abc", 3);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	CHECK(strstr(err.msg, "truncated") != NULL);
	t = b;
	t.len = 300;
	CHECK_EQ_INT(read_all(&t, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	/* size overflow: base-256 beyond 63 bits, and non-octal */
	b.len = 0;
	h = hdr(&b, "x", 0, '0');
	memset(h + 124, 0xff, 12);
	h[124] = 0x80;
	seal(h);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	memcpy(h + 124, "0000000009x", 12);
	seal(h);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	/* no ustar magic */
	b.len = 0;
	h = hdr(&b, "x", 0, '0');
	memset(h + 257, 0, 8);
	seal(h);
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	bk_buf_release(&b);
}

static int pax_one(const char *records, struct qp_err *err)
{
	struct bk_buf b = { 0 };
	int ret;

	pax(&b, records);
	hdr(&b, "name", 3, '0');
	data(&b, "abc", 3);
	ret = read_all(&b, BK_TAR_OUTER, UINT64_MAX, err);
	bk_buf_release(&b);
	return ret;
}

TEST(outer_pax_records)
{
	struct qp_err err = { 0 };

	CHECK_EQ_INT(pax_one("12 path=a/b\n13 mtime=1.5\n", &err), 1);
	CHECK_EQ_INT(pax_one("15 path=../etc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("13 path=/abc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("99 path=abc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("11 path=abc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("12 path=abc\n3", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("x2 path=abc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("7 =abc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("11 pathabc\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("29 size=99999999999999999999\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("11 size=-3\n", &err), -EBADMSG);
	/* the data is shorter than the size record says */
	CHECK_EQ_INT(pax_one("12 size=999\n", &err), -EBADMSG);
	CHECK_EQ_INT(pax_one("22 GNU.sparse.major=1\n", &err), -EBADMSG);
	CHECK(strstr(err.msg, "outer") != NULL);
	/* a pax header followed by nothing */
	struct bk_buf b = { 0 };

	pax(&b, "12 path=abc\n");
	CHECK_EQ_INT(read_all(&b, BK_TAR_OUTER, UINT64_MAX, &err), -EBADMSG);
	bk_buf_release(&b);
}

/* ---- inner stream ---- */

static int make_image(char *path, uint64_t size)
{
	int fd;

	strcpy(path, "/var/tmp/bk_tar_test.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	if (ftruncate(fd, size) < 0)
		return -1;
	return fd;
}

static void put_at(int fd, uint64_t off, char c, size_t n)
{
	char buf[8192];

	memset(buf, c, n);
	if (pwrite(fd, buf, n, off) != (ssize_t)n)
		abort();
}

static int same_content(int a, int b, uint64_t size)
{
	static char x[65536], y[65536];

	for (uint64_t off = 0; off < size; off += sizeof(x)) {
		size_t n = size - off < sizeof(x) ? size - off : sizeof(x);

		if (pread(a, x, n, off) != (ssize_t)n || pread(b, y, n, off) != (ssize_t)n ||
		    memcmp(x, y, n))
			return 0;
	}
	return 1;
}

static void inner_round_trip(unsigned flags, int tail_hole)
{
	const uint64_t size = 32 << 20;
	struct bk_buf b = { 0 };
	struct bk_out out = { .write = buf_write, .ctx = &b };
	struct qp_err err = { 0 };
	struct mem_src m;
	struct bk_in in = { .read = mem_read, .ctx = &m };
	struct bk_tar_reader *r;
	struct bk_tar_entry e;
	const struct bk_sparse_map *map;
	char path[64];
	int fd = make_image(path, size), dest;
	struct stat st;

	put_at(fd, 0, 'a', 100);
	put_at(fd, 1 << 20, 'b', 8192);
	put_at(fd, (1 << 20) + 8192, 0, 8192); /* written zeros */
	put_at(fd, (1 << 20) + 16384, 'c', 4096);
	if (!tail_hole)
		put_at(fd, size - 10, 'z', 10);
	CHECK_EQ_INT(bk_inner_write_sparse(&out, fd, "vm3/private.img", 1700000000, flags, &err),
		     0);
	CHECK(b.len < 200000);
	CHECK_EQ_INT(b.len % 512, 0);
	m = (struct mem_src){ b.data, b.len, 0 };
	CHECK_EQ_INT(bk_tar_reader_new(&in, BK_TAR_INNER, size, &r, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_STR(e.name, "vm3/private.img");
	CHECK_EQ_INT(e.realsize, size);
	CHECK_EQ_INT(e.sparse, 1);
	map = bk_tar_sparse_map(r);
	CHECK(map && map->n >= 3);
	if (map) {
		const struct bk_extent *last = &map->ext[map->n - 1];

		CHECK_EQ_INT(last->off + last->len, size);
		if (flags & BK_SPARSE_SCAN_ZEROS)
			CHECK_EQ_INT(map->ext[1].len, 8192);
	}
	dest = open("/var/tmp", O_TMPFILE | O_RDWR, 0600);
	CHECK_EQ_INT(bk_tar_extract(r, dest, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 0);
	CHECK_EQ_INT(m.pos, b.len); /* everything consumed */
	CHECK(fstat(dest, &st) == 0 && (uint64_t)st.st_size == size);
	CHECK(st.st_blocks * 512 < 1 << 20); /* still sparse */
	CHECK(same_content(fd, dest, size));
	bk_tar_reader_free(r);
	close(dest);
	close(fd);
	bk_buf_release(&b);
}

TEST(inner_sparse_round_trip)
{
	inner_round_trip(0, 0);
	inner_round_trip(0, 1);
	inner_round_trip(BK_SPARSE_SCAN_ZEROS, 0);
	inner_round_trip(BK_SPARSE_SCAN_ZEROS, 1);
}

TEST(inner_empty_and_hole_only_images)
{
	struct bk_buf b = { 0 };
	struct bk_out out = { .write = buf_write, .ctx = &b };
	struct qp_err err = { 0 };
	char path[64];
	int fd = make_image(path, 0);

	CHECK_EQ_INT(bk_inner_write_sparse(&out, fd, "e.img", 0, 0, &err), 0);
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, 0, &err), 1);
	CHECK_EQ_INT(ftruncate(fd, 1 << 30), 0);
	b.len = 0;
	CHECK_EQ_INT(bk_inner_write_sparse(&out, fd, "h.img", 0, 0, &err), 0);
	CHECK_EQ_INT(b.len, 6 * 512);
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, 1 << 30, &err), 1);
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, (1 << 30) - 1, &err), -EFBIG);
	CHECK_EQ_INT(bk_inner_write_sparse(&out, fd, "../h.img", 0, 0, &err), -EINVAL);
	close(fd);
	bk_buf_release(&b);
}

TEST(inner_regular_file)
{
	struct bk_buf b = { 0 };
	struct bk_out out = { .write = buf_write, .ctx = &b };
	struct qp_err err = { 0 };
	struct mem_src m;
	struct bk_in in = { .read = mem_read, .ctx = &m };
	struct bk_tar_reader *r;
	struct bk_tar_entry e;
	const char *xml = "<?xml version='1.0'?>\n<qubes/>\n";
	char got[100] = { 0 };

	CHECK_EQ_INT(bk_inner_write_file(&out, "qubes.xml", xml, strlen(xml), 5, &err), 0);
	CHECK_EQ_STR((char *)b.data, "qubes.xml");
	m = (struct mem_src){ b.data, b.len, 0 };
	CHECK_EQ_INT(bk_tar_reader_new(&in, BK_TAR_INNER, 1 << 20, &r, &err), 0);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 1);
	CHECK_EQ_STR(e.name, "qubes.xml");
	CHECK_EQ_INT(e.sparse, 0);
	CHECK_EQ_INT(e.realsize, strlen(xml));
	CHECK_EQ_INT(bk_tar_read(r, got, sizeof(got), &err), strlen(xml));
	CHECK_EQ_STR(got, xml);
	CHECK_EQ_INT(bk_tar_next(r, &e, &err), 0);
	bk_tar_reader_free(r);
	bk_buf_release(&b);
}

/* A pax sparse 1.0 entry with the map text @map and @stored data bytes. */
static int sparse10(const char *realsize, const char *map, size_t stored, uint64_t limit,
		    struct qp_err *err)
{
	struct bk_buf b = { 0 };
	char rec[256], *d = calloc(1, stored + 1);
	size_t maplen = (strlen(map) + 511) / 512 * 512;
	int ret;

	snprintf(rec, sizeof(rec),
		 "22 GNU.sparse.major=1\n22 GNU.sparse.minor=0\n25 GNU.sparse.name=a.img\n"
		 "%zu GNU.sparse.realsize=%s\n",
		 strlen(realsize) + 24, realsize);
	pax(&b, rec);
	hdr(&b, "./GNUSparseFile.1/a.img", maplen + stored, '0');
	data(&b, map, strlen(map));
	memset(d, 'q', stored);
	data(&b, d, stored);
	zeros(&b, 1024);
	ret = read_all(&b, BK_TAR_INNER, limit, err);
	free(d);
	bk_buf_release(&b);
	return ret;
}

TEST(inner_refuses_bad_sparse_maps)
{
	struct qp_err err = { 0 };

	CHECK_EQ_INT(sparse10("10000", "2\n0\n10\n9000\n1000\n", 1010, 1 << 20, &err), 1);
	CHECK_EQ_INT(sparse10("10000", "1\n0\n0\n", 0, 1 << 20, &err), 1);
	/* goes backwards */
	CHECK_EQ_INT(sparse10("10000", "2\n9000\n1000\n0\n10\n", 1010, 1 << 20, &err), -EBADMSG);
	CHECK(strstr(err.msg, "backwards") != NULL);
	/* overlaps */
	CHECK_EQ_INT(sparse10("10000", "2\n0\n100\n50\n10\n", 110, 1 << 20, &err), -EBADMSG);
	/* beyond realsize */
	CHECK_EQ_INT(sparse10("10000", "1\n9999\n2\n", 2, 1 << 20, &err), -EBADMSG);
	CHECK(strstr(err.msg, "exceeds") != NULL);
	CHECK_EQ_INT(sparse10("10000", "1\n18446744073709551615\n2\n", 2, 1 << 20, &err), -EBADMSG);
	/* map and stored data disagree */
	CHECK_EQ_INT(sparse10("10000", "1\n0\n100\n", 50, 1 << 20, &err), -EBADMSG);
	/* malformed text, huge counts, map larger than the member */
	CHECK_EQ_INT(sparse10("10000", "1\n0 \n1\n", 1, 1 << 20, &err), -EBADMSG);
	CHECK_EQ_INT(sparse10("10000", "99999999999\n", 0, 1 << 20, &err), -EBADMSG);
	CHECK_EQ_INT(sparse10("10000", "3\n0\n1\n", 0, 1 << 20, &err), -EBADMSG);
	/* realsize above the caller's limit */
	CHECK_EQ_INT(sparse10("1000000000000", "1\n0\n10\n", 10, 1 << 30, &err), -EFBIG);
}

TEST(inner_refuses_bad_old_gnu_sparse)
{
	struct qp_err err = { 0 };
	struct bk_buf b = { 0 };
	uint8_t *h;

	/* two entries that overlap */
	h = hdr(&b, "x.img", 20, 'S');
	memcpy(h + 257, "ustar  ", 8);
	put_oct(h + 386, 12, 0);
	put_oct(h + 398, 12, 10);
	put_oct(h + 410, 12, 5);
	put_oct(h + 422, 12, 10);
	put_oct(h + 483, 12, 100);
	seal(h);
	data(&b, "0123456789abcdefghij", 20);
	zeros(&b, 1024);
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, 1000, &err), -EBADMSG);
	/* fixed: second entry after the first */
	put_oct(h + 410, 12, 50);
	seal(h);
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, 1000, &err), 1);
	/* an extension header promised but missing */
	h[482] = 1;
	seal(h);
	b.len = 512;
	CHECK_EQ_INT(read_all(&b, BK_TAR_INNER, 1000, &err), -EBADMSG);
	bk_buf_release(&b);
}

int main(void)
{
	RUN(outer_round_trip);
	RUN(outer_huge_member_uses_pax_size);
	RUN(outer_refuses_unsafe_names_and_types);
	RUN(outer_refuses_corrupt_headers);
	RUN(outer_pax_records);
	RUN(inner_sparse_round_trip);
	RUN(inner_empty_and_hole_only_images);
	RUN(inner_regular_file);
	RUN(inner_refuses_bad_sparse_maps);
	RUN(inner_refuses_bad_old_gnu_sparse);
	return harness_done();
}
