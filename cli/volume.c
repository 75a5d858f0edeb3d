/* qpool command line: `qpool volume` (also qvm-volume): list, info, config,
 * resize, revert, and the command table (the data commands are in
 * volume_io.c). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct option help_only[] = {
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cli_vol_lookup(struct qp_state *st, const char *spec, struct qp_volume **out)
{
	struct qp_err err = { 0 };

	if (qp_vol_lookup(st, spec, out, &err) < 0)
		return cli_fail(&err);
	return CLI_OK;
}

/* ---- list --------------------------------------------------------------- */

struct vrow {
	struct qp_volume *v;
	const char *pool;
	const char *vid;
};

static int vrow_cmp(const void *a, const void *b)
{
	const struct vrow *x = a, *y = b;
	int c = strcmp(x->pool, y->pool);

	if (!c)
		c = strcmp(x->vid, y->vid);
	if (!c)
		c = strcmp(x->v->vm->name, y->v->vm->name);
	if (!c)
		c = strcmp(x->v->name, y->v->name);
	return c;
}

static bool in_list(char **names, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return true;
	return false;
}

/* "Yes" when the volume has revisions.  Errors (an offline pool...) give
 * "No" and one warning per pool. */
static const char *revert_possible(struct qp_volume *v, const char **warned_pool)
{
	struct qp_revision *revs = NULL;
	struct qp_err err = { 0 };
	size_t n = 0;

	if (qp_vol_revisions(v, &revs, &n, &err) < 0) {
		if (!*warned_pool || strcmp(*warned_pool, v->pool_name)) {
			fprintf(stderr, "qpool: warning: %s\n", err.msg);
			*warned_pool = v->pool_name;
		}
		return "No";
	}
	qp_revisions_free(revs, n);
	return n ? "Yes" : "No";
}

static int print_volumes(struct vrow *rows, size_t n, bool full)
{
	const char *warned = NULL, *rev = "No";
	bool blank = !full && isatty(STDOUT_FILENO);
	struct cli_table t;
	char *pv = NULL;
	size_t i;
	int ret = CLI_FAIL;

	cli_table_init(&t, 4);
	if (cli_table_addv(&t, "POOL:VOLUME", "VMNAME", "VOLUME_NAME", "REVERT_POSSIBLE") < 0)
		goto out;
	for (i = 0; i < n; i++) {
		bool same = i > 0 && !strcmp(rows[i].pool, rows[i - 1].pool) &&
			    !strcmp(rows[i].vid, rows[i - 1].vid);

		if (!same) {
			free(pv);
			pv = qp_strdupf("%s:%s", rows[i].pool, rows[i].vid);
			if (!pv)
				goto out;
			rev = revert_possible(rows[i].v, &warned);
		}
		if (cli_table_addv(&t, same && blank ? "" : pv, rows[i].v->vm->name,
				   rows[i].v->name, rev) < 0)
			goto out;
	}
	cli_table_print(&t);
	ret = CLI_OK;
out:
	if (ret)
		cli_error("out of memory");
	free(pv);
	cli_table_release(&t);
	return ret;
}

enum { OPT_FULL = 0x100 };

