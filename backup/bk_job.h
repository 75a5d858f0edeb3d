/* qpool backup: scrypt key derivations running on their own threads.
 *
 * A derivation with the default parameters takes seconds and 1 GiB of
 * memory, so the backup writer derives the keys of upcoming chunks ahead
 * while it compresses and encrypts the current one, and the restore reader
 * derives the key of the next member while it decrypts this one.  Each job
 * is one thread; callers bound how many run at once.
 *
 * Functions return 0 or a negative errno with a message in @err.
 */
#ifndef QPOOL_BACKUP_BK_JOB_H
#define QPOOL_BACKUP_BK_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "bk_scrypt.h"

struct bk_kdf_job;

/* Starts deriving the key of the passphrase @pass (@len bytes, copied into
 * secure memory) with @pr and @salt (NULL: random).  *@out is the caller's:
 * end it with bk_kdf_job_wait() or bk_kdf_job_free(). */
int bk_kdf_job_start(const void *pass, size_t len, const struct bk_scrypt_params *pr,
		     const uint8_t *salt, struct bk_kdf_job **out, struct qp_err *err);

/* Waits for the job; on success *@key is the caller's (bk_scrypt_key_free).
 * The job stays allocated: free it with bk_kdf_job_free(). */
int bk_kdf_job_wait(struct bk_kdf_job *job, struct bk_scrypt_key **key, struct qp_err *err);

/* Waits for the job if needed, wipes and frees it (and a key not taken).
 * NULL is a no-op. */
void bk_kdf_job_free(struct bk_kdf_job *job);

/* How many derivations of @each bytes of memory may run at once, at most
 * @want and at least 1: what MemAvailable (/proc/meminfo) holds after
 * BK_KDF_RESERVE bytes are left to everything else.  @want when it cannot
 * be read.  bk_kdf_parallel_for() is the rule, for @avail bytes. */
#define BK_KDF_RESERVE ((uint64_t)512 << 20)
unsigned bk_kdf_parallel(uint64_t each, unsigned want);
unsigned bk_kdf_parallel_for(uint64_t avail, uint64_t each, unsigned want);

#endif
