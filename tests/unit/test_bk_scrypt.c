/* Unit tests for backup/bk_scrypt.c and backup/bk_secure.c: known answers
 * from the scrypt tool, round trips, wrong passphrases, corrupted and
 * truncated containers, resource limits. */
#include "backup/bk_job.h"
#include "backup/bk_scrypt.h"
#include "backup/bk_secure.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "harness.h"

/* `printf 'qpool known answer' | scrypt enc -P --logN 10 -r 8 -p 1` with
 * the passphrase "kat-pass" (scrypt 1.3.1). */
static const uint8_t kat_enc[146] = {
	0x73, 0x63, 0x72, 0x79, 0x70, 0x74, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x01, 0xd7, 0xcc, 0x2b, 0x7f, 0xe5, 0xcb, 0xd7, 0xbc,
	0xb7, 0xa1, 0xe7, 0xea, 0x9e, 0x51, 0x20, 0xf2, 0x83, 0xa1, 0xf3, 0x50,
	0xc9, 0x05, 0xd6, 0x1d, 0x27, 0x86, 0xbe, 0xeb, 0xcd, 0x35, 0xf1, 0x51,
	0xd2, 0x79, 0x12, 0xb3, 0xcf, 0xf0, 0x90, 0x3a, 0x73, 0xae, 0x17, 0xdb,
	0x5b, 0xd4, 0x2e, 0xbe, 0xc4, 0x5a, 0xf1, 0x6a, 0xf4, 0xd6, 0xd0, 0x53,
	0xf7, 0x4a, 0x82, 0xbc, 0x5f, 0x80, 0x3a, 0x11, 0x4c, 0x4c, 0xe3, 0x38,
	0xa0, 0xc0, 0x9f, 0xa0, 0x40, 0x4d, 0x47, 0xea, 0x18, 0x4e, 0x4a, 0xd6,
	0xe4, 0x3f, 0x5a, 0x59, 0x68, 0xcf, 0x4c, 0x1f, 0xeb, 0xe1, 0x81, 0xca,
	0x4d, 0x20, 0x9c, 0xf5, 0x8b, 0x25, 0xbe, 0xcc, 0x9a, 0xd6, 0xbd, 0xa9,
	0x3f, 0x04, 0xbc, 0x6e, 0xd0, 0xae, 0x8b, 0x3c, 0xa9, 0xf9, 0x52, 0x9b,
	0x40, 0xb9, 0xfb, 0x20, 0x04, 0x34, 0xec, 0x72, 0xf4, 0x1f, 0x60, 0xff,
	0xba, 0x8c,
};
static const char kat_plain[] = "qpool known answer";
static const char kat_pass[] = "kat-pass";

static const struct bk_scrypt_params fast = { .log_n = 10, .r = 8, .p = 1 };

/* Encrypts @n bytes into a new buffer of n + 128 bytes, in uneven pieces. */
static uint8_t *encrypt_buf(const struct bk_scrypt_key *key, const uint8_t *in, size_t n)
{
	struct qp_err err = { 0 };
	struct bk_scrypt_ctx *ctx = NULL;
	uint8_t *out = malloc(n + BK_SCRYPT_OVERHEAD);
	size_t off = 0, step = 1;

	CHECK(out != NULL);
	CHECK_EQ_INT(bk_scrypt_enc_init(key, out, &ctx, &err), 0);
	while (ctx && off < n) {
		size_t k = step < n - off ? step : n - off;

		CHECK_EQ_INT(bk_scrypt_enc_update(ctx, in + off, k, out + 96 + off, &err), 0);
		off += k;
		step = step * 3 + 1;
	}
	CHECK_EQ_INT(bk_scrypt_enc_final(ctx, out + 96 + n, &err), 0);
	bk_scrypt_ctx_free(ctx);
	return out;
}

/* Decrypts a whole container in memory with the streaming API; returns 0 or
 * the first error, with the plaintext in @plain (len - 128 bytes). */
static int decrypt_buf(const uint8_t *c, size_t len, const char *pass,
		       const struct bk_scrypt_limits *lim, uint8_t *plain, struct qp_err *err)
{
	struct bk_scrypt_key *key = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	size_t n, off = 0, step = 7;
	int ret;

	if (len < BK_SCRYPT_OVERHEAD)
		return -EMSGSIZE;
	n = len - BK_SCRYPT_OVERHEAD;
	ret = bk_scrypt_dec_header(c, pass, strlen(pass), lim, &key, err);
	if (ret == 0)
		ret = bk_scrypt_dec_init(key, c, &ctx, err);
	while (ret == 0 && off < n) {
		size_t k = step < n - off ? step : n - off;

		ret = bk_scrypt_dec_update(ctx, c + 96 + off, k, plain + off, err);
		off += k;
		step = step * 2 + 5;
	}
	if (ret == 0)
		ret = bk_scrypt_dec_final(ctx, c + len - 32, err);
	bk_scrypt_ctx_free(ctx);
	bk_scrypt_key_free(key);
	return ret;
}

