/* qpool backup: the writer pipeline that turns files into an archive.
 *
 * Threads:
 *	producer   builds each file's inner tar stream (sparse for images) and
 *		   cuts it into blocks of BK_WRITER_BLOCK bytes;
 *	workers    compress blocks independently (gzip members, zstd frames);
 *	KDF jobs   derive the scrypt keys of the chunks to come (bk_job.h);
 *	caller     takes compressed blocks in order, cuts the stream into
 *		   chunks, encrypts and MACs each as a scrypt container and
 *		   writes it as an outer tar member.
 * At most BK_WRITER_SLOTS blocks are in flight, so memory stays bounded
 * whatever the volume sizes.  A chunk is streamed straight to the archive:
 * its tar header is written with a placeholder size and rewritten in place
 * (pwrite) when the chunk ends, so the archive must be a regular file.
 */
#ifndef QPOOL_BACKUP_BK_WRITER_H
#define QPOOL_BACKUP_BK_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "bk_compress.h"
#include "bk_scrypt.h"

#define BK_WRITER_BLOCK (4u << 20)
#define BK_WRITER_SLOTS 8
/* Largest chunk: the tar size field of a member must stay below 8 GiB. */
#define BK_WRITER_CHUNK_MAX (4ULL << 30)

/* One file of the archive.  Its members are "<path>.NNN.enc"; its inner
 * stream holds one entry named @path (images sparse, read from @fd with
 * pread; otherwise the @len bytes at @data). */
struct bk_wfile {
	const char *path;
	int fd; /* image, or -1 */
	const void *data;
	size_t len;
};

struct bk_writer_opts {
	const char *backup_id;
	const char *header; /* backup-header text, written first with its .hmac */
	size_t header_len;
	const void *pass; /* the user's passphrase */
	size_t passlen;
	struct bk_scrypt_params kdf;
	enum bk_filter filter; /* BK_FILTER_NONE, _GZIP, _ZSTD or _EXTERNAL */
	const char *filter_name; /* the program's filter, for _EXTERNAL */
	int level;	       /* <= 0: default */
	uint64_t chunk_size;
	unsigned sparse_flags; /* for bk_inner_write_sparse */
	int workers;	       /* compression threads, >= 1 */
	int kdf_ahead;	       /* key derivations running ahead, >= 1 */
	time_t mtime;
	/* Called from the caller's thread after each block: bytes of inner
	 * stream consumed and archive bytes written so far. */
	void (*progress)(void *ctx, uint64_t in, uint64_t out);
	void *progress_ctx;
};

struct bk_writer_stats {
	uint64_t in_bytes;  /* inner tar streams */
	uint64_t out_bytes; /* archive */
	unsigned chunks;    /* .enc members, qubes.xml and header.hmac included */
	unsigned kdf_wasted;
};

/* Writes the whole archive to @fd (a new regular file, at offset 0):
 * backup-header, backup-header.hmac, then the chunks of every file in
 * order. */
int bk_writer_run(int fd, const struct bk_wfile *files, size_t n, const struct bk_writer_opts *o,
		  struct bk_writer_stats *stats, struct qp_err *err);

#endif
