/* The backup-header: parser, writer, backup ids and per-file passphrases. */
#include "bk_header.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bk_secure.h"

static const char *const bk_filters[] = {
	"gzip", "bzip2", "xz", "zstd", "pigz", "pbzip2", "lzma", "zstdmt", NULL,
};

enum bk_key {
	BK_K_VERSION,
	BK_K_ENCRYPTED,
	BK_K_COMPRESSED,
	BK_K_FILTER,
	BK_K_CRYPTO,
	BK_K_HMAC,
	BK_K_ID,
	BK_K_COUNT,
};

static const char *const bk_keys[BK_K_COUNT] = {
	[BK_K_VERSION] = "version",
	[BK_K_ENCRYPTED] = "encrypted",
	[BK_K_COMPRESSED] = "compressed",
	[BK_K_FILTER] = "compression-filter",
	[BK_K_CRYPTO] = "crypto-algorithm",
	[BK_K_HMAC] = "hmac-algorithm",
	[BK_K_ID] = "backup-id",
};

bool bk_header_filter_valid(const char *name)
{
	for (int i = 0; name && bk_filters[i]; i++)
		if (!strcmp(name, bk_filters[i]))
			return true;
	return false;
}

void bk_header_free(struct bk_header *h)
{
	if (!h)
		return;
	free(h->compression_filter);
	free(h->hmac_algorithm);
	free(h->crypto_algorithm);
	free(h->backup_id);
	free(h);
}

static bool bk_token_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

static bool bk_id_valid(const char *id)
{
	return id && id[0] && id[0] != '-' && bk_token_valid(id, strlen(id));
}

/* The header's own rule, not qp_parse_bool(): anything but 1/true/yes is
 * false, never an error. */
static bool bk_bool(const char *v)
{
	return !strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes");
}

/* Takes line @lineno (blanks around it dropped) apart into @vals.  The line
 * is untrusted: messages name it by number, never quote it. */
static int bk_parse_line(const char *line, size_t n, int lineno, char *vals[BK_K_COUNT],
			 struct qp_err *err)
{
	const char *eq;
	size_t klen;

	while (n && (line[0] == ' ' || line[0] == '\t' || line[0] == '\r'))
		line++, n--;
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
		n--;
	eq = memchr(line, '=', n);
	if (!eq || memchr(eq + 1, '=', n - (eq + 1 - line)))
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: line %d does not hold "
				  "exactly one '='",
				  lineno);
	klen = eq - line;
	if (!bk_token_valid(line, klen) || !bk_token_valid(eq + 1, n - klen - 1))
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: line %d has characters "
				  "other than letters, digits and '-'",
				  lineno);
	for (int k = 0; k < BK_K_COUNT; k++) {
		if (strlen(bk_keys[k]) != klen || memcmp(bk_keys[k], line, klen))
			continue;
		if (vals[k])
			return qp_err_set(err, -EINVAL,
					  "invalid backup header: key '%s' given twice",
					  bk_keys[k]);
		vals[k] = strndup(eq + 1, n - klen - 1);
		if (!vals[k])
			return qp_err_set(err, -ENOMEM, "out of memory");
		return 0;
	}
	return 0; /* unknown keys are ignored */
}

/* Splits @buf into lines after the size and ASCII checks. */
static int bk_parse_lines(const char *buf, size_t len, char *vals[BK_K_COUNT], struct qp_err *err)
{
	size_t i = 0;
	int ret, lineno = 0;

	if (len > BK_HEADER_MAX)
		return qp_err_set(err, -EINVAL, "invalid backup header: %zu bytes, more than %d",
				  len, BK_HEADER_MAX);
	for (size_t j = 0; j < len; j++)
		if ((unsigned char)buf[j] > 0x7f)
			return qp_err_set(err, -EINVAL, "invalid backup header: not ascii text");
	while (i < len) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - buf) : len;

		ret = bk_parse_line(buf + i, end - i, ++lineno, vals, err);
		if (ret < 0)
			return ret;
		i = end + 1;
	}
	return 0;
}

/* Version: decimal digits, 1..4; 1..3 are known but not restorable. */
static int bk_check_version(const char *v, int *out, struct qp_err *err)
{
	long n = 0;

	if (!v)
		return qp_err_set(err, -EINVAL, "invalid backup header: no 'version'");
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '9' || n > 1000)
			return qp_err_set(err, -EINVAL, "invalid backup header: version '%s'", v);
		n = n * 10 + (*p - '0');
	}
	if (!v[0] || n < 1 || n > 4)
		return qp_err_set(err, -EINVAL, "invalid backup header: unknown version '%s'", v);
	if (n != BK_HEADER_VERSION)
		return qp_err_set(err, -ENOTSUP, "backup format version %ld is not supported", n);
	*out = (int)n;
	return 0;
}