/* Decrypts through bk_scrypt_decrypt_fd() from a memfd; the plaintext goes
 * to another memfd whose size is returned in @outlen. */
static int decrypt_via_fd(const uint8_t *c, size_t len, const char *pass, size_t *outlen,
			  struct qp_err *err)
{
	int in = memfd_create("in", 0), out = memfd_create("out", 0), ret;

	CHECK(in >= 0 && out >= 0);
	CHECK_EQ_INT(write(in, c, len), (ssize_t)len);
	lseek(in, 0, SEEK_SET);
	ret = bk_scrypt_decrypt_fd(pass, strlen(pass), NULL, in, out, err);
	*outlen = lseek(out, 0, SEEK_END);
	close(in);
	close(out);
	return ret;
}

TEST(secure_alloc)
{
	uint8_t *p = bk_secure_alloc(100);
	char *d;

	CHECK(p != NULL);
	for (int i = 0; p && i < 100; i++)
		CHECK_EQ_INT(p[i], 0);
	CHECK_EQ_INT((uintptr_t)p % 16, 0);
	if (getuid() == 0)
		CHECK(bk_secure_locked(p));
	memset(p, 0xaa, 100);
	bk_secure_free(p);
	bk_secure_free(NULL);
	d = bk_secure_dup("abc", 3);
	CHECK_EQ_STR(d, "abc");
	bk_secure_free(d);
	p = bk_secure_alloc(0);
	CHECK(p != NULL);
	bk_secure_free(p);
	CHECK(bk_secure_alloc(SIZE_MAX) == NULL);
}

TEST(default_params_and_limits)
{
	struct bk_scrypt_params d = bk_scrypt_params_default();
	struct bk_scrypt_limits l = bk_scrypt_limits_default();
	struct bk_scrypt_params p;
	struct qp_err err = { 0 };

	CHECK_EQ_INT(d.log_n, 20);
	CHECK_EQ_INT(d.r, 8);
	CHECK_EQ_INT(d.p, 1);
	CHECK_EQ_INT(bk_scrypt_params_memory(&d), 128ULL * 8 * ((1 << 20) + 3));
	CHECK_EQ_INT(bk_scrypt_params_check(&d, &l, &err), 0);
	p = (struct bk_scrypt_params){ 23, 1, 1 };
	CHECK_EQ_INT(bk_scrypt_params_check(&p, &l, &err), -E2BIG);
	p = (struct bk_scrypt_params){ 22, 8, 1 };	/* 4 GiB */
	CHECK_EQ_INT(bk_scrypt_params_check(&p, &l, &err), -E2BIG);
	CHECK(strstr(err.msg, "memory") != NULL);
	p = (struct bk_scrypt_params){ 16, 1, 1000 };	/* cheap on memory, not on cpu */
	CHECK_EQ_INT(bk_scrypt_params_check(&p, &l, &err), -E2BIG);
	p = (struct bk_scrypt_params){ 10, 1 << 15, 1 << 15 };	/* r * p = 2^30 */
	CHECK_EQ_INT(bk_scrypt_params_check(&p, NULL, &err), -EINVAL);
	p = (struct bk_scrypt_params){ 0, 8, 1 };
	CHECK_EQ_INT(bk_scrypt_params_check(&p, NULL, &err), -EINVAL);
	p = (struct bk_scrypt_params){ 63, 0xffffffff, 1 };
	CHECK_EQ_INT(bk_scrypt_params_memory(&p), UINT64_MAX);
}

/* A container from the scrypt tool decrypts to the known plaintext. */
TEST(kat_decrypts)
{
	struct qp_err err = { 0 };
	uint8_t plain[sizeof(kat_enc)];
	size_t outlen = 0;

	CHECK_EQ_INT(decrypt_buf(kat_enc, sizeof(kat_enc), kat_pass, NULL, plain, &err), 0);
	CHECK(!memcmp(plain, kat_plain, strlen(kat_plain)));
	CHECK_EQ_INT(decrypt_via_fd(kat_enc, sizeof(kat_enc), kat_pass, &outlen, &err), 0);
	CHECK_EQ_INT(outlen, strlen(kat_plain));
}

