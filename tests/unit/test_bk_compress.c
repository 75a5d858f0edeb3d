/* Unit tests for backup/bk_compress: block compression, streaming
 * decompression of concatenated members/frames, limits, hostile input and
 * external filters. */
#include "backup/bk_compress.h"

#include "harness.h"

#include <errno.h>
#include <pthread.h>
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
	size_t len, pos, step;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len, struct qp_err *err)
{
	struct mem_src *m = ctx;
	size_t k = m->len - m->pos;

	(void)err;
	if (k > len)
		k = len;
	if (m->step && k > m->step)
		k = m->step;
	memcpy(buf, m->p + m->pos, k);
	m->pos += k;
	return (ssize_t)k;
}

/* Input that compresses but is not trivial. */
static uint8_t *sample(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n);

	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245 + 12345;
		p[i] = (i % 7 == 0) ? (uint8_t)(seed >> 16) : (uint8_t)('a' + i % 13);
	}
	return p;
}

/* Decompresses @in in pieces of @step bytes through push mode. */
static int push_all(enum bk_filter f, const struct bk_buf *in, size_t step, uint64_t limit,
		    struct bk_buf *out, struct qp_err *err)
{
	struct bk_out sink = { .write = buf_write, .ctx = out };
	struct bk_decomp *d;
	int ret;

	ret = bk_decomp_new(f, limit, &d, err);
	for (size_t i = 0; ret == 0 && i < in->len; i += step)
		ret = bk_decomp_update(d, in->data + i, in->len - i < step ? in->len - i : step,
				       &sink, err);
	if (ret == 0)
		ret = bk_decomp_finish(d, err);
	bk_decomp_free(d);
	return ret;
}

static void round_trip(enum bk_filter f)
{
	const size_t n = 3 * 1000 * 1000, block = 700 * 1000;
	uint8_t *data = sample(n, 7);
	struct bk_buf z = { 0 }, out = { 0 };
	struct qp_err err = { 0 };

	for (size_t i = 0; i < n; i += block)
		CHECK_EQ_INT(
			bk_compress_block(f, 0, data + i, n - i < block ? n - i : block, &z, &err),
			0);
	CHECK(f == BK_FILTER_NONE || z.len < n / 2);
	CHECK_EQ_INT(push_all(f, &z, 4093, UINT64_MAX, &out, &err), 0);
	CHECK_EQ_INT(out.len, n);
	CHECK(out.len == n && memcmp(out.data, data, n) == 0);
	/* one byte at a time crosses every member boundary */
	out.len = 0;
	CHECK_EQ_INT(push_all(f, &z, 1, UINT64_MAX, &out, &err), 0);
	CHECK(out.len == n && memcmp(out.data, data, n) == 0);
	bk_buf_release(&z);
	bk_buf_release(&out);
	free(data);
}

TEST(gzip_members_round_trip)
{
	round_trip(BK_FILTER_GZIP);
}

TEST(zstd_frames_round_trip)
{
	round_trip(BK_FILTER_ZSTD);
}

TEST(none_passthrough)
{
	round_trip(BK_FILTER_NONE);
}

TEST(pull_mode_reads_concatenated_members)
{
	uint8_t *data = sample(500000, 3);
	struct bk_buf z = { 0 };
	struct qp_err err = { 0 };
	enum bk_filter fs[] = { BK_FILTER_GZIP, BK_FILTER_ZSTD };

	for (int k = 0; k < 2; k++) {
		struct mem_src m = { 0 };
		struct bk_in in = { .read = mem_read, .ctx = &m };
		struct bk_decomp *d;
		uint8_t out[777];
		size_t got = 0;
		int same = 1;
		ssize_t r;

		z.len = 0;
		CHECK_EQ_INT(bk_compress_block(fs[k], 1, data, 100000, &z, &err), 0);
		CHECK_EQ_INT(bk_compress_block(fs[k], 9, data + 100000, 0, &z, &err), 0);
		CHECK_EQ_INT(bk_compress_block(fs[k], 0, data + 100000, 400000, &z, &err), 0);
		m = (struct mem_src){ z.data, z.len, 0, 1000 };
		CHECK_EQ_INT(bk_decomp_new(fs[k], 500000, &d, &err), 0);
		while ((r = bk_decomp_read(d, &in, out, sizeof(out), &err)) > 0) {
			same &= got + r <= 500000 && memcmp(out, data + got, r) == 0;
			got += r;
		}
		CHECK_EQ_INT(r, 0);
		CHECK_EQ_INT(got, 500000);
		CHECK(same);
		bk_decomp_free(d);
	}
	bk_buf_release(&z);
	free(data);
}

