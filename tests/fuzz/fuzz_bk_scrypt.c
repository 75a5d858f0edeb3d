/* libFuzzer target: the scrypt container reader (backup/bk_scrypt.c).
 *
 * The input is a container, decrypted with the passphrase "fuzz-pass" under
 * tight resource limits (so hostile parameters are refused, not run), both
 * through the streaming API in pieces whose sizes come from the input and
 * through bk_scrypt_decrypt_fd().  Both must agree; a container that
 * decrypts must be exactly what the writer makes from its plaintext with
 * the same salt and parameters (so no other input is ever accepted). */
#include "backup/bk_scrypt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char pass[] = "fuzz-pass";

static const struct bk_scrypt_limits limits = {
	.max_log_n = 10,
	.max_mem = 2 << 20,
	.max_work = 1 << 14,
};

/* The streaming reader; @plain gets size - 128 bytes. */
static int dec_stream(const uint8_t *c, size_t size, uint8_t *plain,
		      struct bk_scrypt_key **keyp, struct qp_err *err)
{
	struct bk_scrypt_ctx *ctx = NULL;
	size_t n, off = 0, step = 1 + (size > 100 ? c[99] : 0);
	int ret;

	if (size < BK_SCRYPT_OVERHEAD)
		return -EBADMSG;
	n = size - BK_SCRYPT_OVERHEAD;
	ret = bk_scrypt_dec_header(c, pass, strlen(pass), &limits, keyp, err);
	if (ret == 0)
		ret = bk_scrypt_dec_init(*keyp, c, &ctx, err);
	while (ret == 0 && off < n) {
		size_t k = step < n - off ? step : n - off;

		ret = bk_scrypt_dec_update(ctx, c + 96 + off, k, plain + off, err);
		off += k;
		step = step * 2 + 1;
	}
	if (ret == 0)
		ret = bk_scrypt_dec_final(ctx, c + size - 32, err);
	bk_scrypt_ctx_free(ctx);
	return ret;
}

static int dec_fd(const uint8_t *c, size_t size, struct qp_err *err)
{
	int in = memfd_create("in", MFD_CLOEXEC), out = memfd_create("out", MFD_CLOEXEC);
	int ret;

	if (in < 0 || out < 0 || write(in, c, size) != (ssize_t)size)
		abort();
	lseek(in, 0, SEEK_SET);
	ret = bk_scrypt_decrypt_fd(pass, strlen(pass), &limits, in, out, err);
	close(in);
	close(out);
	return ret;
}

/* Re-encrypts @plain with @key: must give back @c byte for byte. */
static void check_same(const struct bk_scrypt_key *key, const uint8_t *c, size_t size,
		       const uint8_t *plain)
{
	struct qp_err err = { 0 };
	struct bk_scrypt_ctx *ctx = NULL;
	size_t n = size - BK_SCRYPT_OVERHEAD;
	uint8_t *again = malloc(size);

	if (!again || bk_scrypt_enc_init(key, again, &ctx, &err) < 0 ||
	    bk_scrypt_enc_update(ctx, plain, n, again + 96, &err) < 0 ||
	    bk_scrypt_enc_final(ctx, again + 96 + n, &err) < 0 || memcmp(again, c, size))
		abort();
	bk_scrypt_ctx_free(ctx);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qp_err e1 = { 0 }, e2 = { 0 };
	struct bk_scrypt_key *key = NULL;
	uint8_t *plain = malloc(size + 1);
	int r1, r2;

	if (!plain)
		abort();
	r1 = dec_stream(data, size, plain, &key, &e1);
	r2 = dec_fd(data, size, &e2);
	if ((r1 == 0) != (r2 == 0))
		abort();
	if (r1 == 0)
		check_same(key, data, size, plain);
	else if (r1 > 0 || r2 > 0)
		abort();
	bk_scrypt_key_free(key);
	free(plain);
	return 0;
}