static int vol_list(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "pool", required_argument, NULL, 'p' },
		{ "full", no_argument, NULL, OPT_FULL },
		{ "all", no_argument, NULL, 'a' },
		{ "exclude", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char **pools = calloc(argc, sizeof(char *)), **excl = calloc(argc, sizeof(char *));
	int npools = 0, nexcl = 0, c, i, ret = CLI_FAIL;
	struct qp_state *st = NULL;
	struct vrow *rows = NULL;
	bool full = false, all = false;
	struct cli_parse p;
	size_t n = 0, cap = 0, d, k;

	if (cli_parse_init(&p, argc, argv) < 0 || !pools || !excl) {
		cli_error("out of memory");
		goto out;
	}
	while ((c = cli_parse_next(&p, ctx, cmd, "p:ae:h", lo)) != -1) {
		switch (c) {
		case 'h':
			ret = cli_help(ctx, cmd);
			goto out;
		case 'p':
			pools[npools++] = optarg;
			break;
		case OPT_FULL:
			full = true;
			break;
		case 'a':
			all = true;
			break;
		case 'e':
			excl[nexcl++] = optarg;
			break;
		default:
			ret = CLI_USAGE;
			goto out;
		}
	}
	if (all && p.npos) {
		ret = cli_usage(ctx, cmd, "give VM names or --all, not both");
		goto out;
	}
	if (nexcl && p.npos) {
		ret = cli_usage(ctx, cmd, "--exclude goes with --all, not with VM names");
		goto out;
	}
	ret = cli_state_open(ctx, false, &st);
	if (ret)
		goto out;
	ret = CLI_FAIL;
	for (i = 0; i < npools; i++)
		if (!qp_pool_find(st, pools[i])) {
			cli_error("pool '%s' does not exist", pools[i]);
			goto out;
		}
	for (i = 0; i < p.npos; i++)
		if (!qp_dom_find(st, p.pos[i])) {
			cli_error("VM '%s' does not exist", p.pos[i]);
			goto out;
		}
	for (i = 0; i < nexcl; i++)
		if (!qp_dom_find(st, excl[i])) {
			cli_error("VM '%s' does not exist", excl[i]);
			goto out;
		}

	for (d = 0; d < st->n_doms; d++) {
		struct qp_domain *dom = st->doms[d];

		if (p.npos ? !in_list(p.pos, p.npos, dom->name) : in_list(excl, nexcl, dom->name))
			continue;
		for (k = 0; k < dom->n_vols; k++) {
			struct qp_volume *v = dom->vols[k];

			if (npools && !in_list(pools, npools, v->pool_name ? v->pool_name : ""))
				continue;
			if (n == cap) {
				struct vrow *nr;

				cap = cap ? cap * 2 : 256;
				nr = realloc(rows, cap * sizeof(*rows));
				if (!nr) {
					cli_error("out of memory");
					goto out;
				}
				rows = nr;
			}
			rows[n].v = v;
			rows[n].pool = v->pool_name ? v->pool_name : "";
			rows[n].vid = v->vid ? v->vid : "";
			n++;
		}
	}
	qsort(rows, n, sizeof(*rows), vrow_cmp);
	ret = print_volumes(rows, n, full);
out:
	free(rows);
	free(pools);
	free(excl);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* ---- info --------------------------------------------------------------- */

static const char *const info_props[] = {
	"pool", "vid", "rw", "source", "save_on_stop", "snap_on_start", "size", "usage",
	"revisions_to_keep", "ephemeral", "is_outdated", NULL,
};

/* Writes the value of @prop into buf.  @full: the form shown in the table. */
static int vol_prop(struct qp_volume *v, const char *prop, bool full, char *buf, size_t len,
		    struct qp_err *err)
{
	uint64_t size, usage;
	bool b;
	int r;

	if (!strcmp(prop, "pool")) {
		snprintf(buf, len, "%s", v->pool_name ? v->pool_name : "");
	} else if (!strcmp(prop, "vid")) {
		snprintf(buf, len, "%s", v->vid ? v->vid : "");
	} else if (!strcmp(prop, "rw")) {
		snprintf(buf, len, "%s", cli_bool(v->rw));
	} else if (!strcmp(prop, "source")) {
		snprintf(buf, len, "%s", v->source ? v->source : "");
	} else if (!strcmp(prop, "save_on_stop")) {
		snprintf(buf, len, "%s", cli_bool(v->save_on_stop));
	} else if (!strcmp(prop, "snap_on_start")) {
		snprintf(buf, len, "%s", cli_bool(v->snap_on_start));
	} else if (!strcmp(prop, "size")) {
		/* The image's own size where it can be read (it is authoritative). */
		if (qp_vol_usage(v, &size, &usage, err) < 0)
			size = v->size;
		snprintf(buf, len, "%" PRIu64, size);
	} else if (!strcmp(prop, "usage")) {
		r = qp_vol_usage(v, &size, &usage, err);
		if (r < 0)
			return r;
		snprintf(buf, len, "%" PRIu64, usage);
	} else if (!strcmp(prop, "revisions_to_keep")) {
		r = qp_vol_rtk(v);
		snprintf(buf, len, "%d%s", r, r == -1 && full ? " (snapshot disabled)" : "");
	} else if (!strcmp(prop, "ephemeral")) {
		snprintf(buf, len, "%s", cli_bool(qp_vol_ephemeral(v)));
	} else if (!strcmp(prop, "is_outdated") || !strcmp(prop, "is_dirty")) {
		r = prop[3] == 'o' ? qp_vol_is_outdated(v, &b, err) : qp_vol_is_dirty(v, &b, err);
		if (r < 0)
			return r;
		snprintf(buf, len, "%s", cli_bool(b));
	} else {
		return qp_err_set(err, -EINVAL, "no such property '%s'", prop);
	}
	return 0;
}

static int print_info(struct qp_volume *v, const char *prop)
{
	struct qp_revision *revs = NULL;
	struct qp_err err = { 0 };
	struct cli_table t;
	size_t n = 0, i;
	char buf[256];
	int ret = CLI_FAIL;

	cli_table_init(&t, 2);
	if (prop && strcmp(prop, "revisions")) {
		if (vol_prop(v, prop, false, buf, sizeof(buf), &err) < 0)
			goto fail;
		puts(buf);
		ret = CLI_OK;
		goto out;
	}
	for (i = 0; !prop && info_props[i]; i++) {
		if (vol_prop(v, info_props[i], true, buf, sizeof(buf), &err) < 0)
			goto fail;
		if (cli_table_addv(&t, info_props[i], buf) < 0) {
			qp_err_set(&err, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	if (qp_vol_revisions(v, &revs, &n, &err) < 0)
		goto fail;
	if (prop) {
		for (i = 0; i < n; i++)
			puts(revs[i].id);
	} else {
		cli_table_print(&t);
		fputs("List of available revisions (for revert):", stdout);
		if (!n)
			fputs(" none", stdout);
		putchar('\n');
		for (i = 0; i < n; i++)
			printf("  %s\n", revs[i].id);
	}
	ret = CLI_OK;
	goto out;
fail:
	ret = cli_fail(&err);
out:
	qp_revisions_free(revs, n);
	cli_table_release(&t);
	return ret;
}

/* Parses -h and checks the operand count; opens the state and looks up the
 * volume in pos[0].  Returns -1 when the caller should go on. */
static int vol_begin(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
		     int argc, char **argv, int min, int max, bool write, struct qp_state **st,
		     struct qp_volume **v)
{
	int c, ret;

	*st = NULL;
	if (cli_parse_init(p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(p, ctx, cmd, "h", help_only)) != -1)
		return c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
	if (p->npos < min)
		return cli_usage(ctx, cmd, "missing arguments");
	if (p->npos > max)
		return cli_usage(ctx, cmd, "too many arguments");
	ret = cli_state_open(ctx, write, st);
	if (ret)
		return ret;
	ret = cli_vol_lookup(*st, p->pos[0], v);
	return ret ? ret : -1;
}

static int vol_info(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	int ret;

	ret = vol_begin(&p, ctx, cmd, argc, argv, 1, 2, false, &st, &v);
	if (ret < 0)
		ret = print_info(v, p.npos > 1 ? p.pos[1] : NULL);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* ---- config, revert, resize --------------------------------------------- */

static int vol_config(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	int ret;

	ret = vol_begin(&p, ctx, cmd, argc, argv, 3, 3, true, &st, &v);
	if (ret < 0) {
		if (qp_vol_config(st, v, p.pos[1], p.pos[2], &err) < 0)
			ret = cli_fail(&err);
		else
			ret = CLI_OK;
	}
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vol_revert(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	int ret;

	ret = vol_begin(&p, ctx, cmd, argc, argv, 1, 2, true, &st, &v);
	if (ret < 0) {
		if (qp_vol_revert(st, v, p.npos > 1 ? p.pos[1] : NULL, &err) < 0)
			ret = cli_fail(&err);
		else
			ret = CLI_OK;
	}
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vol_resize(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	unsigned flags = 0;
	uint64_t size;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "fh", lo)) != -1) {
		if (c == 'f') {
			flags |= QP_RESIZE_FORCE;
			continue;
		}
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	if (p.npos != 2) {
		ret = cli_usage(ctx, cmd, p.npos < 2 ? "missing arguments" : "too many arguments");
		goto out;
	}
	if (qp_parse_size(p.pos[1], &size) < 0) {
		ret = cli_usage(ctx, cmd, "invalid size '%s'", p.pos[1]);
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (!ret)
		ret = cli_vol_lookup(st, p.pos[0], &v);
	if (ret)
		goto out;
	if (qp_vol_resize(st, v, size, flags, &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* ---- the command table -------------------------------------------------- */

#define HELP_ONLY "\noptions:\n  -h, --help  show this help and exit\n"

static const struct cli_cmd volume_cmds[] = {
	{ "list", { "ls", "l", NULL }, vol_list,
	  "[-p POOL]... [--full] [VM... | --all [--exclude VM]...]",
	  "list volumes (default)",
	  "\nLists volumes as POOL:VOLUME (pool and volume id), VM, volume name and whether\n"
	  "a revision exists to revert to, sorted by pool and volume id.  On a terminal a\n"
	  "repeated POOL:VOLUME is left blank unless --full is given.  With no VM, every\n"
	  "VM is listed.\n"
	  "\noptions:\n"
	  "  -p, --pool POOL     only volumes in POOL; may be repeated\n"
	  "  --full              print POOL:VOLUME on every line\n"
	  "  -a, --all           every VM (the default when no VM is given)\n"
	  "  -e, --exclude VM    with --all: leave VM out; may be repeated\n"
	  "  -h, --help          show this help and exit\n" },
	{ "info", { "i", NULL }, vol_info, "VM:VOLUME [PROPERTY]", "show a volume's properties",
	  "\nPrints pool, vid, rw, source, save_on_stop, snap_on_start, size, usage,\n"
	  "revisions_to_keep, ephemeral and is_outdated, then the revisions available for\n"
	  "revert.  Given PROPERTY (one of those, or is_dirty, or revisions), prints only its\n"
	  "value; 'revisions' prints one revision per line.\n" HELP_ONLY },
	{ "config", { "c", "set", "s", NULL }, vol_config, "VM:VOLUME PROPERTY VALUE",
	  "change a volume property",
	  "\nPROPERTY is rw (True/False), revisions_to_keep (an integer; -1 disables\n"
	  "snapshots of a volume saved on stop) or ephemeral (True/False, volatile volumes\n"
	  "only).  The VM must be halted.\n" HELP_ONLY },
	{ "resize", { "extend", NULL }, vol_resize, "VM:VOLUME SIZE [-f]", "resize a volume",
	  "\nSIZE is in bytes, or with a suffix K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti\n"
	  "(powers of 1024), B optional.  Shrinking is refused without --force.\n"
	  "\noptions:\n"
	  "  -f, --force  allow shrinking (resize the file system inside first)\n"
	  "  -h, --help   show this help and exit\n" },
	{ "revert", { "rv", "r", NULL }, vol_revert, "VM:VOLUME [REVISION]",
	  "revert a volume to a revision",
	  "\nReplaces the volume's content with REVISION (see 'info VM:VOLUME revisions'),\n"
	  "by default the newest one.  The VM must be halted.\n" HELP_ONLY },
	{ "import", { NULL }, cli_vol_import, "VM:VOLUME PATH|- [--size SIZE | --no-resize]",
	  "replace a volume's content with a file",
	  "\nReads PATH (or standard input for '-') into the volume.  By default the volume\n"
	  "takes the size of the input; --size gives the size (needed when the input is a\n"
	  "pipe); --no-resize keeps the volume's size, which the input must match (a pipe\n"
	  "is then read for exactly that size).  The previous content becomes a revision.\n"
	  "The VM must be halted.\n"
	  "\noptions:\n"
	  "  --size SIZE  size of the input in bytes (suffixes as for resize)\n"
	  "  --no-resize  keep the volume's size\n"
	  "  -h, --help   show this help and exit\n" },
	{ "export", { NULL }, cli_vol_export, "VM:VOLUME [PATH|-]",
	  "copy a volume's saved content to a file",
	  "\nWrites the committed content of the volume to PATH, or to standard output for\n"
	  "'-' or no PATH (refused when standard output is a terminal).  Holes are kept\n"
	  "when writing to a file.\n" HELP_ONLY },
	{ "clone", { NULL }, cli_vol_clone, "SRC_VM:VOLUME DST_VM:VOLUME [-f]",
	  "replace a volume's content with another volume's",
	  "\nCopies the saved content of SRC into DST; both must be saved on stop.  Asks for\n"
	  "confirmation on a terminal; elsewhere -f is required.\n"
	  "\noptions:\n"
	  "  -f, --force  do not ask for confirmation\n"
	  "  -h, --help   show this help and exit\n" },
	{ "clear", { NULL }, cli_vol_clear, "VM:VOLUME [-f]", "empty a volume",
	  "\nReplaces the volume's content with zeros (the previous content becomes a\n"
	  "revision).  Asks for confirmation on a terminal; elsewhere -f is required.\n"
	  "\noptions:\n"
	  "  -f, --force  do not ask for confirmation\n"
	  "  -h, --help   show this help and exit\n" },
	{ NULL, { NULL }, NULL, NULL, NULL, NULL },
};

const struct cli_group cli_volume_group = {
	.name = "volume",
	.summary = "Manage volumes.",
	.cmds = volume_cmds,
	.default_cmd = "list",
};