TEST(output_limit_stops_bombs)
{
	uint8_t *zeros = calloc(1, 10 * 1000 * 1000);
	struct bk_buf z = { 0 }, out = { 0 };
	struct qp_err err = { 0 };

	CHECK_EQ_INT(bk_compress_block(BK_FILTER_GZIP, 9, zeros, 10000000, &z, &err), 0);
	CHECK(z.len < 20000);
	CHECK_EQ_INT(push_all(BK_FILTER_GZIP, &z, z.len, 1000000, &out, &err), -EFBIG);
	CHECK(out.len <= 1000000);
	CHECK(strstr(err.msg, "limit") != NULL);
	out.len = 0;
	CHECK_EQ_INT(push_all(BK_FILTER_GZIP, &z, z.len, 10000000, &out, &err), 0);
	z.len = 0;
	CHECK_EQ_INT(bk_compress_block(BK_FILTER_ZSTD, 0, zeros, 10000000, &z, &err), 0);
	out.len = 0;
	CHECK_EQ_INT(push_all(BK_FILTER_ZSTD, &z, 100, 9999999, &out, &err), -EFBIG);
	CHECK(out.len <= 9999999);
	bk_buf_release(&z);
	bk_buf_release(&out);
	free(zeros);
}

TEST(hostile_streams)
{
	uint8_t *data = sample(100000, 5);
	struct bk_buf z = { 0 }, out = { 0 }, t = { 0 };
	struct qp_err err = { 0 };
	enum bk_filter fs[] = { BK_FILTER_GZIP, BK_FILTER_ZSTD };

	for (int k = 0; k < 2; k++) {
		z.len = 0;
		CHECK_EQ_INT(bk_compress_block(fs[k], 0, data, 100000, &z, &err), 0);
		/* truncated */
		t = z;
		t.len = z.len - 5;
		out.len = 0;
		CHECK_EQ_INT(push_all(fs[k], &t, 1000, UINT64_MAX, &out, &err), -EBADMSG);
		/* garbage after a complete member */
		bk_buf_reserve(&z, 16);
		memcpy(z.data + z.len, "garbage-garbage!", 16);
		t = z;
		t.len = z.len + 16;
		out.len = 0;
		CHECK_EQ_INT(push_all(fs[k], &t, 1000, UINT64_MAX, &out, &err), -EBADMSG);
		/* corrupted body */
		z.data[z.len / 2] ^= 0x55;
		out.len = 0;
		CHECK_EQ_INT(push_all(fs[k], &z, 1000, UINT64_MAX, &out, &err), -EBADMSG);
		/* empty input */
		t.len = 0;
		CHECK_EQ_INT(push_all(fs[k], &t, 1, UINT64_MAX, &out, &err), -EBADMSG);
	}
	bk_buf_release(&z);
	bk_buf_release(&out);
	free(data);
}

struct job {
	enum bk_filter f;
	const uint8_t *in;
	size_t n;
	struct bk_buf out;
	int ret;
};

static void *compress_job(void *arg)
{
	struct job *j = arg;
	struct qp_err err = { 0 };

	j->ret = bk_compress_block(j->f, 0, j->in, j->n, &j->out, &err);
	return NULL;
}

TEST(blocks_compress_in_parallel)
{
	const size_t block = 400000;
	uint8_t *data = sample(4 * block, 11);
	struct bk_buf all = { 0 }, out = { 0 };
	struct qp_err err = { 0 };
	enum bk_filter fs[] = { BK_FILTER_GZIP, BK_FILTER_ZSTD };

	for (int k = 0; k < 2; k++) {
		struct job jobs[4];
		pthread_t th[4];

		for (int i = 0; i < 4; i++) {
			jobs[i] = (struct job){ fs[k], data + i * block, block, { 0 }, -1 };
			CHECK_EQ_INT(pthread_create(&th[i], NULL, compress_job, &jobs[i]), 0);
		}
		all.len = 0;
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			CHECK_EQ_INT(jobs[i].ret, 0);
			bk_buf_reserve(&all, jobs[i].out.len);
			memcpy(all.data + all.len, jobs[i].out.data, jobs[i].out.len);
			all.len += jobs[i].out.len;
			bk_buf_release(&jobs[i].out);
		}
		out.len = 0;
		CHECK_EQ_INT(push_all(fs[k], &all, 65536, UINT64_MAX, &out, &err), 0);
		CHECK(out.len == 4 * block && memcmp(out.data, data, out.len) == 0);
	}
	bk_buf_release(&all);
	bk_buf_release(&out);
	free(data);
}

