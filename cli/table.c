/* qpool command line: tables printed like `column -t`. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_table_init(struct cli_table *t, size_t ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
}

int cli_table_add(struct cli_table *t, const char *const *cells)
{
	size_t i;

	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **n = realloc(t->cells, cap * t->ncols * sizeof(*n));

		if (!n)
			return -ENOMEM;
		t->cells = n;
		t->cap = cap;
	}
	for (i = 0; i < t->ncols; i++) {
		char *c = strdup(cells[i] ? cells[i] : "");

		if (!c) {
			while (i--)
				free(t->cells[t->nrows * t->ncols + i]);
			return -ENOMEM;
		}
		t->cells[t->nrows * t->ncols + i] = c;
	}
	t->nrows++;
	return 0;
}

int cli_table_addv(struct cli_table *t, ...)
{
	const char *cells[16];
	va_list ap;
	size_t i;

	if (t->ncols > sizeof(cells) / sizeof(cells[0]))
		return -EINVAL;
	va_start(ap, t);
	for (i = 0; i < t->ncols; i++)
		cells[i] = va_arg(ap, const char *);
	va_end(ap);
	return cli_table_add(t, cells);
}

void cli_table_print(const struct cli_table *t)
{
	size_t *w, r, c;

	if (!t->nrows)
		return;
	w = calloc(t->ncols, sizeof(*w));
	if (!w)
		return;
	for (r = 0; r < t->nrows; r++)
		for (c = 0; c < t->ncols; c++) {
			size_t l = strlen(t->cells[r * t->ncols + c]);

			if (l > w[c])
				w[c] = l;
		}
	for (r = 0; r < t->nrows; r++) {
		char *const *row = &t->cells[r * t->ncols];
		size_t last = t->ncols;

		/* Trailing empty cells print nothing, so no line ends in spaces. */
		while (last > 1 && !row[last - 1][0])
			last--;
		for (c = 0; c < last; c++) {
			if (c + 1 < last)
				printf("%-*s  ", (int)w[c], row[c]);
			else
				fputs(row[c], stdout);
		}
		putchar('\n');
	}
	free(w);
}

void cli_table_release(struct cli_table *t)
{
	size_t i;

	for (i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	memset(t, 0, sizeof(*t));
}
