/* Memory for scrypt's large working area.
 *
 * At the strength backups use (N = 2^20, r = 8), every key derivation asks
 * OpenSSL for a 1 GiB block, which it clears and frees at the end.  Through
 * malloc, every derivation maps that block afresh, and the kernel faults in
 * and zeroes 262144 pages: about a third of the derivation's time.
 * bk_kdfmem_install() gives OpenSSL an allocator that serves blocks of at
 * least BK_KDFMEM_BIG bytes from mappings that
 *   - are kept for the next derivation (up to BK_KDFMEM_KEEP of them) instead
 *     of being unmapped: OpenSSL has cleared them before it frees them;
 *   - are asked to be backed by huge pages (fewer, cheaper faults);
 *   - are left out of core dumps.
 * Smaller requests go to malloc, realloc and free unchanged.
 */
#ifndef QPOOL_BACKUP_BK_KDFMEM_H
#define QPOOL_BACKUP_BK_KDFMEM_H

#include <stddef.h>

#define BK_KDFMEM_BIG ((size_t)64 << 20)
#define BK_KDFMEM_KEEP 3

/* Installs the allocator; must run before OpenSSL allocates anything (at
 * the start of main).  Returns 0, or -EBUSY when OpenSSL already allocated
 * with its own allocator (which then stays: slower, nothing else). */
int bk_kdfmem_install(void);

/* Unmaps the blocks kept for reuse (and returns how many there were). */
int bk_kdfmem_trim(void);

#endif
