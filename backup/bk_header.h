/* The backup-header member of a qpool backup, and the per-file passphrases.
 *
 * The header is a short "key=value" text (backup/FORMAT.md, "backup-header")
 * stored in clear as the first member of the archive; its integrity comes
 * from the second member, backup-header.hmac, a scrypt container whose
 * plaintext must equal the header byte for byte.
 *
 * All functions return 0 or a negative errno with a message in @err.
 */
#ifndef QPOOL_BACKUP_BK_HEADER_H
#define QPOOL_BACKUP_BK_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "qpool.h"

/* Larger headers are refused unread. */
#define BK_HEADER_MAX (64 * 1024)
/* The only version qpool writes and restores. */
#define BK_HEADER_VERSION 4
/* Room for a backup id made by bk_header_backup_id(), with its NUL. */
#define BK_BACKUP_ID_MAX 48

struct bk_header {
	int version; /* 1..4 */
	bool encrypted;
	bool compressed;
	char *compression_filter; /* NULL when absent */
	char *hmac_algorithm;	  /* "scrypt" in version 4 */
	char *crypto_algorithm;	  /* not in version 4; NULL when absent */
	char *backup_id;	  /* YYYYMMDDTHHMMSS-<pid> */
};

/* Parses @len bytes of @buf (need not be NUL-terminated) under these rules:
 *  - at most BK_HEADER_MAX bytes, ASCII only;
 *  - lines end with '\n' (the last one may not); blanks around a line are
 *    ignored; every line holds exactly one '=';
 *  - keys and values consist of A-Z a-z 0-9 and '-' only;
 *  - unknown keys are ignored, a known key given twice is an error;
 *  - booleans are true for 1, true or yes in any case, false otherwise;
 *  - version must be 1..4; versions 1..3 are refused with -ENOTSUP
 *    ("backup format version 3 is not supported");
 *  - version 4 needs version, encrypted (true), compressed, hmac-algorithm
 *    (scrypt), backup-id (not empty, not starting with '-') and, when
 *    compressed, compression-filter;
 *  - compression-filter must be one of gzip, bzip2, xz, zstd or the
 *    compatible programs pigz, pbzip2, lzma, zstdmt.
 * Violations give -EINVAL.  *@out is the caller's (bk_header_free). */
int bk_header_parse(const char *buf, size_t len, struct bk_header **out, struct qp_err *err);
/* The value of the line "backup-id=..." of the header text @buf, copied to
 * @id: true when there is one line of that key and its value is a valid id
 * of less than @cap bytes.  For restores, which start deriving the keys of
 * the members (whose passphrases hold the id) while the header's HMAC is
 * checked: not a parse (nothing else is looked at), and the keys count
 * only once the checked header, parsed, names the same id. */
bool bk_header_peek_id(const char *buf, size_t len, char *id, size_t cap);

/* A version 4 header for a new backup; @filter NULL means "gzip" (written
 * even when not @compressed).  *@out is the caller's. */
int bk_header_new(const char *backup_id, bool compressed, const char *filter,
		  struct bk_header **out, struct qp_err *err);

/* Writes @h as text in the writer's key order: version, encrypted,
 * compressed, compression-filter, hmac-algorithm, backup-id; each line ends
 * with '\n'; absent values are left out.  Only version 4 headers.
 * *@out (NUL-terminated, @len bytes without the NUL) is the caller's. */
int bk_header_format(const struct bk_header *h, char **out, size_t *len, struct qp_err *err);

/* NULL is a no-op. */
void bk_header_free(struct bk_header *h);

/* Is @name an accepted compression filter? */
bool bk_header_filter_valid(const char *name);

/* Writes "YYYYMMDDTHHMMSS-<pid>" for local time @t into @buf. */
int bk_header_backup_id(time_t t, pid_t pid, char buf[BK_BACKUP_ID_MAX], struct qp_err *err);

/* The scrypt passphrase of backup-header.hmac: "backup-header!" then the
 * @passlen bytes of @pass.  *@out is in secure memory (bk_secure_free),
 * NUL-terminated; *@outlen is its length without the NUL. */
int bk_header_pass_for_header(const void *pass, size_t passlen, char **out, size_t *outlen,
			      struct qp_err *err);

/* The scrypt passphrase of the archive member @path (relative to the
 * archive root, e.g. "vm3/private.img.012.enc"; a final ".enc" is dropped):
 * "<backup_id>!<path>!" then @pass.  *@out is in secure memory
 * (bk_secure_free).  -EINVAL for an empty or absolute @path or an invalid
 * @backup_id. */
int bk_header_pass_for_file(const char *backup_id, const char *path, const void *pass,
			    size_t passlen, char **out, size_t *outlen, struct qp_err *err);

#endif