static int bk_require(char *vals[BK_K_COUNT], struct qp_err *err)
{
	static const enum bk_key need[] = { BK_K_ENCRYPTED, BK_K_COMPRESSED, BK_K_HMAC, BK_K_ID };

	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (!vals[need[i]])
			return qp_err_set(err, -EINVAL, "invalid backup header: no '%s'",
					  bk_keys[need[i]]);
	return 0;
}

/* Checks the values of a version 4 header and moves them into @h. */
static int bk_fill(struct bk_header *h, char *vals[BK_K_COUNT], struct qp_err *err)
{
	int ret = bk_require(vals, err);

	if (ret < 0)
		return ret;
	h->encrypted = bk_bool(vals[BK_K_ENCRYPTED]);
	h->compressed = bk_bool(vals[BK_K_COMPRESSED]);
	if (!h->encrypted)
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: 'encrypted=%s', but version "
				  "4 backups are always encrypted",
				  vals[BK_K_ENCRYPTED]);
	if (strcmp(vals[BK_K_HMAC], "scrypt"))
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: hmac-algorithm '%s' is not "
				  "'scrypt'",
				  vals[BK_K_HMAC]);
	if (h->compressed && !vals[BK_K_FILTER])
		return qp_err_set(err, -EINVAL, "invalid backup header: no 'compression-filter'");
	if (vals[BK_K_FILTER] && !bk_header_filter_valid(vals[BK_K_FILTER]))
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: compression filter '%s' is "
				  "not one of gzip, bzip2, xz, zstd, pigz, pbzip2, lzma, zstdmt",
				  vals[BK_K_FILTER]);
	if (!bk_id_valid(vals[BK_K_ID]))
		return qp_err_set(err, -EINVAL,
				  "invalid backup header: backup-id '%s' is empty or "
				  "starts with '-'",
				  vals[BK_K_ID]);
	h->compression_filter = vals[BK_K_FILTER];
	h->hmac_algorithm = vals[BK_K_HMAC];
	h->crypto_algorithm = vals[BK_K_CRYPTO];
	h->backup_id = vals[BK_K_ID];
	vals[BK_K_FILTER] = vals[BK_K_HMAC] = vals[BK_K_CRYPTO] = vals[BK_K_ID] = NULL;
	return 0;
}

bool bk_header_peek_id(const char *buf, size_t len, char *id, size_t cap)
{
	static const char key[] = "backup-id=";
	const size_t klen = sizeof(key) - 1;
	bool found = false;

	if (len > BK_HEADER_MAX)
		return false;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - buf) : len, n = end - i;

		if (n > klen && !memcmp(buf + i, key, klen)) {
			if (found || n - klen >= cap)
				return false;
			memcpy(id, buf + i + klen, n - klen);
			id[n - klen] = '\0';
			found = true;
		}
		i = end + 1;
	}
	return found && bk_id_valid(id);
}

int bk_header_parse(const char *buf, size_t len, struct bk_header **out, struct qp_err *err)
{
	char *vals[BK_K_COUNT] = { 0 };
	struct bk_header *h = NULL;
	int ret;

	*out = NULL;
	ret = bk_parse_lines(buf, len, vals, err);
	if (ret < 0)
		goto out;
	h = calloc(1, sizeof(*h));
	if (!h) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = bk_check_version(vals[BK_K_VERSION], &h->version, err);
	if (ret < 0)
		goto out;
	ret = bk_fill(h, vals, err);
	if (ret < 0)
		goto out;
	*out = h;
	h = NULL;
out:
	for (int k = 0; k < BK_K_COUNT; k++)
		free(vals[k]);
	bk_header_free(h);
	return ret;
}

int bk_header_new(const char *backup_id, bool compressed, const char *filter,
		  struct bk_header **out, struct qp_err *err)
{
	struct bk_header *h;

