/* Unit tests for backup/bk_header.c: the backup-header parser and writer,
 * backup ids and the per-file passphrases. */
#include "backup/bk_header.h"
#include "backup/bk_secure.h"

#include <errno.h>

#include "harness.h"

static const char example[] = "version=4\n"
			      "encrypted=True\n"
			      "compressed=True\n"
			      "compression-filter=gzip\n"
			      "hmac-algorithm=scrypt\n"
			      "backup-id=20230405T123455-1234\n";

/* Parses the NUL-terminated @s; returns the error code, frees the header. */
static int parse(const char *s, struct qp_err *err)
{
	struct bk_header *h = NULL;
	int ret = bk_header_parse(s, strlen(s), &h, err);

	if ((ret == 0) != (h != NULL))
		harness_fail_at("parse returned %d with header %p", ret, (void *)h);
	bk_header_free(h);
	return ret;
}

TEST(parses_example)
{
	struct qp_err err = { 0 };
	struct bk_header *h = NULL;

	CHECK_EQ_INT(bk_header_parse(example, strlen(example), &h, &err), 0);
	if (!h)
		return;
	CHECK_EQ_INT(h->version, 4);
	CHECK(h->encrypted);
	CHECK(h->compressed);
	CHECK_EQ_STR(h->compression_filter, "gzip");
	CHECK_EQ_STR(h->hmac_algorithm, "scrypt");
	CHECK_EQ_STR(h->backup_id, "20230405T123455-1234");
	CHECK(h->crypto_algorithm == NULL);
	bk_header_free(h);
	bk_header_free(NULL);
}

TEST(writes_example)
{
	struct qp_err err = { 0 };
	struct bk_header *h = NULL, *back = NULL;
	char *text = NULL;
	size_t len = 0;

	CHECK_EQ_INT(bk_header_new("20230405T123455-1234", true, NULL, &h, &err), 0);
	CHECK_EQ_INT(bk_header_format(h, &text, &len, &err), 0);
	CHECK_EQ_STR(text, example);
	CHECK_EQ_INT(len, strlen(example));
	CHECK_EQ_INT(bk_header_parse(text, len, &back, &err), 0);
	CHECK(back && !strcmp(back->backup_id, h->backup_id) && back->compressed);
	bk_header_free(back);
	bk_header_free(h);
	free(text);
	/* not compressed: the filter is still written, and read back */
	CHECK_EQ_INT(bk_header_new("20230405T123455-1234", false, "zstd", &h, &err), 0);
	CHECK_EQ_INT(bk_header_format(h, &text, &len, &err), 0);
	CHECK(strstr(text, "compressed=False\ncompression-filter=zstd\n") != NULL);
	CHECK_EQ_INT(parse(text, &err), 0);
	bk_header_free(h);
	free(text);
	CHECK_EQ_INT(bk_header_new("-x", true, NULL, &h, &err), -EINVAL);
	CHECK_EQ_INT(bk_header_new("", true, NULL, &h, &err), -EINVAL);
	CHECK_EQ_INT(bk_header_new("id", true, "cat", &h, &err), -EINVAL);
	CHECK(h == NULL);
}

TEST(tolerated_variants)
{
	struct qp_err err = { 0 };
	struct bk_header *h = NULL;
	const char *s;

	/* unknown keys ignored (even repeated), v3-only key ignored, CRLF,
	 * no final newline, booleans in any case */
	s = "backup-id=abc\r\nversion=4\r\nencrypted=YES\r\ncompressed=0\r\n"
	    "hmac-algorithm=scrypt\r\nfuture-key=1\r\nfuture-key=2\r\n=\r\n"
	    "crypto-algorithm=aes-256-cbc";
	CHECK_EQ_INT(bk_header_parse(s, strlen(s), &h, &err), 0);
	if (h) {
		CHECK(h->encrypted);
		CHECK(!h->compressed);
		CHECK(h->compression_filter == NULL);
		CHECK_EQ_STR(h->crypto_algorithm, "aes-256-cbc");
		CHECK_EQ_STR(h->backup_id, "abc");
	}
	bk_header_free(h);
	CHECK_EQ_INT(parse("version=0004\nencrypted=1\ncompressed=TRUE\ncompression-filter=xz\n"
			   "hmac-algorithm=scrypt\nbackup-id=x-\n", &err), 0);
	/* anything but 1/true/yes is false */
	CHECK_EQ_INT(parse("version=4\nencrypted=1\ncompressed=bogus\nhmac-algorithm=scrypt\n"
			   "backup-id=x\n", &err), 0);
	/* every accepted filter */
	static const char *const filters[] = { "gzip", "bzip2", "xz", "zstd", "pigz", "pbzip2",
					       "lzma", "zstdmt" };
	for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
		char buf[256];

		snprintf(buf, sizeof(buf), "version=4\nencrypted=True\ncompressed=True\n"
			 "compression-filter=%s\nhmac-algorithm=scrypt\nbackup-id=a\n", filters[i]);
		CHECK_EQ_INT(parse(buf, &err), 0);
		CHECK(bk_header_filter_valid(filters[i]));
	}
}

