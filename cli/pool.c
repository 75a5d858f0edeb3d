/* qpool command line: `qpool pool` (also qvm-pool). */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static const struct option help_only[] = {
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Parses options that are only -h; operands go to p->pos.  Returns -1 when
 * the caller should go on, else the exit status. */
static int parse_plain(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
		       int argc, char **argv)
{
	int c;

	if (cli_parse_init(p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(p, ctx, cmd, "h", help_only)) != -1) {
		if (c == 'h')
			return cli_help(ctx, cmd);
		return CLI_USAGE;
	}
	return -1;
}

static const struct option opt_o[] = {
	{ "option", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Parses -o k=v[,k=v...] (repeatable) into @opts. */
static int parse_with_o(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
			int argc, char **argv, struct qp_kvlist *opts)
{
	const char *bad = NULL;
	int c, r;

	if (cli_parse_init(p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(p, ctx, cmd, "o:h", opt_o)) != -1) {
		switch (c) {
		case 'h':
			return cli_help(ctx, cmd);
		case 'o':
			r = cli_parse_kv(optarg, opts, &bad);
			if (r == -EINVAL)
				return cli_usage(ctx, cmd, "invalid option '%s': expected KEY=VALUE[,KEY=VALUE...]",
						 bad);
			if (r < 0)
				return cli_error("out of memory");
			break;
		default:
			return CLI_USAGE;
		}
	}
	return -1;
}

static int pool_list(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_state *st = NULL;
	struct cli_table t;
	struct cli_parse p;
	size_t i;
	int ret;

	ret = parse_plain(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	if (p.npos) {
		ret = cli_usage(ctx, cmd, "unexpected argument '%s'", p.pos[0]);
		goto out;
	}
	ret = cli_state_open(ctx, false, &st);
	if (ret)
		goto out;
	cli_table_init(&t, 2);
	cli_table_addv(&t, "NAME", "DRIVER");
	for (i = 0; i < st->n_pools; i++) {
		const struct qp_pool *pl = st->pools[i];

		cli_table_addv(&t, pl->name, pl->drv ? pl->drv->name : "-");
	}
	cli_table_print(&t);
	cli_table_release(&t);
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int pool_drivers(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
			char **argv)
{
	struct cli_table t;
	struct cli_parse p;
	char buf[1024];
	size_t i, j, n;
	int ret;

	ret = parse_plain(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	if (p.npos) {
		ret = cli_usage(ctx, cmd, "unexpected argument '%s'", p.pos[0]);
		goto out;
	}
	cli_table_init(&t, 2);
	cli_table_addv(&t, "DRIVER", "OPTIONS");
	for (i = 0; qp_drivers[i]; i++) {
		const struct qp_driver *d = qp_drivers[i];

		buf[0] = '\0';
		for (j = 0, n = 0; d->params && d->params[j] && n < sizeof(buf); j++)
			n += snprintf(buf + n, sizeof(buf) - n, "%s%s", j ? ", " : "", d->params[j]);
		cli_table_addv(&t, d->name, buf);
	}
	cli_table_print(&t);
	cli_table_release(&t);
	ret = CLI_OK;
out:
	cli_parse_release(&p);
	return ret;
}

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qp_kv *)a)->key, ((const struct qp_kv *)b)->key);
}

static int pool_info(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_kvlist info = { 0 };
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_pool *pl;
	struct cli_table t;
	struct cli_parse p;
	size_t i;
	int ret;

	ret = parse_plain(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	if (p.npos != 1) {
		ret = cli_usage(ctx, cmd, p.npos ? "too many arguments" : "missing POOL");
		goto out;
	}
	ret = cli_state_open(ctx, false, &st);
	if (ret)
		goto out;
	pl = qp_pool_find(st, p.pos[0]);
	if (!pl) {
		ret = cli_error("pool '%s' does not exist", p.pos[0]);
		goto out;
	}
	if (qp_pool_info(pl, &info, &err) < 0) {
		ret = cli_fail(&err);
		goto out;
	}
	qsort(info.v, info.n, sizeof(*info.v), kv_cmp);
	cli_table_init(&t, 2);
	cli_table_addv(&t, "name", pl->name);
	for (i = 0; i < info.n; i++)
		if (strcmp(info.v[i].key, "name"))
			cli_table_addv(&t, info.v[i].key, info.v[i].val);
	cli_table_print(&t);
	cli_table_release(&t);
	ret = CLI_OK;
out:
	qp_kv_release(&info);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int pool_add(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_kvlist opts = { 0 };
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	int ret;

	ret = parse_with_o(&p, ctx, cmd, argc, argv, &opts);
	if (ret >= 0)
		goto out;
	if (p.npos != 2) {
		ret = cli_usage(ctx, cmd, p.npos < 2 ? "missing POOL or DRIVER" : "too many arguments");
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_pool_add(st, p.pos[0], p.pos[1], &opts, &err) < 0) {
		ret = cli_fail(&err);
		goto out;
	}
	ret = CLI_OK;
out:
	qp_kv_release(&opts);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int pool_remove(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
		       char **argv)
{
	struct qp_state *st = NULL;
	struct cli_parse p;
	int i, ret, failed = 0;

	ret = parse_plain(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	if (!p.npos) {
		ret = cli_usage(ctx, cmd, "missing POOL");
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	/* Every pool is tried; the errors are collected. */
	for (i = 0; i < p.npos; i++) {
		struct qp_err err = { 0 };

		if (qp_pool_remove(st, p.pos[i], &err) < 0) {
			cli_fail(&err);
			failed++;
		}
	}
	ret = failed ? CLI_FAIL : CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int pool_set(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_kvlist opts = { 0 };
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	size_t i;
	int ret;

	ret = parse_with_o(&p, ctx, cmd, argc, argv, &opts);
	if (ret >= 0)
		goto out;
	if (p.npos != 1) {
		ret = cli_usage(ctx, cmd, p.npos ? "too many arguments" : "missing POOL");
		goto out;
	}
	if (!opts.n) {
		ret = cli_usage(ctx, cmd, "nothing to set: give -o KEY=VALUE");
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	/* Options are applied in order; the first failure stops, and what
	 * was applied before it is kept. */
	for (i = 0; i < opts.n; i++)
		if (qp_pool_set(st, p.pos[0], opts.v[i].key, opts.v[i].val, &err) < 0)
			break;
	ret = CLI_OK;
	if (i < opts.n)
		ret = cli_fail(&err);
out:
	qp_kv_release(&opts);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* Asks for a LUKS passphrase on the terminal, without echo. */
static int ask_pass(const char *prompt, char *buf, size_t size)
{
	struct termios old, quiet;
	size_t n = 0;
	char c;
	int tty = open("/dev/tty", O_RDWR | O_CLOEXEC), r = 0;

	if (tty < 0)
		return -ENOTTY;
	if (write(tty, prompt, strlen(prompt)) < 0 || tcgetattr(tty, &old) < 0) {
		close(tty);
		return -ENOTTY;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	tcsetattr(tty, TCSAFLUSH, &quiet);
	for (;;) {
		ssize_t k = read(tty, &c, 1);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || c == '\n')
			break;
		if (n + 1 >= size) {
			r = -EFBIG;
			break;
		}
		buf[n++] = c;
	}
	buf[n] = '\0';
	c = 0;
	tcsetattr(tty, TCSAFLUSH, &old);
	if (write(tty, "\n", 1) < 0) {
		/* only the look of the prompt suffers */
	}
	close(tty);
	return r < 0 ? r : (int)n;
}

/* qpool pool attach|detach POOL... */
static int pool_attach_detach(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
			      char **argv, bool attach)
{
	struct qp_state *st = NULL;
	struct cli_parse p;
	int i, ret, failed = 0;

	ret = parse_plain(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	if (!p.npos) {
		ret = cli_usage(ctx, cmd, "missing POOL");
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	qp_drive_set_askpass(ask_pass);
	for (i = 0; i < p.npos; i++) {
		struct qp_err err = { 0 };

		if ((attach ? qp_pool_attach : qp_pool_detach)(st, p.pos[i], &err) < 0) {
			cli_fail(&err);
			failed++;
		}
	}
	ret = failed ? CLI_FAIL : CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int pool_attach(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
		       char **argv)
{
	return pool_attach_detach(ctx, cmd, argc, argv, true);
}

static int pool_detach(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
		       char **argv)
{
	return pool_attach_detach(ctx, cmd, argc, argv, false);
}

static const struct cli_cmd pool_cmds[] = {
	{ "add", { "a", NULL }, pool_add, "POOL DRIVER [-o KEY=VALUE[,KEY=VALUE...]]...",
	  "add a storage pool",
	  "\nCreates pool POOL with driver DRIVER (see 'drivers' for the drivers and their\n"
	  "options) and records it in the state.  With option device=UUID=...|LABEL=...|\n"
	  "/dev/... (and key_file=FILE for LUKS) the pool lives on an external drive:\n"
	  "file-reflink mounts its filesystem, lvm_thin activates its volume group.\n"
	  "\noptions:\n"
	  "  -o, --option KEY=VALUE[,...]  driver option; may be repeated\n"
	  "  -h, --help                    show this help and exit\n" },
	{ "attach", { NULL }, pool_attach, "POOL...", "bring pools on external drives online",
	  "\nFinds each POOL's drive (option device), unlocks it when it is LUKS (with\n"
	  "option key_file, else a passphrase asked on the terminal), checks that it\n"
	  "holds the pool's filesystem (fs_uuid) or volume group (vg_uuid) and mounts it\n"
	  "or activates the group.  An online pool is left as it is.\n"
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "detach", { NULL }, pool_detach, "POOL...", "take pools on external drives offline",
	  "\nUnmounts each POOL's filesystem (or deactivates its volume group) and locks\n"
	  "its LUKS device, so the drive can be unplugged.  Refused while a VM with a\n"
	  "volume in the pool is running.\n"
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "drivers", { "d", NULL }, pool_drivers, "", "list the pool drivers and their options",
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "info", { "i", NULL }, pool_info, "POOL", "show the options, size and usage of a pool",
	  "\nPrints 'name POOL' and then the pool's options, size and usage, sorted.\n"
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "list", { "ls", "l", NULL }, pool_list, "", "list pools and their drivers (default)",
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "remove", { "rm", "r", NULL }, pool_remove, "POOL...", "remove pools",
	  "\nRemoves each POOL from the state; a pool that still holds volumes is refused.\n"
	  "Every POOL is tried; the exit status is 1 if any failed.\n"
	  "\noptions:\n"
	  "  -h, --help  show this help and exit\n" },
	{ "set", { "s", NULL }, pool_set, "POOL -o KEY=VALUE[,KEY=VALUE...]...",
	  "change options of a pool",
	  "\nSettable options: revisions_to_keep, ephemeral_volatile.\n"
	  "\noptions:\n"
	  "  -o, --option KEY=VALUE[,...]  option to set; may be repeated\n"
	  "  -h, --help                    show this help and exit\n" },
	{ NULL, { NULL }, NULL, NULL, NULL, NULL },
};

const struct cli_group cli_pool_group = {
	.name = "pool",
	.summary = "Manage storage pools.",
	.cmds = pool_cmds,
	.default_cmd = "list",
};
