/* qpool backup: ordered writes to a file from a thread of their own.
 *
 * The thread that makes the bytes (encrypting, decompressing) hands them
 * over in large buffers and goes on while another thread writes them, so
 * the copy into the page cache runs on the other core.  The file is
 * written in order from its offset at the start; a positional write (a
 * header rewritten in place) takes effect after everything handed over
 * before it.  Every BK_AOUT_FLUSH bytes, writeback of what was written is
 * started (sync_file_range), so the final fsync has little left to do.
 *
 * The first error of the thread is returned by every later call.
 */
#ifndef QPOOL_BACKUP_BK_AOUT_H
#define QPOOL_BACKUP_BK_AOUT_H

#include <stddef.h>
#include <stdint.h>

#include "storage/qpool.h"

#define BK_AOUT_BUF (8u << 20)
#define BK_AOUT_BUFS 4
#define BK_AOUT_FLUSH (64u << 20)

struct bk_aout;

/* Starts the writer thread for @fd; @what names the file in errors
 * ("the archive", "volume 'vm:private'"). */
int bk_aout_start(int fd, const char *what, struct bk_aout **out, struct qp_err *err);

/* Appends @len bytes of @buf.  Has the signature of a bk_out callback, with
 * the bk_aout as its context. */
int bk_aout_write(void *aout, const void *buf, size_t len, struct qp_err *err);

/* Writes @len bytes (at most BK_AOUT_BUF) at @off, after everything
 * appended so far. */
int bk_aout_pwrite(struct bk_aout *a, const void *buf, size_t len, uint64_t off,
		   struct qp_err *err);

/* Writes everything handed over and stops the thread: 0 or the first
 * error.  The bk_aout must still be freed. */
int bk_aout_finish(struct bk_aout *a, struct qp_err *err);

/* Stops the thread (what was not written yet is dropped) and frees @a. */
void bk_aout_free(struct bk_aout *a);

#endif
