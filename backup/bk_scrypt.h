/* The scrypt container: every encrypted member of a qpool backup.
 *
 * The layout (backup/FORMAT.md, "scrypt container") is the one the scrypt
 * tool's `enc` writes, so `scrypt dec` reads what qpool writes and qpool
 * reads what `scrypt enc` writes:
 *
 *	96-byte header | AES-256-CTR ciphertext | 32-byte HMAC-SHA256
 *
 * Key derivation is separate from encryption: a backup writer derives the
 * keys of the next chunks on other threads while one chunk is encrypted,
 * since the derivation (about a second and 1 GiB of memory with the default
 * parameters) and not AES dominates the cost of a 100 MiB chunk.
 *
 * Writing:
 *	bk_scrypt_derive(pass, len, NULL, NULL, &key, err);	// random salt
 *	bk_scrypt_enc_init(key, hdr, &ctx, err);		// write hdr[96]
 *	bk_scrypt_enc_update(ctx, in, n, out, err);		// write out[n], repeat
 *	bk_scrypt_enc_final(ctx, mac, err);			// write mac[32]
 *	bk_scrypt_ctx_free(ctx); bk_scrypt_key_free(key);
 *
 * Reading:
 *	bk_scrypt_dec_header(hdr, pass, len, NULL, &key, err);	// checks passphrase
 *	bk_scrypt_dec_init(key, hdr, &ctx, err);
 *	bk_scrypt_dec_update(ctx, in, n, out, err);		// repeat
 *	bk_scrypt_dec_final(ctx, mac, err);			// the last 32 bytes
 *
 * The plaintext from bk_scrypt_dec_update() is NOT authenticated until
 * bk_scrypt_dec_final() returns 0: a caller must not act on it (import it
 * into a volume, parse it, hand it to a decompressor whose output it trusts)
 * before then, and must throw it away when final fails.
 *
 * All functions return 0 or a negative errno and put a message into @err.
 * Errors while reading a container:
 *	-EBADMSG	not a scrypt container, corrupt header, truncated input,
 *			or data that fails authentication
 *	-ENOTSUP	a container version other than 0
 *	-E2BIG		parameters beyond the caller's resource limits
 *	-EKEYREJECTED	wrong passphrase (the header HMAC does not match)
 */
#ifndef QPOOL_BACKUP_BK_SCRYPT_H
#define QPOOL_BACKUP_BK_SCRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "qpool.h"

#define BK_SCRYPT_HDR_LEN 96
#define BK_SCRYPT_MAC_LEN 32
#define BK_SCRYPT_SALT_LEN 32
/* Container size = plaintext size + BK_SCRYPT_OVERHEAD. */
#define BK_SCRYPT_OVERHEAD (BK_SCRYPT_HDR_LEN + BK_SCRYPT_MAC_LEN)

/* scrypt cost parameters: N = 2^log_n, block size r, parallelism p. */
struct bk_scrypt_params {
	int log_n;
	uint32_t r, p;
};

/* log_n=20, r=8, p=1: what `scrypt enc` picks by default (at most 1/8 of
 * RAM and about 5 s of CPU) on the machines qpool targets; `scrypt enc -v`
 * prints "N = 1048576; r = 8; p = 1" there.  Needs 1 GiB of memory. */
struct bk_scrypt_params bk_scrypt_params_default(void);

/* What a reader accepts from an untrusted header, so that a hostile file
 * cannot make it allocate gigabytes or spin for hours. */
struct bk_scrypt_limits {
	int max_log_n;	   /* largest log2(N) */
	uint64_t max_mem;  /* bytes scrypt needs: 128 * r * (N + p + 2) */
	uint64_t max_work; /* N * r * p, proportional to CPU time */
};

/* max_log_n 22, max_mem 1 GiB + 64 MiB, max_work 2^25 (four times the work
 * of the default parameters): accepts bk_scrypt_params_default(), refuses
 * anything that needs much more memory or time.  A caller restoring a
 * backup made with heavier parameters passes wider limits (the equivalent
 * of `scrypt dec -f`). */
struct bk_scrypt_limits bk_scrypt_limits_default(void);

/* Bytes of memory a key derivation with @pr needs (UINT64_MAX on overflow). */
uint64_t bk_scrypt_params_memory(const struct bk_scrypt_params *pr);

/* Checks @pr against the format (1 <= log_n <= 63, r >= 1, p >= 1,
 * r * p < 2^30) (-EINVAL) and, unless @limits is NULL, against @limits
 * (-E2BIG). */
int bk_scrypt_params_check(const struct bk_scrypt_params *pr, const struct bk_scrypt_limits *limits,
			   struct qp_err *err);

/* ---- keys --------------------------------------------------------------- */

/* Opaque, in secure memory (bk_secure.h): the salt, the parameters and the
 * 64-byte derived key (32 bytes for AES, 32 for HMAC). */
struct bk_scrypt_key;

/* Derives a key from @pass (@passlen bytes, not necessarily text) with
 * parameters @pr (NULL: bk_scrypt_params_default()) and @salt (32 bytes;
 * NULL: fresh random bytes).  No resource limits apply: the caller chose
 * @pr.  On success *@out is the caller's, to free with bk_scrypt_key_free().
 * Thread-safe: derive keys for several chunks in parallel. */
