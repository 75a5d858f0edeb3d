/* Unit tests for backup/bk_aout.c: appends land in order across buffers,
 * positional writes take effect after what was appended before them, and
 * a failing write is reported by the calls after it. */
#include "backup/bk_aout.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static uint8_t byte_at(uint64_t i)
{
	return (uint8_t)(i * 131 + (i >> 13));
}

TEST(ordered_appends_and_patches)
{
	char path[] = "/tmp/qpool-aout-XXXXXX";
	const uint64_t total = 3 * (uint64_t)BK_AOUT_BUFS * BK_AOUT_BUF + 12345;
	struct qp_err err = { 0 };
	struct bk_aout *a = NULL;
	uint8_t *buf = malloc(1 << 20), *got = malloc(1 << 20);
	uint64_t off = 0, p2 = 0;
	int fd = mkstemp(path), bad = 0;

	CHECK(fd >= 0 && buf && got);
	if (fd < 0 || !buf || !got)
		return;
	unlink(path);
	CHECK_EQ_INT(bk_aout_start(fd, "the test file", &a, &err), 0);
	while (off < total) {
		/* Odd sizes, so pieces straddle the buffers. */
		size_t n = 1000003 < total - off ? 1000003 : (size_t)(total - off);

		for (size_t i = 0; i < n; i++)
			buf[i] = byte_at(off + i);
		CHECK_EQ_INT(bk_aout_write(a, buf, n, &err), 0);
		off += n;
		/* Rewrites bytes written long ago, and bytes still in the
		 * buffer being filled. */
		if (off > 20 << 20 && off - n <= 20 << 20) {
			CHECK_EQ_INT(bk_aout_pwrite(a, "OLD", 3, 100, &err), 0);
			p2 = off - 3;
			CHECK_EQ_INT(bk_aout_pwrite(a, "NEW", 3, p2, &err), 0);
		}
	}
	CHECK_EQ_INT(bk_aout_finish(a, &err), 0);
	bk_aout_free(a);
	/* The descriptor's offset is where the appends ended. */
	CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), (off_t)total);
	CHECK_EQ_INT(lseek(fd, 0, SEEK_END), (off_t)total);
	for (off = 0; off < total;) {
		ssize_t n = pread(fd, got, 1 << 20, (off_t)off);

		CHECK(n > 0);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			uint64_t at = off + (uint64_t)i;
			uint8_t want = byte_at(at);

			if (at >= 100 && at < 103)
				want = (uint8_t)"OLD"[at - 100];
			if (at >= p2 && at < p2 + 3)
				want = (uint8_t)"NEW"[at - p2];
			if (got[i] != want)
				bad++;
		}
		off += (uint64_t)n;
	}
	CHECK_EQ_INT(bad, 0);
	close(fd);
	free(buf);
	free(got);
}

TEST(write_error_reported)
{
	struct qp_err err = { 0 };
	struct bk_aout *a = NULL;
	uint8_t *buf = calloc(1, BK_AOUT_BUF);
	int fd = open("/dev/null", O_RDONLY), r = 0;

	CHECK(fd >= 0 && buf);
	if (fd < 0 || !buf)
		return;
	CHECK_EQ_INT(bk_aout_start(fd, "the test file", &a, &err), 0);
	/* Enough to fill every buffer: some call fails, or finish does. */
	for (int i = 0; i < 2 * BK_AOUT_BUFS && r == 0; i++)
		r = bk_aout_write(a, buf, BK_AOUT_BUF, &err);
	if (r == 0)
		r = bk_aout_finish(a, &err);
	CHECK_EQ_INT(r, -EBADF);
	CHECK(strstr(err.msg, "cannot write the test file") != NULL);
	/* Later calls give the same error. */
	CHECK_EQ_INT(bk_aout_write(a, buf, 10, &err), -EBADF);
	CHECK_EQ_INT(bk_aout_finish(a, &err), -EBADF);
	bk_aout_free(a);
	close(fd);
	free(buf);
}

int main(void)
{
	RUN(ordered_appends_and_patches);
	RUN(write_error_reported);
	return harness_done();
}
