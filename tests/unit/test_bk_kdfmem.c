/* Unit tests for backup/bk_kdfmem.c: scrypt through the huge-page allocator
 * gives the known answer, blocks are kept and reused, in parallel too, and
 * small allocations pass through. */
#include "backup/bk_kdfmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "harness.h"

/* scrypt("pleaseletmein", "SodiumChloride", N = 2^16, r = 8, p = 1), 32
 * bytes, from another implementation (Python's hashlib).  Its working area,
 * 64 MiB and 2 KiB, is just above BK_KDFMEM_BIG. */
static const char kat_hex[] = "12b194c86d7bea77ce0c58f7b27974a6000a9f187df8bbc2a263c5fd22ce3c21";

static int derive_ok(void)
{
	uint8_t out[32];
	char hex[65];

	if (!EVP_PBE_scrypt("pleaseletmein", 13, (const uint8_t *)"SodiumChloride", 14,
			    (uint64_t)1 << 16, 8, 1, (uint64_t)128 << 20, out, sizeof(out)))
		return 0;
	for (size_t i = 0; i < sizeof(out); i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	return strcmp(hex, kat_hex) == 0;
}

TEST(known_answer_and_reuse)
{
	bk_kdfmem_trim();
	CHECK(derive_ok());
	/* The block is kept, not unmapped... */
	CHECK_EQ_INT(bk_kdfmem_trim(), 1);
	CHECK_EQ_INT(bk_kdfmem_trim(), 0);
	/* ...and the next derivation takes it and still gets the answer. */
	CHECK(derive_ok());
	CHECK(derive_ok());
	CHECK_EQ_INT(bk_kdfmem_trim(), 1);
}

static void *derive_thread(void *arg)
{
	*(int *)arg = derive_ok();
	return NULL;
}

TEST(parallel_derivations)
{
	pthread_t t[2];
	int ok[2] = { 0, 0 };

	bk_kdfmem_trim();
	for (int i = 0; i < 2; i++)
		CHECK_EQ_INT(pthread_create(&t[i], NULL, derive_thread, &ok[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(ok[0] && ok[1]);
	CHECK_EQ_INT(bk_kdfmem_trim(), 2);
}

TEST(small_and_realloc)
{
	char *p = OPENSSL_malloc(100), *q;

	CHECK(p != NULL);
	memset(p, 'a', 100);
	p = OPENSSL_realloc(p, 5000);
	CHECK(p != NULL && p[99] == 'a');
	OPENSSL_free(p);
	/* A big block shrunk by realloc keeps its bytes and leaves the table. */
	p = OPENSSL_malloc(BK_KDFMEM_BIG);
	CHECK(p != NULL);
	if (!p)
		return;
	memset(p, 'b', 4096);
	q = OPENSSL_realloc(p, 4096);
	CHECK(q != NULL && q[0] == 'b' && q[4095] == 'b');
	OPENSSL_free(q);
	CHECK_EQ_INT(bk_kdfmem_trim(), 0);
}

int main(void)
{
	/* First, before OpenSSL allocates anything. */
	int r = bk_kdfmem_install();

	CHECK_EQ_INT(r, 0);
	RUN(known_answer_and_reuse);
	RUN(parallel_derivations);
	RUN(small_and_realloc);
	return harness_done();
}