int bk_scrypt_derive(const void *pass, size_t passlen, const struct bk_scrypt_params *pr,
		     const uint8_t *salt, struct bk_scrypt_key **out, struct qp_err *err);

/* Wipes and releases; NULL is a no-op. */
void bk_scrypt_key_free(struct bk_scrypt_key *key);

/* The key's parameters and salt (borrowed, valid while @key lives). */
const struct bk_scrypt_params *bk_scrypt_key_params(const struct bk_scrypt_key *key);
const uint8_t *bk_scrypt_key_salt(const struct bk_scrypt_key *key);

/* ---- streaming encryption and decryption ---------------------------------- */

/* Opaque state of one container being written or read. */
struct bk_scrypt_ctx;

/* Starts a container: fills @hdr_out with its 96-byte header.  The same key
 * may start several containers, but they then share salt and keys: give
 * each file its own key.  *@out is the caller's (bk_scrypt_ctx_free). */
int bk_scrypt_enc_init(const struct bk_scrypt_key *key, uint8_t hdr_out[BK_SCRYPT_HDR_LEN],
		       struct bk_scrypt_ctx **out, struct qp_err *err);
/* Encrypts @n bytes of @in into @out (same length; @in == @out is fine). */
int bk_scrypt_enc_update(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
			 struct qp_err *err);
/* Ends the container: @mac_out gets the 32-byte trailer.  No update after. */
int bk_scrypt_enc_final(struct bk_scrypt_ctx *ctx, uint8_t mac_out[BK_SCRYPT_MAC_LEN],
			struct qp_err *err);

/* Checks a container header without the passphrase: magic and version,
 * checksum, parameters, @limits (NULL: bk_scrypt_limits_default()).  Gives
 * the parameters and salt (either output may be NULL). */
int bk_scrypt_header_parse(const uint8_t hdr[BK_SCRYPT_HDR_LEN],
			   const struct bk_scrypt_limits *limits, struct bk_scrypt_params *pr,
			   uint8_t salt[BK_SCRYPT_SALT_LEN], struct qp_err *err);

/* bk_scrypt_header_parse(), then derives the key from @pass and checks the
 * header HMAC (constant time): -EKEYREJECTED "wrong passphrase" when it
 * differs.  *@out is the caller's (bk_scrypt_key_free). */
int bk_scrypt_dec_header(const uint8_t hdr[BK_SCRYPT_HDR_LEN], const void *pass, size_t passlen,
			 const struct bk_scrypt_limits *limits, struct bk_scrypt_key **out,
			 struct qp_err *err);

/* Starts reading the container whose header is @hdr with @key (from
 * bk_scrypt_dec_header, or from bk_scrypt_derive with the parameters and
 * salt of bk_scrypt_header_parse): checks that the header belongs to the key
 * and its HMAC (-EKEYREJECTED).  *@out is the caller's. */
int bk_scrypt_dec_init(const struct bk_scrypt_key *key, const uint8_t hdr[BK_SCRYPT_HDR_LEN],
		       struct bk_scrypt_ctx **out, struct qp_err *err);
/* Decrypts @n bytes of ciphertext (everything between the header and the
 * last 32 bytes of the file, in order, in pieces of any size).  The output
 * is unauthenticated until bk_scrypt_dec_final() succeeds. */
int bk_scrypt_dec_update(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
			 struct qp_err *err);
/* The two halves of bk_scrypt_dec_update, for reading a container twice:
 * bk_scrypt_dec_mac feeds ciphertext to the MAC only (then
 * bk_scrypt_dec_final checks it); bk_scrypt_dec_ctr decrypts without the
 * MAC, on a context of its own, ciphertext whose MAC another context
 * checked. */
int bk_scrypt_dec_mac(struct bk_scrypt_ctx *ctx, const void *in, size_t n, struct qp_err *err);
int bk_scrypt_dec_ctr(struct bk_scrypt_ctx *ctx, const void *in, size_t n, void *out,
		      struct qp_err *err);
/* Checks the trailer @mac (the file's last 32 bytes) in constant time:
 * -EBADMSG "authentication failed" when the data or the trailer changed. */
int bk_scrypt_dec_final(struct bk_scrypt_ctx *ctx, const uint8_t mac[BK_SCRYPT_MAC_LEN],
			struct qp_err *err);

/* NULL is a no-op. */
void bk_scrypt_ctx_free(struct bk_scrypt_ctx *ctx);

/* ---- whole streams ---------------------------------------------------------- */

/* Reads @in_fd to its end and writes a whole container to @out_fd. */
int bk_scrypt_encrypt_fd(const struct bk_scrypt_key *key, int in_fd, int out_fd,
			 struct qp_err *err);

/* Reads a whole container from @in_fd and writes the plaintext to @out_fd.
 * Plaintext reaches @out_fd before the trailer is checked: unless this
 * returns 0, whatever was written must be discarded. */
int bk_scrypt_decrypt_fd(const void *pass, size_t passlen, const struct bk_scrypt_limits *limits,
			 int in_fd, int out_fd, struct qp_err *err);

#endif