/* With the same salt and parameters, qpool writes the very bytes the scrypt
 * tool wrote: header, ciphertext and trailer. */
TEST(kat_encrypts_identically)
{
	struct qp_err err = { 0 };
	struct bk_scrypt_params pr;
	struct bk_scrypt_key *key = NULL;
	uint8_t salt[32], *out;

	CHECK_EQ_INT(bk_scrypt_header_parse(kat_enc, NULL, &pr, salt, &err), 0);
	CHECK_EQ_INT(pr.log_n, 10);
	CHECK_EQ_INT(pr.r, 8);
	CHECK_EQ_INT(pr.p, 1);
	CHECK_EQ_INT(bk_scrypt_derive(kat_pass, strlen(kat_pass), &pr, salt, &key, &err), 0);
	if (!key)
		return;
	CHECK(!memcmp(bk_scrypt_key_salt(key), salt, 32));
	CHECK_EQ_INT(bk_scrypt_key_params(key)->log_n, 10);
	out = encrypt_buf(key, (const uint8_t *)kat_plain, strlen(kat_plain));
	CHECK(!memcmp(out, kat_enc, sizeof(kat_enc)));
	free(out);
	bk_scrypt_key_free(key);
}

TEST(kat_wrong_passphrase)
{
	struct qp_err err = { 0 };
	uint8_t plain[sizeof(kat_enc)];
	size_t outlen = 1;

	CHECK_EQ_INT(decrypt_buf(kat_enc, sizeof(kat_enc), "kat-pasS", NULL, plain, &err),
		     -EKEYREJECTED);
	CHECK_EQ_STR(err.msg, "wrong passphrase");
	CHECK_EQ_INT(decrypt_via_fd(kat_enc, sizeof(kat_enc), "", &outlen, &err), -EKEYREJECTED);
	CHECK_EQ_INT(outlen, 0);
}

TEST(round_trip_sizes)
{
	static const size_t sizes[] = { 0, 1, 15, 16, 17, 4095, 65536, 262144 + 33, 1 << 20 };
	struct qp_err err = { 0 };
	struct bk_scrypt_key *key = NULL;
	uint8_t *in = malloc(1 << 20), *plain = malloc(1 << 20);

	for (size_t i = 0; i < (1 << 20); i++)
		in[i] = (uint8_t)(i * 131 + (i >> 9));
	CHECK_EQ_INT(bk_scrypt_derive("pw\0with nul", 11, &fast, NULL, &key, &err), 0);
	for (size_t i = 0; key && i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *c = encrypt_buf(key, in, sizes[i]);
		size_t outlen = 0;
		int in_fd = memfd_create("c", 0), out_fd = memfd_create("p", 0);

		/* the streaming reader, binary passphrase */
		struct bk_scrypt_key *k2 = NULL;
		struct bk_scrypt_ctx *ctx = NULL;

		CHECK_EQ_INT(bk_scrypt_dec_header(c, "pw\0with nul", 11, NULL, &k2, &err), 0);
		bk_scrypt_key_free(k2);
		CHECK_EQ_INT(bk_scrypt_dec_header(c, "pw", 2, NULL, &k2, &err), -EKEYREJECTED);
		CHECK_EQ_INT(bk_scrypt_dec_init(key, c, &ctx, &err), 0);
		CHECK_EQ_INT(bk_scrypt_dec_update(ctx, c + 96, sizes[i], plain, &err), 0);
		CHECK_EQ_INT(bk_scrypt_dec_final(ctx, c + 96 + sizes[i], &err), 0);
		CHECK(!memcmp(plain, in, sizes[i]));
		bk_scrypt_ctx_free(ctx);
		/* the fd reader */
		CHECK_EQ_INT(write(in_fd, c, sizes[i] + 128), (ssize_t)(sizes[i] + 128));
		lseek(in_fd, 0, SEEK_SET);
		CHECK_EQ_INT(bk_scrypt_decrypt_fd("pw\0with nul", 11, NULL, in_fd, out_fd, &err), 0);
		outlen = lseek(out_fd, 0, SEEK_END);
		CHECK_EQ_INT(outlen, sizes[i]);
		close(in_fd);
		close(out_fd);
		free(c);
	}
	bk_scrypt_key_free(key);
	free(in);
	free(plain);
}

