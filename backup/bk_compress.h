/* qpool backup: byte streams and compression filters.
 *
 * A backup's inner stream is compressed in independent blocks: every block
 * becomes one complete gzip member or one zstd frame, so several threads can
 * compress at once and the concatenation is still a single stream for
 * `gzip -d` and `zstd -d`.  Decompression is streaming, accepts any number of
 * concatenated members/frames and stops at a caller-given output limit.
 * Filters without a library (bzip2, xz...) run as a child process.
 *
 * Every function returns 0 (or a count) or a negative errno with a message in
 * the caller's struct qp_err.
 */
#ifndef QPOOL_BACKUP_BK_COMPRESS_H
#define QPOOL_BACKUP_BK_COMPRESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "storage/qpool.h"

/* ---- byte streams ----------------------------------------------------- */

/* Where bytes go.  With @write NULL, bytes go to @fd (full writes, EINTR
 * retried); otherwise @write gets every buffer and returns 0 or a negative
 * errno (setting @err).  @written counts the bytes accepted. */
struct bk_out {
	int (*write)(void *ctx, const void *buf, size_t len, struct qp_err *err);
	void *ctx;
	int fd;
	uint64_t written;
};

/* Where bytes come from.  With @read NULL, bytes come from @fd; otherwise
 * @read returns the number of bytes put in @buf (0 at end of input) or a
 * negative errno.  @nread counts the bytes delivered. */
struct bk_in {
	ssize_t (*read)(void *ctx, void *buf, size_t len, struct qp_err *err);
	void *ctx;
	int fd;
	uint64_t nread;
};

void bk_out_init_fd(struct bk_out *o, int fd);
void bk_in_init_fd(struct bk_in *in, int fd);
/* Writes all of @buf; returns 0 or a negative errno. */
int bk_out_write(struct bk_out *o, const void *buf, size_t len, struct qp_err *err);
/* Reads up to @len bytes; returns the count (0 at end) or a negative errno. */
ssize_t bk_in_read(struct bk_in *in, void *buf, size_t len, struct qp_err *err);
/* Reads exactly @len bytes: 0, -EBADMSG when the input ends early (after
 * @what), or a negative errno. */
int bk_in_read_full(struct bk_in *in, void *buf, size_t len, const char *what, struct qp_err *err);

/* A growable buffer; bk_buf_release frees @data and zeroes the struct. */
struct bk_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

int bk_buf_reserve(struct bk_buf *b, size_t extra);
void bk_buf_release(struct bk_buf *b);

/* ---- filters ----------------------------------------------------------- */

enum bk_filter {
	BK_FILTER_NONE,	    /* passthrough */
	BK_FILTER_GZIP,	    /* zlib, gzip members */
	BK_FILTER_ZSTD,	    /* libzstd, zstd frames */
	BK_FILTER_EXTERNAL, /* a program run with bk_filter_spawn */
};

/* Maps a backup header's compression-filter name to a filter: "gzip" and
 * "pigz" are BK_FILTER_GZIP, "zstd" and "zstdmt" BK_FILTER_ZSTD, "none" (or
 * NULL/"") BK_FILTER_NONE; "bzip2", "pbzip2", "xz" and "lzma" are
 * BK_FILTER_EXTERNAL.  Anything else is -EINVAL. */
int bk_filter_lookup(const char *name, enum bk_filter *out, struct qp_err *err);
const char *bk_filter_name(enum bk_filter f);

/* ---- block compression -------------------------------------------------- */

/* Compresses @n bytes of @in as one independent gzip member or zstd frame
 * (a copy for BK_FILTER_NONE) and appends it to @out.  @level <= 0 picks the
 * default (gzip 6, zstd 3).  Keeps no state: threads may call it at once with
 * their own buffers. */
int bk_compress_block(enum bk_filter f, int level, const void *in, size_t n, struct bk_buf *out,
		      struct qp_err *err);

/* ---- streaming decompression -------------------------------------------- */

struct bk_decomp;

/* A decompressor for @f (not BK_FILTER_EXTERNAL) that fails with -EFBIG once
 * its output would exceed @limit bytes.  *@out is the caller's to free. */
int bk_decomp_new(enum bk_filter f, uint64_t limit, struct bk_decomp **out, struct qp_err *err);
void bk_decomp_free(struct bk_decomp *d);

/* Push mode: decompresses all of @in and writes the output to @sink.  The
 * input may end anywhere, also inside a member or frame. */
int bk_decomp_update(struct bk_decomp *d, const void *in, size_t n, struct bk_out *sink,
		     struct qp_err *err);
/* Ends push mode: -EBADMSG when the input stopped inside a member/frame or
 * when there was no input at all (for gzip and zstd). */
int bk_decomp_finish(struct bk_decomp *d, struct qp_err *err);

/* Pull mode: fills @buf with up to @len decompressed bytes read from @src;
 * returns the count, 0 at the clean end of @src (checked as
 * bk_decomp_finish does) or a negative errno.  Do not mix with push mode. */
ssize_t bk_decomp_read(struct bk_decomp *d, struct bk_in *src, void *buf, size_t len,
		       struct qp_err *err);
/* Total decompressed bytes produced so far. */
uint64_t bk_decomp_total(const struct bk_decomp *d);

/* ---- external filter programs -------------------------------------------- */

/* Fills @argv (room for 4 entries, NULL-terminated) with the command for the
 * external filter @name ("bzip2", "pbzip2", "xz", "lzma"; also "gzip" and
 * "zstd"): compressing to stdout, or decompressing with @decompress. */
int bk_filter_argv(const char *name, int decompress, const char *argv[4], struct qp_err *err);

/* 0 when the program of external filter @name is on PATH; else -ENOENT
 * ("... needs the program 'xz', which is not installed") or -EINVAL. */
int bk_filter_check(const char *name, struct qp_err *err);

/* Compresses @n bytes of @in with the program of external filter @name
 * (one complete stream: bzip2 and xz read concatenated streams as one) and
 * appends its output to @out.  Threads may call it at once. */
int bk_filter_block(const char *name, const void *in, size_t n, struct bk_buf *out,
		    struct qp_err *err);

struct bk_child {
	const char *name; /* the program, for messages */
	pid_t pid;
	int in_fd;  /* write end of the child's stdin, or -1 */
	int out_fd; /* read end of the child's stdout, or -1 */
	int err_fd; /* memfd holding the child's stderr */
};

/* Runs @argv[0] (found in PATH) with @argv, no shell.  The child's stdin is
 * @stdin_fd when >= 0, else a pipe whose write end is @c->in_fd; its stdout
 * is @stdout_fd when >= 0, else a pipe whose read end is @c->out_fd.  Other
 * descriptors are closed in the child; stderr is kept for the message of
 * bk_filter_wait.  Writing to a child that died raises SIGPIPE unless the
 * caller ignores it. */
int bk_filter_spawn(const char *const argv[], int stdin_fd, int stdout_fd, struct bk_child *c,
		    struct qp_err *err);
/* Closes the pipes still open, waits for the child and returns 0 when it
 * exited with status 0, else -EIO with its last stderr line. */
int bk_filter_wait(struct bk_child *c, struct qp_err *err);

#endif