TEST(filter_names)
{
	enum bk_filter f;
	const char *av[4];
	struct qp_err err = { 0 };

	CHECK_EQ_INT(bk_filter_lookup("gzip", &f, &err), 0);
	CHECK_EQ_INT(f, BK_FILTER_GZIP);
	CHECK_EQ_INT(bk_filter_lookup("zstdmt", &f, &err), 0);
	CHECK_EQ_INT(f, BK_FILTER_ZSTD);
	CHECK_EQ_INT(bk_filter_lookup("xz", &f, &err), 0);
	CHECK_EQ_INT(f, BK_FILTER_EXTERNAL);
	CHECK_EQ_INT(bk_filter_lookup("rm -rf", &f, &err), -EINVAL);
	CHECK_EQ_INT(bk_filter_argv("bzip2", 1, av, &err), 0);
	CHECK_EQ_STR(av[0], "bzip2");
	CHECK_EQ_STR(av[1], "-d");
	CHECK_EQ_INT(bk_filter_argv("sh", 0, av, &err), -EINVAL);
	CHECK_EQ_INT(bk_decomp_new(BK_FILTER_EXTERNAL, 1, NULL, &err), -EINVAL);
}

TEST(external_filter_through_pipes)
{
	const char *gz[] = { "gzip", "-c", NULL };
	const char *bad[] = { "gzip", "-d", "-c", NULL };
	const char *none[] = { "/nonexistent/prog", NULL };
	struct bk_buf out = { 0 }, z = { 0 };
	struct qp_err err = { 0 };
	uint8_t *data = sample(30000, 9), buf[4096];
	struct bk_child c;
	ssize_t n;

	if (access("/usr/bin/gzip", X_OK) && access("/bin/gzip", X_OK))
		SKIP("gzip is not installed");
	CHECK_EQ_INT(bk_filter_spawn(gz, -1, -1, &c, &err), 0);
	CHECK_EQ_INT(write(c.in_fd, data, 30000), 30000); /* fits in the pipe */
	close(c.in_fd);
	c.in_fd = -1;
	while ((n = read(c.out_fd, buf, sizeof(buf))) > 0) {
		bk_buf_reserve(&z, n);
		memcpy(z.data + z.len, buf, n);
		z.len += n;
	}
	CHECK_EQ_INT(bk_filter_wait(&c, &err), 0);
	CHECK_EQ_INT(push_all(BK_FILTER_GZIP, &z, 100, UINT64_MAX, &out, &err), 0);
	CHECK(out.len == 30000 && memcmp(out.data, data, 30000) == 0);

	/* a failing filter reports its stderr */
	CHECK_EQ_INT(bk_filter_spawn(bad, -1, -1, &c, &err), 0);
	CHECK_EQ_INT(write(c.in_fd, "not gzip data", 13), 13);
	close(c.in_fd);
	c.in_fd = -1;
	while (read(c.out_fd, buf, sizeof(buf)) > 0)
		;
	CHECK_EQ_INT(bk_filter_wait(&c, &err), -EIO);
	CHECK(strstr(err.msg, "not in gzip format") != NULL);
	/* nothing allocated while the child that cannot exec exits */
	bk_buf_release(&out);
	bk_buf_release(&z);
	free(data);
	CHECK_EQ_INT(bk_filter_spawn(none, -1, -1, &c, &err), 0);
	CHECK_EQ_INT(bk_filter_wait(&c, &err), -EIO);
	CHECK(strstr(err.msg, "cannot run") != NULL);
}

int main(void)
{
	RUN(gzip_members_round_trip);
	RUN(zstd_frames_round_trip);
	RUN(none_passthrough);
	RUN(pull_mode_reads_concatenated_members);
	RUN(output_limit_stops_bombs);
	RUN(hostile_streams);
	RUN(blocks_compress_in_parallel);
	RUN(filter_names);
	RUN(external_filter_through_pipes);
	return harness_done();
}
