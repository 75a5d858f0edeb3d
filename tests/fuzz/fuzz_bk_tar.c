/* libFuzzer target for the backup tar reader (outer and inner modes) and,
 * in front of the inner reader, the gzip and zstd decompressors.
 *
 * The first input byte picks the mode: 0 outer, 1 inner, 2 inner through
 * gzip, 3 inner through zstd (modulo 4); the rest is the stream. */
#include "backup/bk_compress.h"
#include "backup/bk_tar.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

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
	if (k > 777) /* odd short reads */
		k = 777;
	memcpy(buf, m->p + m->pos, k);
	m->pos += k;
	return (ssize_t)k;
}

struct decomp_src {
	struct bk_decomp *d;
	struct bk_in *src;
};

static ssize_t decomp_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct decomp_src *s = ctx;

	return bk_decomp_read(s->d, s->src, buf, len, err);
}

/* What the reader must never let through. */
static int unsafe(const char *name)
{
	size_t n = strlen(name);

	return n == 0 || name[0] == '/' || strcmp(name, "..") == 0 ||
	       strncmp(name, "../", 3) == 0 || strstr(name, "/../") ||
	       (n >= 3 && strcmp(name + n - 3, "/..") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int devnull = -1;
	struct qp_err err = { 0 };
	struct mem_src m;
	struct bk_in raw = { .read = mem_read, .ctx = &m }, dec;
	struct decomp_src ds = { .src = &raw };
	struct bk_tar_reader *r = NULL;
	struct bk_tar_entry e;
	uint8_t buf[4096];
	int mode, ret, n = 0;

	if (size < 1)
		return 0;
	if (devnull < 0)
		devnull = open("/dev/null", O_WRONLY);
	mode = data[0] % 4;
	m = (struct mem_src){ data + 1, size - 1, 0 };
	if (mode >= 2) {
		if (bk_decomp_new(mode == 2 ? BK_FILTER_GZIP : BK_FILTER_ZSTD, 64 << 20, &ds.d,
				  &err) < 0)
			return 0;
		dec = (struct bk_in){ .read = decomp_read, .ctx = &ds };
	}
	ret = bk_tar_reader_new(mode >= 2 ? &dec : &raw, mode ? BK_TAR_INNER : BK_TAR_OUTER,
				256 << 20, &r, &err);
	while (ret == 0 && n++ < 64 && (ret = bk_tar_next(r, &e, &err)) > 0) {
		if (unsafe(e.name) || e.realsize > (256 << 20))
			__builtin_trap(); /* the reader let an unsafe entry through */
		if (e.sparse || n % 2)
			ret = bk_tar_extract(r, devnull, &err);
		else
			while ((ret = (int)bk_tar_read(r, buf, sizeof(buf), &err)) > 0)
				;
		if (ret > 0)
			ret = 0;
	}
	bk_tar_reader_free(r);
	bk_decomp_free(ds.d);
	return 0;
}