	*out = NULL;
	if (!bk_id_valid(backup_id))
		return qp_err_set(err, -EINVAL, "invalid backup id '%s'",
				  backup_id ? backup_id : "");
	if (!filter)
		filter = "gzip";
	if (!bk_header_filter_valid(filter))
		return qp_err_set(err, -EINVAL, "unsupported compression filter '%s'", filter);
	h = calloc(1, sizeof(*h));
	if (!h)
		return qp_err_set(err, -ENOMEM, "out of memory");
	h->version = BK_HEADER_VERSION;
	h->encrypted = true;
	h->compressed = compressed;
	h->compression_filter = strdup(filter);
	h->hmac_algorithm = strdup("scrypt");
	h->backup_id = strdup(backup_id);
	if (!h->compression_filter || !h->hmac_algorithm || !h->backup_id) {
		bk_header_free(h);
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	*out = h;
	return 0;
}

int bk_header_format(const struct bk_header *h, char **out, size_t *len, struct qp_err *err)
{
	char *s = NULL;
	int n;

	*out = NULL;
	if (h->version != BK_HEADER_VERSION)
		return qp_err_set(err, -ENOTSUP, "backup format version %d is not supported",
				  h->version);
	if (!bk_id_valid(h->backup_id) || !h->hmac_algorithm ||
	    !bk_token_valid(h->hmac_algorithm, strlen(h->hmac_algorithm)) ||
	    (h->compression_filter && !bk_header_filter_valid(h->compression_filter)) ||
	    (h->compressed && !h->compression_filter))
		return qp_err_set(err, -EINVAL, "cannot write backup header: invalid values");
	n = asprintf(&s,
		     "version=%d\nencrypted=%s\ncompressed=%s\n%s%s%shmac-algorithm=%s\n"
		     "backup-id=%s\n",
		     h->version, h->encrypted ? "True" : "False", h->compressed ? "True" : "False",
		     h->compression_filter ? "compression-filter=" : "",
		     h->compression_filter ? h->compression_filter : "",
		     h->compression_filter ? "\n" : "", h->hmac_algorithm, h->backup_id);
	if (n < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	*out = s;
	*len = n;
	return 0;
}

int bk_header_backup_id(time_t t, pid_t pid, char buf[BK_BACKUP_ID_MAX], struct qp_err *err)
{
	struct tm tm;
	size_t n;

	if (!localtime_r(&t, &tm))
		return qp_err_set(err, -EINVAL, "cannot convert time %lld", (long long)t);
	n = strftime(buf, BK_BACKUP_ID_MAX, "%Y%m%dT%H%M%S", &tm);
	if (n == 0 || snprintf(buf + n, BK_BACKUP_ID_MAX - n, "-%ld", (long)pid) >=
			      (int)(BK_BACKUP_ID_MAX - n))
		return qp_err_set(err, -EINVAL, "cannot format a backup id");
	return 0;
}

/* Concatenates @a, @b (may be NULL) and the passphrase into secure memory. */
static int bk_pass_join(const char *a, const char *b, const void *pass, size_t passlen, char **out,
			size_t *outlen, struct qp_err *err)
{
	size_t la = strlen(a), lb = b ? strlen(b) : 0;
	char *p;

	*out = NULL;
	if (passlen > BK_HEADER_MAX)
		return qp_err_set(err, -EINVAL, "passphrase is longer than %d bytes",
				  BK_HEADER_MAX);
	p = bk_secure_alloc(la + lb + passlen + 1);
	if (!p)
		return qp_err_set(err, -ENOMEM, "cannot allocate secure memory for a passphrase");
	memcpy(p, a, la);
	if (lb)
		memcpy(p + la, b, lb);
	if (passlen)
		memcpy(p + la + lb, pass, passlen);
	*out = p;
	*outlen = la + lb + passlen;
	return 0;
}

int bk_header_pass_for_header(const void *pass, size_t passlen, char **out, size_t *outlen,
			      struct qp_err *err)
{
	return bk_pass_join("backup-header!", NULL, pass, passlen, out, outlen, err);
}

int bk_header_pass_for_file(const char *backup_id, const char *path, const void *pass,
			    size_t passlen, char **out, size_t *outlen, struct qp_err *err)
{
	size_t n = path ? strlen(path) : 0;
	char *pre;
	int ret;

	*out = NULL;
	if (!bk_id_valid(backup_id))
		return qp_err_set(err, -EINVAL, "invalid backup id '%s'",
				  backup_id ? backup_id : "");
	if (n >= 4 && !strcmp(path + n - 4, ".enc"))
		n -= 4;
	if (n == 0 || path[0] == '/')
		return qp_err_set(err, -EINVAL, "invalid backup member path '%s'",
				  path ? path : "");
	/* Neither the id nor the path is secret: ordinary memory is fine. */
	if (asprintf(&pre, "%s!%.*s!", backup_id, (int)n, path) < 0)
		return qp_err_set(err, -ENOMEM, "out of memory");
	ret = bk_pass_join(pre, NULL, pass, passlen, out, outlen, err);
	free(pre);
	return ret;
}
