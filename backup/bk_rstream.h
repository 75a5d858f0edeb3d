/* qpool backup, restore side: decrypting members and extracting files.
 *
 * bk_member_decrypt turns one .enc member of the outer archive into a
 * temporary file of plaintext, and returns it only once the container's MAC
 * verified.  A bk_rstream is one file of the backup (qubes.xml or a volume
 * image) being extracted on its own thread: verified chunks are pushed in
 * order, concatenated, decompressed and read as an inner tar stream that
 * must hold exactly the one expected entry.
 */
#ifndef QPOOL_BACKUP_BK_RSTREAM_H
#define QPOOL_BACKUP_BK_RSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "bk_compress.h"
#include "bk_prefetch.h"
#include "bk_scrypt.h"
#include "bk_tar.h"

/* Reads the data of the current member of @r (@size bytes, a scrypt
 * container named @name in the archive) with the passphrase of that name,
 * decrypts it into an unlinked file in @tmpdir and checks the MAC.  On
 * success *@fd is that file, positioned at its start (the caller's).
 * -EKEYREJECTED when the passphrase does not fit the member (wrong
 * passphrase, or a member renamed, moved or taken from another backup),
 * -EBADMSG for corrupt or truncated data.  @pf (optional) may hold the key
 * already. */
int bk_member_decrypt(struct bk_tar_reader *r, uint64_t size, const char *backup_id,
		      const char *name, const void *pass, size_t passlen,
		      const struct bk_scrypt_limits *limits, struct bk_prefetch *pf,
		      const char *tmpdir, int *fd, struct qp_err *err);

/* The same, reading the archive twice instead of through a temporary file:
 * the member's data is read and its MAC checked, and *@dec is a context to
 * decrypt it (bk_rstream_push_range) on a second reading, from the archive
 * whose read lease the caller holds. */
int bk_member_verify(struct bk_tar_reader *r, uint64_t size, const char *backup_id,
		     const char *name, const void *pass, size_t passlen,
		     const struct bk_scrypt_limits *limits, struct bk_prefetch *pf,
		     struct bk_scrypt_ctx **dec, struct qp_err *err);

/* Where an extracted entry goes: called on the extraction thread once the
 * entry's header is read; returns the descriptor to bk_tar_extract into
 * (kept open by the callee), or a negative errno.  With *@sync set, the
 * thread also fsyncs it before it reports success.  NULL: the entry must be
 * a regular file of at most @max_mem bytes, kept in memory. */
typedef int (*bk_rstream_open_fn)(void *ctx, const struct bk_tar_entry *ent, int *fd,
				  bool *sync, struct qp_err *err);

struct bk_rstream;

/* Starts the extraction thread for the file whose inner entry must be named
 * @name; decompressed output beyond @limit bytes fails with -EFBIG.  For
 * BK_FILTER_EXTERNAL, @prog names the filter ("bzip2", "xz"...), whose
 * program decompresses the chunks (they are MAC-checked before it sees
 * them). */
int bk_rstream_start(enum bk_filter f, const char *prog, uint64_t limit, const char *name,
		     bk_rstream_open_fn open, void *ctx, size_t max_mem, struct bk_rstream **out,
		     struct qp_err *err);
/* Hands over the next verified chunk (@fd is then owned by the stream).
 * Waits while two chunks are queued.  Fails when the thread failed. */
int bk_rstream_push(struct bk_rstream *rs, int fd, struct qp_err *err);
/* Hands over a verified chunk to be read from @src (an archive with a read
 * lease, borrowed), @len bytes of ciphertext at @off, decrypted with @ctx
 * (then owned by the stream).  The stream fails when the lease is gone
 * once it read them. */
int bk_rstream_push_range(struct bk_rstream *rs, int src, uint64_t off, uint64_t len,
			  struct bk_scrypt_ctx *ctx, struct qp_err *err);
/* Ends the input, waits for the thread and frees the stream: 0 when the
 * file was complete and clean.  For in-memory entries *@data (malloc'd,
 * NUL-terminated) and *@len get the content; pass NULL otherwise. */
int bk_rstream_finish(struct bk_rstream *rs, char **data, size_t *len, struct qp_err *err);
/* Stops the thread and frees the stream; NULL is a no-op. */
void bk_rstream_abort(struct bk_rstream *rs);

#endif
