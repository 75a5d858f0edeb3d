/* Secure memory for qpool's backup code: passphrases and derived keys.
 *
 * Every secret qpool handles (the user's backup passphrase, the per-file
 * passphrases built from it, scrypt-derived keys) lives in memory from
 * bk_secure_alloc().  Each allocation is its own anonymous mapping, so that
 *   - it is locked with mlock() and never written to swap (best effort: when
 *     RLIMIT_MEMLOCK forbids locking, the memory is still usable and still
 *     zeroed on free; bk_secure_locked() tells which happened);
 *   - it is left out of core dumps (MADV_DONTDUMP);
 *   - unlocking it on free cannot unlock a page that another allocation
 *     still uses, as it could if secrets shared pages from malloc().
 * bk_secure_free() overwrites the whole mapping with OPENSSL_cleanse() before
 * unmapping it.
 *
 * Secrets are never put in argv, in the environment of a child process or
 * in an error message.
 */
#ifndef QPOOL_BACKUP_BK_SECURE_H
#define QPOOL_BACKUP_BK_SECURE_H

#include <stdbool.h>
#include <stddef.h>

/* Returns @size zeroed bytes (16-byte aligned; size 0 gives a valid
 * allocation), or NULL with errno set (ENOMEM, EOVERFLOW).  Release with
 * bk_secure_free(). */
void *bk_secure_alloc(size_t size);

/* Zeroes and releases memory from bk_secure_alloc().  NULL is a no-op. */
void bk_secure_free(void *p);

/* Copies @len bytes of @src into a new secure allocation of @len + 1 bytes,
 * the last one NUL (so text stays a C string).  NULL with errno on failure. */
void *bk_secure_dup(const void *src, size_t len);

/* True when the allocation @p was locked into RAM by mlock(). */
bool bk_secure_locked(const void *p);

#endif
