/* libFuzzer target: the backup-header parser (backup/bk_header.c).
 *
 * Any input must parse or fail cleanly; whatever parses must write back
 * (bk_header_format) to text that parses to the same values, and its
 * backup id must make valid per-file passphrases.  The backup-id peek that
 * restore runs before the header is checked reads the same input: it must
 * stay in bounds, and when the header parses, find its id or none. */
#include "backup/bk_header.h"
#include "backup/bk_secure.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qp_err err = { 0 };
	struct bk_header *h = NULL, *back = NULL;
	char *text = NULL, *pass = NULL;
	size_t len = 0;
	char id[128];
	bool peeked = bk_header_peek_id((const char *)data, size, id, sizeof(id));

	if (bk_header_parse((const char *)data, size, &h, &err) < 0) {
		if (h || !err.msg[0] || err.code >= 0)
			abort();
		return 0;
	}
	if (h->version != 4 || !h->encrypted || !h->backup_id || h->backup_id[0] == '-')
		abort();
	/* What the peek found is the id; it may find none (blanks around the
	 * line, an id too long for @id), never another one. */
	if (peeked && strcmp(id, h->backup_id))
		abort();
	if (h->compressed && !bk_header_filter_valid(h->compression_filter))
		abort();
	if (bk_header_format(h, &text, &len, &err) < 0)
		abort();
	if (bk_header_parse(text, len, &back, &err) < 0)
		abort();
	if (back->compressed != h->compressed || !same(back->backup_id, h->backup_id) ||
	    !same(back->compression_filter, h->compression_filter) ||
	    !same(back->hmac_algorithm, h->hmac_algorithm))
		abort();
	if (bk_header_pass_for_file(h->backup_id, "qubes.xml.000.enc", "p", 1, &pass, &len,
				    &err) < 0)
		abort();
	if (len != strlen(h->backup_id) + strlen("!qubes.xml.000!p"))
		abort();
	bk_secure_free(pass);
	bk_header_free(back);
	bk_header_free(h);
	free(text);
	return 0;
}