TEST(old_versions_refused)
{
	struct qp_err err = { 0 };

	CHECK_EQ_INT(parse("version=3\nencrypted=True\ncompressed=True\ncompression-filter=gzip\n"
			   "hmac-algorithm=SHA512\ncrypto-algorithm=aes-256-cbc\n", &err), -ENOTSUP);
	CHECK_EQ_STR(err.msg, "backup format version 3 is not supported");
	CHECK_EQ_INT(parse("version=1\n", &err), -ENOTSUP);
	CHECK_EQ_STR(err.msg, "backup format version 1 is not supported");
	CHECK_EQ_INT(parse("version=2\nencrypted=False\n", &err), -ENOTSUP);
}

/* Each rule broken once, on top of the valid example. */
TEST(each_rule_enforced)
{
	static const struct {
		const char *what, *text;
	} bad[] = {
		{ "no version", "encrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "version 5", "version=5\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "version 0", "version=0\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "version empty", "version=\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "version word", "version=four\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "version huge", "version=99999999999999999999999\nencrypted=True\n" },
		{ "no '='", "version=4\nencrypted\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "two '='", "version=4\nencrypted=True=1\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "empty line", "version=4\n\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "space in value", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a b\n" },
		{ "space in key", "version=4\nencrypted =True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "dot in value", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a.b\n" },
		{ "slash in unknown key", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\nx/y=1\n" },
		{ "underscore", "version=4\nencrypted=True\ncompressed=False\nhmac_algorithm=scrypt\nbackup-id=a\n" },
		{ "non-ascii", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=\xc3\xa9\n" },
		{ "repeated key", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\nbackup-id=b\n" },
		{ "repeated version", "version=4\nversion=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "no encrypted", "version=4\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "no compressed", "version=4\nencrypted=True\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "no hmac-algorithm", "version=4\nencrypted=True\ncompressed=False\nbackup-id=a\n" },
		{ "no backup-id", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\n" },
		{ "compressed, no filter", "version=4\nencrypted=True\ncompressed=True\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "unknown filter", "version=4\nencrypted=True\ncompressed=True\ncompression-filter=rm\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "filter case", "version=4\nencrypted=True\ncompressed=True\ncompression-filter=GZIP\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "empty backup-id", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=\n" },
		{ "backup-id starts with -", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=-rf\n" },
		{ "not encrypted", "version=4\nencrypted=False\ncompressed=False\nhmac-algorithm=scrypt\nbackup-id=a\n" },
		{ "hmac SHA512", "version=4\nencrypted=True\ncompressed=False\nhmac-algorithm=SHA512\nbackup-id=a\n" },
		{ "empty file", "" },
	};
	struct qp_err err = { 0 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = parse(bad[i].text, &err);

		if (ret != -EINVAL)
			harness_fail_at("%s: got %d (%s), want -EINVAL", bad[i].what, ret, err.msg);
	}
}

TEST(nul_and_size_limits)
{
	static const char nul[] = "version=4\nencrypted=True\0\ncompressed=False\n"
				  "hmac-algorithm=scrypt\nbackup-id=a\n";
	struct qp_err err = { 0 };
	struct bk_header *h = NULL;
	size_t big = BK_HEADER_MAX + 1;
	char *buf = malloc(big);

	CHECK_EQ_INT(bk_header_parse(nul, sizeof(nul) - 1, &h, &err), -EINVAL);
	/* a valid header padded with an unknown key up to the limit: accepted
	 * at BK_HEADER_MAX bytes, refused one byte later */
	snprintf(buf, big, "%s", example);
	size_t n = strlen(buf);
	memcpy(buf + n, "x=", 2);
	memset(buf + n + 2, 'a', big - n - 2);
	CHECK_EQ_INT(bk_header_parse(buf, BK_HEADER_MAX, &h, &err), 0);
	bk_header_free(h);
	h = NULL;
	CHECK_EQ_INT(bk_header_parse(buf, big, &h, &err), -EINVAL);
	CHECK(h == NULL);
	free(buf);
}

TEST(backup_id)
{
	struct qp_err err = { 0 };
	char id[BK_BACKUP_ID_MAX];

	setenv("TZ", "UTC", 1);
	tzset();
	CHECK_EQ_INT(bk_header_backup_id(1680697895, 1234, id, &err), 0);
	CHECK_EQ_STR(id, "20230405T123135-1234");
}

TEST(passphrases)
{
	struct qp_err err = { 0 };
	char *p = NULL;
	size_t n = 0;

	CHECK_EQ_INT(bk_header_pass_for_header("s3cret", 6, &p, &n, &err), 0);
	CHECK_EQ_STR(p, "backup-header!s3cret");
	CHECK_EQ_INT(n, strlen("backup-header!s3cret"));
	bk_secure_free(p);
	CHECK_EQ_INT(bk_header_pass_for_file("20230405T123455-1234", "qubes.xml.000.enc", "pw", 2,
					     &p, &n, &err), 0);
	CHECK_EQ_STR(p, "20230405T123455-1234!qubes.xml.000!pw");
	bk_secure_free(p);
	CHECK_EQ_INT(bk_header_pass_for_file("20230405T123455-1234", "vm3/private.img.012", "pw",
					     2, &p, &n, &err), 0);
	CHECK_EQ_STR(p, "20230405T123455-1234!vm3/private.img.012!pw");
	bk_secure_free(p);
	/* binary passphrases keep their bytes and length */
	CHECK_EQ_INT(bk_header_pass_for_header("a\0b", 3, &p, &n, &err), 0);
	CHECK_EQ_INT(n, 17);
	CHECK(p && !memcmp(p, "backup-header!a\0b", 17));
	bk_secure_free(p);
	CHECK_EQ_INT(bk_header_pass_for_header("", 0, &p, &n, &err), 0);
	CHECK_EQ_STR(p, "backup-header!");
	bk_secure_free(p);
	p = NULL;
	CHECK_EQ_INT(bk_header_pass_for_file("-id", "a.000.enc", "pw", 2, &p, &n, &err), -EINVAL);
	CHECK_EQ_INT(bk_header_pass_for_file("id", ".enc", "pw", 2, &p, &n, &err), -EINVAL);
	CHECK_EQ_INT(bk_header_pass_for_file("id", "", "pw", 2, &p, &n, &err), -EINVAL);
	CHECK_EQ_INT(bk_header_pass_for_file("id", "/etc/x.enc", "pw", 2, &p, &n, &err), -EINVAL);
	CHECK(p == NULL);
}

TEST(peek_id)
{
	static const char ok[] = "version=4\nencrypted=True\nbackup-id=20230405T123455-1234\n";
	static const char twice[] = "backup-id=a1\nbackup-id=b2\n";
	static const char bad[] = "version=4\nbackup-id=../x\n";
	static const char dash[] = "backup-id=-x\n";
	static const char none[] = "version=4\nbackup-idx=a\n";
	char id[32];

	CHECK(bk_header_peek_id(ok, strlen(ok), id, sizeof(id)));
	CHECK_EQ_STR(id, "20230405T123455-1234");
	/* No newline at the end: the last line counts all the same. */
	CHECK(bk_header_peek_id(ok, strlen(ok) - 1, id, sizeof(id)));
	CHECK_EQ_STR(id, "20230405T123455-1234");
	CHECK(!bk_header_peek_id(twice, strlen(twice), id, sizeof(id)));
	CHECK(!bk_header_peek_id(bad, strlen(bad), id, sizeof(id)));
	CHECK(!bk_header_peek_id(dash, strlen(dash), id, sizeof(id)));
	CHECK(!bk_header_peek_id(none, strlen(none), id, sizeof(id)));
	/* An id that does not fit is no id. */
	CHECK(!bk_header_peek_id(ok, strlen(ok), id, 20));
	CHECK(bk_header_peek_id(ok, strlen(ok), id, 21));
}

int main(void)
{
	RUN(parses_example);
	RUN(writes_example);
	RUN(tolerated_variants);
	RUN(old_versions_refused);
	RUN(each_rule_enforced);
	RUN(nul_and_size_limits);
	RUN(backup_id);
	RUN(passphrases);
	RUN(peek_id);
	return harness_done();
}
