/* The scrypt container (backup/FORMAT.md): key derivation, header, AES-256-CTR
 * and HMAC-SHA256, all from OpenSSL. */
#include "bk_scrypt.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "bk_secure.h"

#define BK_DK_LEN 64
#define BK_KEY_LEN 32
/* Bytes that go through OpenSSL per call (its lengths are int). */
#define BK_STEP (1 << 30)
#define BK_IO_BUF (256 * 1024)

static const uint8_t bk_magic[6] = { 's', 'c', 'r', 'y', 'p', 't' };

struct bk_scrypt_key {
	struct bk_scrypt_params params;
	uint8_t salt[BK_SCRYPT_SALT_LEN];
	uint8_t dk[BK_DK_LEN]; /* [0, 32): AES key, [32, 64): HMAC key */
};

/* The EVP contexts keep their own copies of the expanded keys; OpenSSL
 * wipes them when they are freed. */
struct bk_scrypt_ctx {
	EVP_CIPHER_CTX *aes;
	EVP_MAC_CTX *mac;
	bool decrypt;
	bool done;
};

struct bk_scrypt_params bk_scrypt_params_default(void)
{
	return (struct bk_scrypt_params){ .log_n = 20, .r = 8, .p = 1 };
}

struct bk_scrypt_limits bk_scrypt_limits_default(void)
{
	return (struct bk_scrypt_limits){
		.max_log_n = 22,
		.max_mem = (1ULL << 30) + (64ULL << 20),
		.max_work = 1ULL << 25,
	};
}

