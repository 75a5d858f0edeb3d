/* Key prefetch for restores: the scrypt key of every .enc member is derived
 * ahead, on worker threads, while earlier members are decrypted.
 *
 * A scanner thread walks a second descriptor of the archive (seeking over
 * member data), reads the scrypt header of each .enc member and queues it;
 * workers derive the keys of queued members, oldest first, a few members
 * ahead of the reader at the most.  The reader asks for the key of the
 * member it is at, giving the header it read itself: a key is handed over
 * only when name and header bytes are the same, so a key never decides
 * anything the reader's own checks (header HMAC, data MAC) would not. */
#ifndef QPOOL_BACKUP_BK_PREFETCH_H
#define QPOOL_BACKUP_BK_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "bk_scrypt.h"

struct bk_prefetch;

/* Starts prefetching keys for the archive at @path (a regular file; else
 * *out stays NULL and nothing starts).  @pass and @limits are borrowed
 * until bk_prefetch_stop.  Failures only mean no prefetch: returns void. */
void bk_prefetch_start(const char *path, const char *backup_id, const void *pass,
		       size_t passlen, const struct bk_scrypt_limits *limits,
		       struct bk_prefetch **out);

/* The key of member @name whose scrypt header is @hdr, waiting for its
 * derivation when it is under way; NULL when there is none (the caller
 * derives it).  The key is the caller's.  Keys of members before @name are
 * dropped. */
struct bk_scrypt_key *bk_prefetch_take(struct bk_prefetch *pf, const char *name,
				       const uint8_t hdr[BK_SCRYPT_HDR_LEN]);

/* Stops the threads and frees everything; NULL is fine. */
void bk_prefetch_stop(struct bk_prefetch *pf);

#endif