TEST(encrypt_fd)
{
	struct qp_err err = { 0 };
	struct bk_scrypt_key *key = NULL;
	int in = memfd_create("in", 0), mid = memfd_create("mid", 0), out = memfd_create("o", 0);
	uint8_t buf[1000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)i;
	CHECK_EQ_INT(write(in, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	lseek(in, 0, SEEK_SET);
	CHECK_EQ_INT(bk_scrypt_derive("x", 1, &fast, NULL, &key, &err), 0);
	CHECK_EQ_INT(bk_scrypt_encrypt_fd(key, in, mid, &err), 0);
	CHECK_EQ_INT(lseek(mid, 0, SEEK_END), (off_t)sizeof(buf) + 128);
	lseek(mid, 0, SEEK_SET);
	CHECK_EQ_INT(bk_scrypt_decrypt_fd("x", 1, NULL, mid, out, &err), 0);
	CHECK_EQ_INT(pread(out, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i] != (uint8_t)i) {
			CHECK(buf[i] == (uint8_t)i);
			break;
		}
	bk_scrypt_key_free(key);
	close(in);
	close(mid);
	close(out);
}

/* Every single flipped byte is caught, with the error its place implies. */
TEST(flipped_bytes_fail)
{
	uint8_t c[sizeof(kat_enc)], plain[sizeof(kat_enc)];
	struct qp_err err = { 0 };

	for (size_t i = 0; i < sizeof(kat_enc); i++) {
		int want, got;

		memcpy(c, kat_enc, sizeof(c));
		c[i] ^= (uint8_t)(1u << (i % 8));
		got = decrypt_buf(c, sizeof(c), kat_pass, NULL, plain, &err);
		want = i < 6 ? -EBADMSG : i == 6 ? -ENOTSUP : i < 64 ? -EBADMSG :
			i < 96 ? -EKEYREJECTED : -EBADMSG;
		if (got != want)
			harness_fail_at("byte %zu: got %d, want %d (%s)", i, got, want, err.msg);
	}
	memcpy(c, kat_enc, sizeof(c));
	c[0] = 'S';
	CHECK_EQ_INT(decrypt_buf(c, sizeof(c), kat_pass, NULL, plain, &err), -EBADMSG);
	CHECK_EQ_STR(err.msg, "not a scrypt container");
	memcpy(c, kat_enc, sizeof(c));
	c[20] ^= 1;
	CHECK_EQ_INT(decrypt_buf(c, sizeof(c), kat_pass, NULL, plain, &err), -EBADMSG);
	CHECK(strstr(err.msg, "corrupt scrypt header") == err.msg);
	memcpy(c, kat_enc, sizeof(c));
	c[100] ^= 1;
	CHECK_EQ_INT(decrypt_buf(c, sizeof(c), kat_pass, NULL, plain, &err), -EBADMSG);
	CHECK(strstr(err.msg, "authentication failed") == err.msg);
}

/* Every proper prefix of a container is refused, and so is extra data. */
TEST(truncated_fails)
{
	struct qp_err err = { 0 };
	uint8_t longer[sizeof(kat_enc) + 1];
	size_t outlen;

	for (size_t len = 0; len < sizeof(kat_enc); len++) {
		int ret = decrypt_via_fd(kat_enc, len, kat_pass, &outlen, &err);

		if (ret != -EBADMSG)
			harness_fail_at("length %zu: got %d (%s)", len, ret, err.msg);
	}
	CHECK_EQ_INT(decrypt_via_fd(kat_enc, 50, kat_pass, &outlen, &err), -EBADMSG);
	CHECK(strstr(err.msg, "truncated") != NULL);
	memcpy(longer, kat_enc, sizeof(kat_enc));
	longer[sizeof(kat_enc)] = 0;
	CHECK_EQ_INT(decrypt_via_fd(longer, sizeof(longer), kat_pass, &outlen, &err), -EBADMSG);
}

/* A header with a valid checksum and hostile parameters: refused before
 * any key derivation. */
static void make_header(uint8_t h[96], int log_n, uint32_t r, uint32_t p)
{
	uint8_t md[32];

	memset(h, 0, 96);
	memcpy(h, "scrypt", 6);
	h[7] = (uint8_t)log_n;
	h[8] = r >> 24, h[9] = r >> 16, h[10] = r >> 8, h[11] = r;
	h[12] = p >> 24, h[13] = p >> 16, h[14] = p >> 8, h[15] = p;
	EVP_Digest(h, 48, md, NULL, EVP_sha256(), NULL);
	memcpy(h + 48, md, 16);
}

TEST(hostile_parameters)
{
	struct bk_scrypt_limits l = bk_scrypt_limits_default();
	struct bk_scrypt_key *key = NULL;
	struct qp_err err = { 0 };
	uint8_t h[96];

	make_header(h, 30, 8, 1);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -E2BIG);
	CHECK(key == NULL);
	make_header(h, 22, 8, 1);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -E2BIG);
	make_header(h, 14, 8, 1 << 20);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -E2BIG);
	make_header(h, 0, 8, 1);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -EBADMSG);
	make_header(h, 10, 0, 1);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -EBADMSG);
	make_header(h, 10, 1 << 20, 1 << 10);
	CHECK_EQ_INT(bk_scrypt_dec_header(h, "x", 1, NULL, &key, &err), -EBADMSG);
	/* a tighter caller limit refuses the default-looking header */
	make_header(h, 20, 8, 1);
	l.max_log_n = 12;
	CHECK_EQ_INT(bk_scrypt_header_parse(h, &l, NULL, NULL, &err), -E2BIG);
	CHECK(strstr(err.msg, "log2(N)=20") != NULL);
	/* the default limits accept it (parse only: no 1 GiB derivation here) */
	CHECK_EQ_INT(bk_scrypt_header_parse(h, NULL, NULL, NULL, &err), 0);
}

