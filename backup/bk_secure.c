/* Secure memory: one anonymous mapping per secret, locked and wiped. */
#include "bk_secure.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define BK_SECURE_MAGIC 0x716b7365637265ULL /* "qksecre" */

/* Sits at the start of each mapping, before the caller's bytes; 32 bytes so
 * that what follows stays 16-byte aligned. */
struct bk_secure_hdr {
	uint64_t magic;
	size_t maplen;
	uint64_t locked;
	uint64_t pad;
};

void *bk_secure_alloc(size_t size)
{
	struct bk_secure_hdr *h;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len;

	if (size > SIZE_MAX - sizeof(*h) - page) {
		errno = EOVERFLOW;
		return NULL;
	}
	len = (size + sizeof(*h) + page - 1) / page * page;
	h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	/* Not fatal: without the privilege or the rlimit to lock, the secret
	 * may reach swap but is still wiped on free. */
	h->locked = mlock(h, len) == 0;
#ifdef MADV_DONTDUMP
	madvise(h, len, MADV_DONTDUMP);
#endif
	h->magic = BK_SECURE_MAGIC;
	h->maplen = len;
	return h + 1;
}

void bk_secure_free(void *p)
{
	struct bk_secure_hdr *h;
	size_t len;
	int locked;

	if (!p)
		return;
	h = (struct bk_secure_hdr *)p - 1;
	if (h->magic != BK_SECURE_MAGIC)
		abort(); /* not from bk_secure_alloc(): never unmap blindly */
	len = h->maplen;
	locked = h->locked;
	OPENSSL_cleanse(h, len);
	if (locked)
		munlock(h, len);
	munmap(h, len);
}

void *bk_secure_dup(const void *src, size_t len)
{
	char *p;

	if (len == SIZE_MAX) {
		errno = EOVERFLOW;
		return NULL;
	}
	p = bk_secure_alloc(len + 1);
	if (!p)
		return NULL;
	if (len)
		memcpy(p, src, len);
	return p;
}

bool bk_secure_locked(const void *p)
{
	const struct bk_secure_hdr *h;

	if (!p)
		return false;
	h = (const struct bk_secure_hdr *)p - 1;
	return h->locked != 0;
}
