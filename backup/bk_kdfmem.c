/* Memory for scrypt's large working area, kept for reuse. */
#include "backup/bk_kdfmem.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_LIVE 16

/* A mapping: @map/@maplen as mmap returned them, @mem aligned inside. */
struct big {
	void *map;
	size_t maplen;
	void *mem;
	size_t len;		/* usable bytes from mem */
};

static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static struct big live[MAX_LIVE];	/* handed to OpenSSL */
static struct big kept[BK_KDFMEM_KEEP];	/* cleared, for the next one */

/* A block on 2 MiB boundaries, with huge pages asked for: faulting in a
 * fresh 1 GiB in 4 KiB pages measured 3 to 4.5 s here (a derivation on a
 * kept block: 2.6 s), in huge pages 1.2 to 1.5 s.  Where the kernel must
 * compact memory to find huge pages, the first derivation on a block may
 * take longer; the blocks after it do not fault at all. */
static bool big_map(struct big *b, size_t len)
{
	size_t huge = (size_t)2 << 20, maplen = len + huge;
	void *map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *mem;

	if (map == MAP_FAILED)
		return false;
	mem = (void *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
	/* Hints: without them the block works all the same. */
	(void)madvise(map, maplen, MADV_DONTDUMP);
	(void)madvise(mem, len & ~(huge - 1), MADV_HUGEPAGE);
	*b = (struct big){ .map = map, .maplen = maplen, .mem = mem, .len = len };
	return true;
}

/* With big_lock held: a slot of @arr that is free, or NULL. */
static struct big *free_slot(struct big *arr, int n)
{
	for (int i = 0; i < n; i++)
		if (!arr[i].map)
			return &arr[i];
	return NULL;
}

static void *big_alloc(size_t n)
{
	struct big b = { 0 }, *slot;
	int best = -1;

	pthread_mutex_lock(&big_lock);
	slot = free_slot(live, MAX_LIVE);
	/* A kept block that fits without wasting more than half of it. */
	for (int i = 0; slot && i < BK_KDFMEM_KEEP; i++)
		if (kept[i].map && kept[i].len >= n && kept[i].len / 2 <= n &&
		    (best < 0 || kept[i].len < kept[best].len))
			best = i;
	if (best >= 0) {
		b = kept[best];
		kept[best] = (struct big){ 0 };
	}
	pthread_mutex_unlock(&big_lock);
	if (!slot)
		return malloc(n);
	if (!b.map && !big_map(&b, n))
		return NULL;
	pthread_mutex_lock(&big_lock);
	slot = free_slot(live, MAX_LIVE);
	if (slot)
		*slot = b;
	pthread_mutex_unlock(&big_lock);
	if (!slot) {
		munmap(b.map, b.maplen);
		return malloc(n);
	}
	return b.mem;
}

/* Takes @p out of the live table into *out; false when it is not a block of ours. */
static bool big_take(void *p, struct big *out)
{
	bool found = false;

	pthread_mutex_lock(&big_lock);
	for (int i = 0; i < MAX_LIVE && !found; i++) {
		if (live[i].map && live[i].mem == p) {
			*out = live[i];
			live[i] = (struct big){ 0 };
			found = true;
		}
	}
	pthread_mutex_unlock(&big_lock);
	return found;
}

static void *kdfmem_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return n >= BK_KDFMEM_BIG ? big_alloc(n) : malloc(n);
}

/* In qpool, only scrypt asks OpenSSL for BK_KDFMEM_BIG bytes or more, and
 * it clears its block (OPENSSL_clear_free) before it frees it: a block kept
 * holds zeroes until the next derivation takes it. */
static void kdfmem_free(void *p, const char *file, int line)
{
	struct big b, *slot;

	(void)file;
	(void)line;
	if (!p)
		return;
	if (!big_take(p, &b)) {
		free(p);
		return;
	}
	pthread_mutex_lock(&big_lock);
	slot = free_slot(kept, BK_KDFMEM_KEEP);
	if (slot)
		*slot = b;
	pthread_mutex_unlock(&big_lock);
	if (!slot)
		munmap(b.map, b.maplen);
}

static void *kdfmem_realloc(void *p, size_t n, const char *file, int line)
{
	struct big b = { 0 };
	void *q = NULL;
	int i;

	if (!p)
		return kdfmem_malloc(n, file, line);
	pthread_mutex_lock(&big_lock);
	for (i = 0; i < MAX_LIVE; i++)
		if (live[i].map && live[i].mem == p)
			break;
	if (i == MAX_LIVE) {
		pthread_mutex_unlock(&big_lock);
		return realloc(p, n);
	}
	/* Not done by scrypt; handled for completeness.  On failure the
	 * block stays as it was, as realloc leaves it. */
	q = malloc(n);
	if (q) {
		b = live[i];
		live[i] = (struct big){ 0 };
	}
	pthread_mutex_unlock(&big_lock);
	if (q) {
		memcpy(q, b.mem, n < b.len ? n : b.len);
		OPENSSL_cleanse(b.mem, b.len);
		munmap(b.map, b.maplen);
	}
	return q;
}

int bk_kdfmem_install(void)
{
	return CRYPTO_set_mem_functions(kdfmem_malloc, kdfmem_realloc, kdfmem_free) ? 0 : -EBUSY;
}

int bk_kdfmem_trim(void)
{
	int n = 0;

	pthread_mutex_lock(&big_lock);
	for (int i = 0; i < BK_KDFMEM_KEEP; i++) {
		if (kept[i].map) {
			munmap(kept[i].map, kept[i].maplen);
			kept[i] = (struct big){ 0 };
			n++;
		}
	}
	pthread_mutex_unlock(&big_lock);
	return n;
}