TEST(context_misuse)
{
	struct qp_err err = { 0 };
	struct bk_scrypt_key *key = NULL, *other = NULL;
	struct bk_scrypt_ctx *ctx = NULL;
	uint8_t hdr[96], mac[32], b[4] = { 0 };

	CHECK_EQ_INT(bk_scrypt_derive("a", 1, &fast, NULL, &key, &err), 0);
	CHECK_EQ_INT(bk_scrypt_derive("a", 1, &fast, NULL, &other, &err), 0);
	CHECK_EQ_INT(bk_scrypt_enc_init(key, hdr, &ctx, &err), 0);
	CHECK_EQ_INT(bk_scrypt_dec_update(ctx, b, 4, b, &err), -EINVAL);
	CHECK_EQ_INT(bk_scrypt_enc_final(ctx, mac, &err), 0);
	CHECK_EQ_INT(bk_scrypt_enc_update(ctx, b, 4, b, &err), -EINVAL);
	CHECK_EQ_INT(bk_scrypt_enc_final(ctx, mac, &err), -EINVAL);
	bk_scrypt_ctx_free(ctx);
	ctx = NULL;
	/* a key with another salt does not open this header */
	CHECK_EQ_INT(bk_scrypt_dec_init(other, hdr, &ctx, &err), -EINVAL);
	CHECK(ctx == NULL);
	bk_scrypt_ctx_free(NULL);
	bk_scrypt_key_free(NULL);
	bk_scrypt_key_free(key);
	bk_scrypt_key_free(other);
}

/* Parallel derivations fit in the memory that is available. */
TEST(kdf_parallel)
{
	const uint64_t gib = (uint64_t)1 << 30;

	CHECK_EQ_INT(bk_kdf_parallel_for(24 * gib, gib, 2), 2);
	CHECK_EQ_INT(bk_kdf_parallel_for(2 * gib + BK_KDF_RESERVE, gib, 3), 2);
	CHECK_EQ_INT(bk_kdf_parallel_for(2 * gib + BK_KDF_RESERVE - 1, gib, 3), 1);
	/* Never none: one derivation runs whatever memory says. */
	CHECK_EQ_INT(bk_kdf_parallel_for(100 << 20, gib, 2), 1);
	CHECK_EQ_INT(bk_kdf_parallel_for(0, gib, 2), 1);
	CHECK_EQ_INT(bk_kdf_parallel_for(24 * gib, gib, 0), 1);
	/* This machine: at least one, at most what was asked. */
	CHECK(bk_kdf_parallel(gib, 4) >= 1 && bk_kdf_parallel(gib, 4) <= 4);
}

int main(void)
{
	RUN(secure_alloc);
	RUN(kdf_parallel);
	RUN(default_params_and_limits);
	RUN(kat_decrypts);
	RUN(kat_encrypts_identically);
	RUN(kat_wrong_passphrase);
	RUN(round_trip_sizes);
	RUN(encrypt_fd);
	RUN(flipped_bytes_fail);
	RUN(truncated_fails);
	RUN(hostile_parameters);
	RUN(context_misuse);
	return harness_done();
}