static void be32_put(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t bk_scrypt_params_memory(const struct bk_scrypt_params *pr)
{
	uint64_t blocks, mem;

	if (pr->log_n < 0 || pr->log_n > 63)
		return UINT64_MAX;
	/* The V array holds N + 2 blocks of 128 * r bytes, B holds p. */
	if (__builtin_add_overflow(1ULL << pr->log_n, (uint64_t)pr->p + 2, &blocks) ||
	    __builtin_mul_overflow(blocks, 128ULL * pr->r, &mem))
		return UINT64_MAX;
	return mem;
}

int bk_scrypt_params_check(const struct bk_scrypt_params *pr, const struct bk_scrypt_limits *limits,
			   struct qp_err *err)
{
	uint64_t work, mem;

	if (pr->log_n < 1 || pr->log_n > 63 || pr->r < 1 || pr->p < 1 ||
	    (uint64_t)pr->r * pr->p >= (1ULL << 30))
		return qp_err_set(err, -EINVAL, "invalid scrypt parameters log2(N)=%d r=%u p=%u",
				  pr->log_n, pr->r, pr->p);
	if (!limits)
		return 0;
	mem = bk_scrypt_params_memory(pr);
	if (__builtin_mul_overflow((uint64_t)pr->r * pr->p, 1ULL << pr->log_n, &work))
		work = UINT64_MAX;
	if (pr->log_n > limits->max_log_n)
		return qp_err_set(err, -E2BIG,
				  "scrypt parameter log2(N)=%d is above the limit of %d", pr->log_n,
				  limits->max_log_n);
	if (mem > limits->max_mem)
		return qp_err_set(
			err, -E2BIG,
			"scrypt parameters need %llu MiB of memory, above the limit of %llu MiB",
			(unsigned long long)(mem >> 20),
			(unsigned long long)(limits->max_mem >> 20));
	if (work > limits->max_work)
		return qp_err_set(err, -E2BIG,
				  "scrypt parameters log2(N)=%d r=%u p=%u need too much cpu time",
				  pr->log_n, pr->r, pr->p);
	return 0;
}

/* ---- keys ----------------------------------------------------------------- */

int bk_scrypt_derive(const void *pass, size_t passlen, const struct bk_scrypt_params *pr,
		     const uint8_t *salt, struct bk_scrypt_key **out, struct qp_err *err)
{
	struct bk_scrypt_params def = bk_scrypt_params_default();
	struct bk_scrypt_key *key;
	uint64_t mem;
	int ret;

	*out = NULL;
	if (!pr)
		pr = &def;
	ret = bk_scrypt_params_check(pr, NULL, err);
	if (ret < 0)
		return ret;
	mem = bk_scrypt_params_memory(pr);
	if (mem > SIZE_MAX)
		return qp_err_set(err, -E2BIG,
				  "scrypt parameters log2(N)=%d r=%u p=%u need too "
				  "much memory",
				  pr->log_n, pr->r, pr->p);
	key = bk_secure_alloc(sizeof(*key));
	if (!key)
		return qp_err_set(err, -ENOMEM, "cannot allocate secure memory for a key");
	key->params = *pr;
	if (salt) {
		memcpy(key->salt, salt, sizeof(key->salt));
	} else if (RAND_bytes(key->salt, sizeof(key->salt)) != 1) {
		ret = qp_err_set(err, -EIO, "cannot get random bytes for the scrypt salt");
		goto out;
	}
	/* OpenSSL needs an explicit memory bound (its default is 32 MiB);
	 * @mem is exactly what these parameters take. */
	if (EVP_PBE_scrypt(passlen ? pass : "", passlen, key->salt, sizeof(key->salt),
			   1ULL << pr->log_n, pr->r, pr->p, mem + 4096, key->dk,
			   sizeof(key->dk)) != 1) {
		ret = qp_err_set(err, -ENOMEM,
				 "scrypt key derivation failed (log2(N)=%d r=%u p=%u, %llu MiB)",
				 pr->log_n, pr->r, pr->p, (unsigned long long)(mem >> 20));
		goto out;
	}
	*out = key;
	key = NULL;
	ret = 0;
out:
	bk_secure_free(key);
	return ret;
}

void bk_scrypt_key_free(struct bk_scrypt_key *key)
{
	bk_secure_free(key);
}

const struct bk_scrypt_params *bk_scrypt_key_params(const struct bk_scrypt_key *key)
{
	return &key->params;
}

const uint8_t *bk_scrypt_key_salt(const struct bk_scrypt_key *key)
{
	return key->salt;
}

/* ---- header ---------------------------------------------------------------- */

/* HMAC-SHA256 with the key's second half; a fresh context for streaming. */
static EVP_MAC_CTX *bk_hmac_new(const struct bk_scrypt_key *key)
{
	OSSL_PARAM prm[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;

	EVP_MAC_free(mac);
	if (ctx && EVP_MAC_init(ctx, key->dk + BK_KEY_LEN, BK_KEY_LEN, prm) != 1) {
		EVP_MAC_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

static int bk_hmac(const struct bk_scrypt_key *key, const uint8_t *buf, size_t n,
		   uint8_t mac[BK_SCRYPT_MAC_LEN], struct qp_err *err)
{
	EVP_MAC_CTX *ctx = bk_hmac_new(key);
	size_t len = 0;
	int ok;

	ok = ctx && EVP_MAC_update(ctx, buf, n) == 1 &&
	     EVP_MAC_final(ctx, mac, &len, BK_SCRYPT_MAC_LEN) == 1 && len == BK_SCRYPT_MAC_LEN;
	EVP_MAC_CTX_free(ctx);
	return ok ? 0 : qp_err_set(err, -EIO, "hmac-sha256 failed in openssl");
}

static int bk_checksum(const uint8_t hdr[48], uint8_t out[16], struct qp_err *err)
{
	uint8_t md[32];

	if (EVP_Digest(hdr, 48, md, NULL, EVP_sha256(), NULL) != 1)
		return qp_err_set(err, -EIO, "sha-256 failed in openssl");
	memcpy(out, md, 16);
	return 0;
}

/* Bytes 0..63 of the header from the key's parameters and salt. */
static int bk_header_fill(const struct bk_scrypt_key *key, uint8_t hdr[64], struct qp_err *err)
{
	memcpy(hdr, bk_magic, 6);
	hdr[6] = 0;
	hdr[7] = (uint8_t)key->params.log_n;
	be32_put(hdr + 8, key->params.r);
	be32_put(hdr + 12, key->params.p);
	memcpy(hdr + 16, key->salt, BK_SCRYPT_SALT_LEN);
	return bk_checksum(hdr, hdr + 48, err);
}

int bk_scrypt_header_parse(const uint8_t hdr[BK_SCRYPT_HDR_LEN],
			   const struct bk_scrypt_limits *limits, struct bk_scrypt_params *pr,
			   uint8_t salt[BK_SCRYPT_SALT_LEN], struct qp_err *err)
{
	struct bk_scrypt_limits def = bk_scrypt_limits_default();
	struct bk_scrypt_params p;
	uint8_t sum[16];
	int ret;

	if (memcmp(hdr, bk_magic, sizeof(bk_magic)))
		return qp_err_set(err, -EBADMSG, "not a scrypt container");
	if (hdr[6] != 0)
		return qp_err_set(err, -ENOTSUP, "not a scrypt container of a known version (%u)",
				  hdr[6]);
	ret = bk_checksum(hdr, sum, err);
	if (ret < 0)
		return ret;
	if (CRYPTO_memcmp(sum, hdr + 48, sizeof(sum)))
		return qp_err_set(err, -EBADMSG, "corrupt scrypt header: checksum mismatch");
	p.log_n = hdr[7];
	p.r = be32_get(hdr + 8);
	p.p = be32_get(hdr + 12);
	ret = bk_scrypt_params_check(&p, NULL, err);
	if (ret < 0)
		return qp_err_set(err, -EBADMSG,
				  "corrupt scrypt header: invalid parameters "
				  "log2(N)=%d r=%u p=%u",
				  p.log_n, p.r, p.p);
	ret = bk_scrypt_params_check(&p, limits ? limits : &def, err);
	if (ret < 0)
		return ret;
	if (pr)
		*pr = p;
	if (salt)
		memcpy(salt, hdr + 16, BK_SCRYPT_SALT_LEN);
	return 0;
}

/* Does @hdr carry @key's parameters, salt and passphrase check? */
static int bk_header_verify(const struct bk_scrypt_key *key, const uint8_t hdr[BK_SCRYPT_HDR_LEN],
			    struct qp_err *err)
{
	uint8_t mine[64], mac[BK_SCRYPT_MAC_LEN];
	int ret;

	ret = bk_header_fill(key, mine, err);
	if (ret < 0)
		return ret;
	if (memcmp(mine, hdr, sizeof(mine)))
		return qp_err_set(err, -EINVAL, "scrypt header does not belong to this key");
	ret = bk_hmac(key, hdr, 64, mac, err);
	if (ret < 0)
		return ret;
	if (CRYPTO_memcmp(mac, hdr + 64, sizeof(mac)))
		return qp_err_set(err, -EKEYREJECTED, "wrong passphrase");
	return 0;
}

int bk_scrypt_dec_header(const uint8_t hdr[BK_SCRYPT_HDR_LEN], const void *pass, size_t passlen,
			 const struct bk_scrypt_limits *limits, struct bk_scrypt_key **out,
			 struct qp_err *err)
{
	struct bk_scrypt_params pr;
	struct bk_scrypt_key *key = NULL;
	uint8_t salt[BK_SCRYPT_SALT_LEN];
	int ret;

	*out = NULL;
	ret = bk_scrypt_header_parse(hdr, limits, &pr, salt, err);
	if (ret < 0)
		return ret;
	ret = bk_scrypt_derive(pass, passlen, &pr, salt, &key, err);
	if (ret < 0)
		return ret;
	ret = bk_header_verify(key, hdr, err);
	if (ret < 0) {
		bk_scrypt_key_free(key);
		return ret;
	}
	*out = key;
	return 0;
}

/* ---- streaming ---------------------------------------------------------------- */

void bk_scrypt_ctx_free(struct bk_scrypt_ctx *ctx)
{
	if (!ctx)
		return;
	EVP_CIPHER_CTX_free(ctx->aes);
	EVP_MAC_CTX_free(ctx->mac);
	free(ctx);
}

/* AES-256-CTR whose 128-bit big-endian counter starts at 0: the format's
 * 64-bit nonce 0 followed by the 64-bit block index. */
static int bk_ctx_new(const struct bk_scrypt_key *key, const uint8_t hdr[BK_SCRYPT_HDR_LEN],
		      bool decrypt, struct bk_scrypt_ctx **out, struct qp_err *err)
{
	static const uint8_t iv[16];
	struct bk_scrypt_ctx *ctx;

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ctx->decrypt = decrypt;
	ctx->aes = EVP_CIPHER_CTX_new();
	ctx->mac = bk_hmac_new(key);
	if (!ctx->aes || !ctx->mac ||
	    EVP_CipherInit_ex(ctx->aes, EVP_aes_256_ctr(), NULL, key->dk, iv, !decrypt) != 1 ||
	    EVP_MAC_update(ctx->mac, hdr, BK_SCRYPT_HDR_LEN) != 1) {
		bk_scrypt_ctx_free(ctx);
		return qp_err_set(err, -EIO,
				  "cannot set up aes-256-ctr and hmac-sha256 in openssl");
	}
	*out = ctx;
	return 0;
}

int bk_scrypt_enc_init(const struct bk_scrypt_key *key, uint8_t hdr_out[BK_SCRYPT_HDR_LEN],
		       struct bk_scrypt_ctx **out, struct qp_err *err)
{
	int ret;

	*out = NULL;
	ret = bk_header_fill(key, hdr_out, err);
	if (ret < 0)
		return ret;
	ret = bk_hmac(key, hdr_out, 64, hdr_out + 64, err);
	if (ret < 0)
		return ret;
	return bk_ctx_new(key, hdr_out, false, out, err);
}

int bk_scrypt_dec_init(const struct bk_scrypt_key *key, const uint8_t hdr[BK_SCRYPT_HDR_LEN],
		       struct bk_scrypt_ctx **out, struct qp_err *err)
{
	int ret;

	*out = NULL;
	ret = bk_header_verify(key, hdr, err);
	if (ret < 0)
		return ret;
	return bk_ctx_new(key, hdr, true, out, err);
}

/* The HMAC covers the ciphertext: after encrypting, before decrypting (so
 * that @in == @out works both ways). */
static int bk_ctx_update(struct bk_scrypt_ctx *ctx, bool decrypt, const uint8_t *in, size_t n,
			 uint8_t *out, struct qp_err *err)
{
	if (ctx->decrypt != decrypt || ctx->done)
		return qp_err_set(err, -EINVAL, "scrypt context used out of order");
	while (n) {
		int step = n > BK_STEP ? BK_STEP : (int)n;
		int len = 0;

		if (decrypt && EVP_MAC_update(ctx->mac, in, step) != 1)
			goto fail;
		if (EVP_CipherUpdate(ctx->aes, out, &len, in, step) != 1 || len != step)
			goto fail;
		if (!decrypt && EVP_MAC_update(ctx->mac, out, step) != 1)
			goto fail;
		in += step;
		out += step;
		n -= step;
	}
	return 0;
fail:
	ctx->done = true;
	return qp_err_set(err, -EIO, "aes-256-ctr or hmac-sha256 failed in openssl");
}

int bk_scrypt_enc_update(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
			 struct qp_err *err)
{
	return bk_ctx_update(ctx, false, in, n, out, err);
}

int bk_scrypt_dec_update(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
			 struct qp_err *err)
{
	return bk_ctx_update(ctx, true, in, n, out, err);
}

int bk_scrypt_dec_mac(struct bk_scrypt_ctx *ctx, const void *in, size_t n, struct qp_err *err)
{
	if (!ctx->decrypt || ctx->done)
		return qp_err_set(err, -EINVAL, "scrypt context used out of order");
	if (n && EVP_MAC_update(ctx->mac, in, n) != 1)
		return qp_err_set(err, -EIO, "hmac-sha256 failed in openssl");
	return 0;
}

int bk_scrypt_dec_ctr(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
		      struct qp_err *err)
{
	const uint8_t *i = in;
	uint8_t *o = out;

	if (!ctx->decrypt || ctx->done)
		return qp_err_set(err, -EINVAL, "scrypt context used out of order");
	while (n) {
		int step = n > BK_STEP ? BK_STEP : (int)n, len = 0;

		if (EVP_CipherUpdate(ctx->aes, o, &len, i, step) != 1 || len != step)
			return qp_err_set(err, -EIO, "aes-256-ctr failed in openssl");
		i += step;
		o += step;
		n -= (size_t)step;
	}
	return 0;
}

static int bk_ctx_final(struct bk_scrypt_ctx *ctx, bool decrypt, uint8_t mac[BK_SCRYPT_MAC_LEN],
			struct qp_err *err)
{
	size_t len = 0;

	if (ctx->decrypt != decrypt || ctx->done)
		return qp_err_set(err, -EINVAL, "scrypt context used out of order");
	ctx->done = true;
	if (EVP_MAC_final(ctx->mac, mac, &len, BK_SCRYPT_MAC_LEN) != 1 || len != BK_SCRYPT_MAC_LEN)
		return qp_err_set(err, -EIO, "hmac-sha256 failed in openssl");
	return 0;
}

int bk_scrypt_enc_final(struct bk_scrypt_ctx *ctx, uint8_t mac_out[BK_SCRYPT_MAC_LEN],
			struct qp_err *err)
{
	return bk_ctx_final(ctx, false, mac_out, err);
}

int bk_scrypt_dec_final(struct bk_scrypt_ctx *ctx, const uint8_t mac[BK_SCRYPT_MAC_LEN],
			struct qp_err *err)
{
	uint8_t mine[BK_SCRYPT_MAC_LEN];
	int ret;

	ret = bk_ctx_final(ctx, true, mine, err);
	if (ret < 0)
		return ret;
	if (CRYPTO_memcmp(mine, mac, sizeof(mine)))
		return qp_err_set(err, -EBADMSG,
				  "authentication failed: the data or its "
				  "trailer was changed or cut");
	return 0;
}

/* ---- whole streams ------------------------------------------------------------- */

/* Reads up to @n bytes, fewer only at end of file.  Returns the count or a
 * negative errno. */
static ssize_t bk_read_full(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += r;
	}
	return got;
}

static int bk_write_full(int fd, const uint8_t *buf, size_t n, struct qp_err *err)
{
	while (n) {
		ssize_t w = write(fd, buf, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return qp_err_set(err, -errno, "cannot write: %s", strerror(errno));
		buf += w;
		n -= w;
	}
	return 0;
}

int bk_scrypt_encrypt_fd(const struct bk_scrypt_key *key, int in_fd, int out_fd, struct qp_err *err)
{
	struct bk_scrypt_ctx *ctx = NULL;
	uint8_t hdr[BK_SCRYPT_HDR_LEN], mac[BK_SCRYPT_MAC_LEN];
	uint8_t *buf;
	ssize_t n;
	int ret;

	buf = malloc(BK_IO_BUF);
	if (!buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = bk_scrypt_enc_init(key, hdr, &ctx, err);
	if (ret < 0)
		goto out;
	ret = bk_write_full(out_fd, hdr, sizeof(hdr), err);
	while (ret == 0) {
		n = bk_read_full(in_fd, buf, BK_IO_BUF);
		if (n < 0) {
			ret = qp_err_set(err, n, "cannot read: %s", strerror(-n));
			goto out;
		}
		if (n == 0)
			break;
		ret = bk_scrypt_enc_update(ctx, buf, n, buf, err);
		if (ret == 0)
			ret = bk_write_full(out_fd, buf, n, err);
	}
	if (ret == 0)
		ret = bk_scrypt_enc_final(ctx, mac, err);
	if (ret == 0)
		ret = bk_write_full(out_fd, mac, sizeof(mac), err);
out:
	bk_scrypt_ctx_free(ctx);
	free(buf);
	return ret;
}

/* Reads the header of a container; a short one is "not a scrypt container"
 * when even the magic is missing, else truncated. */
static int bk_read_header(int fd, uint8_t hdr[BK_SCRYPT_HDR_LEN], struct qp_err *err)
{
	ssize_t n = bk_read_full(fd, hdr, BK_SCRYPT_HDR_LEN);

	if (n < 0)
		return qp_err_set(err, n, "cannot read: %s", strerror(-n));
	if (n < (ssize_t)sizeof(bk_magic) || memcmp(hdr, bk_magic, sizeof(bk_magic)))
		return qp_err_set(err, -EBADMSG, "not a scrypt container");
	if (n < BK_SCRYPT_HDR_LEN)
		return qp_err_set(err, -EBADMSG, "truncated scrypt container: %zd bytes", n);
	return 0;
}

/* Decrypts everything after the header but the last 32 bytes, which it
 * leaves in @tail.  @buf has room for BK_IO_BUF + 32 bytes. */
static int bk_decrypt_body(struct bk_scrypt_ctx *ctx, int in_fd, int out_fd, uint8_t *buf,
			   uint8_t tail[BK_SCRYPT_MAC_LEN], struct qp_err *err)
{
	size_t have = 0; /* bytes held back at the start of buf */
	ssize_t n;
	int ret;

	for (;;) {
		n = bk_read_full(in_fd, buf + have, BK_IO_BUF);
		if (n < 0)
			return qp_err_set(err, n, "cannot read: %s", strerror(-n));
		have += n;
		if (have > BK_SCRYPT_MAC_LEN) {
			size_t len = have - BK_SCRYPT_MAC_LEN;

			ret = bk_scrypt_dec_update(ctx, buf, len, buf, err);
			if (ret == 0)
				ret = bk_write_full(out_fd, buf, len, err);
			if (ret < 0)
				return ret;
			memmove(buf, buf + len, BK_SCRYPT_MAC_LEN);
			have = BK_SCRYPT_MAC_LEN;
		}
		if (n == 0)
			break;
	}
	if (have < BK_SCRYPT_MAC_LEN)
		return qp_err_set(err, -EBADMSG, "truncated scrypt container: no trailer");
	memcpy(tail, buf, BK_SCRYPT_MAC_LEN);
	return 0;
}

int bk_scrypt_decrypt_fd(const void *pass, size_t passlen, const struct bk_scrypt_limits *limits,
			 int in_fd, int out_fd, struct qp_err *err)
{
	struct bk_scrypt_key *key = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	uint8_t hdr[BK_SCRYPT_HDR_LEN], mac[BK_SCRYPT_MAC_LEN];
	uint8_t *buf = NULL;
	int ret;

	ret = bk_read_header(in_fd, hdr, err);
	if (ret < 0)
		goto out;
	ret = bk_scrypt_dec_header(hdr, pass, passlen, limits, &key, err);
	if (ret < 0)
		goto out;
	ret = bk_scrypt_dec_init(key, hdr, &ctx, err);
	if (ret < 0)
		goto out;
	buf = malloc(BK_IO_BUF + BK_SCRYPT_MAC_LEN);
	if (!buf) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = bk_decrypt_body(ctx, in_fd, out_fd, buf, mac, err);
	if (ret == 0)
		ret = bk_scrypt_dec_final(ctx, mac, err);
out:
	free(buf);
	bk_scrypt_ctx_free(ctx);
	bk_scrypt_key_free(key);
	return ret;
}
