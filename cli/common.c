/* qpool command line: messages, option parsing, subcommand groups, state. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- messages ---------------------------------------------------------- */

int cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("qpool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CLI_FAIL;
}

int cli_fail(const struct qp_err *err)
{
	if (err->msg[0])
		return cli_error("%s", err->msg);
	return cli_error("%s", strerror(err->code < 0 ? -err->code : EIO));
}

static void print_usage_line(FILE *f, const struct cli_ctx *ctx, const struct cli_cmd *cmd)
{
	fprintf(f, "usage: %s %s%s%s\n", ctx->prog, cmd->name, cmd->synopsis[0] ? " " : "",
		cmd->synopsis);
}

int cli_usage(const struct cli_ctx *ctx, const struct cli_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fputs("qpool: ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	print_usage_line(stderr, ctx, cmd);
	return CLI_USAGE;
}

int cli_help(const struct cli_ctx *ctx, const struct cli_cmd *cmd)
{
	int i;

	print_usage_line(stdout, ctx, cmd);
	if (cmd->aliases[0]) {
		fputs("aliases:", stdout);
		for (i = 0; cmd->aliases[i]; i++)
			printf(" %s", cmd->aliases[i]);
		putchar('\n');
	}
	printf("\n%s\n%s", cmd->summary, cmd->help);
	return CLI_OK;
}

/* ---- option parsing ---------------------------------------------------- */

int cli_parse_init(struct cli_parse *p, int argc, char **argv)
{
	static char *dummy[] = { "qpool", NULL };

	memset(p, 0, sizeof(*p));
	p->argc = argc;
	p->argv = argv;
	p->idx = 1;
	p->pos = calloc(argc > 0 ? argc : 1, sizeof(*p->pos));
	if (!p->pos)
		return -ENOMEM;
	/* Resets getopt's internal state (a group left half read, the
	 * ordering) before this argument vector is parsed. */
	optind = 0;
	opterr = 0;
	getopt_long(1, dummy, "+", NULL, NULL);
	return 0;
}

void cli_parse_release(struct cli_parse *p)
{
	free(p->pos);
	p->pos = NULL;
}

static bool is_operand(const char *a)
{
	if (a[0] != '-' || !a[1])
		return true;
	/* Negative numbers, e.g. `config vm:private revisions_to_keep -1`. */
	return isdigit((unsigned char)a[1]);
}

int cli_parse_next(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
		   const char *shortopts, const struct option *longopts)
{
	char opts[64];
	char *arg;
	int before, c;

	snprintf(opts, sizeof(opts), "+:%s", shortopts);
	while (!p->mid) {
		if (p->idx >= p->argc)
			return -1;
		arg = p->argv[p->idx];
		if (p->no_more || is_operand(arg)) {
			p->pos[p->npos++] = arg;
			p->idx++;
			continue;
		}
		if (!strcmp(arg, "--")) {
			p->no_more = true;
			p->idx++;
			continue;
		}
		optind = p->idx;
		break;
	}
	arg = p->argv[p->idx];
	before = optind;
	c = getopt_long(p->argc, p->argv, opts, longopts, NULL);
	p->mid = optind == before;
	p->idx = optind;
	if (c == '?') {
		if (optopt && strncmp(arg, "--", 2))
			cli_usage(ctx, cmd, "unknown option '-%c'", optopt);
		else
			cli_usage(ctx, cmd, "unknown option '%s'", arg);
		return '?';
	}
	if (c == ':') {
		if (optopt && strncmp(arg, "--", 2))
			cli_usage(ctx, cmd, "option '-%c' needs an argument", optopt);
		else
			cli_usage(ctx, cmd, "option '%s' needs an argument", arg);
		return '?';
	}
	return c;
}

/* ---- groups of subcommands --------------------------------------------- */

const struct cli_cmd *cli_group_find(const struct cli_group *g, const char *name)
{
	const struct cli_cmd *c;
	int i;

	for (c = g->cmds; c->name; c++) {
		if (!strcmp(c->name, name))
			return c;
		for (i = 0; c->aliases[i]; i++)
			if (!strcmp(c->aliases[i], name))
				return c;
	}
	return NULL;
}

int cli_group_help(const struct cli_ctx *ctx, const struct cli_group *g, bool to_stderr)
{
	FILE *f = to_stderr ? stderr : stdout;
	const struct cli_cmd *c;
	char names[64];
	int i;

	fprintf(f, "usage: %s [-h] COMMAND [ARGS...]\n", ctx->prog);
	if (to_stderr)
		return CLI_USAGE;
	fprintf(f, "\n%s\n\ncommands:\n", g->summary);
	for (c = g->cmds; c->name; c++) {
		int n = snprintf(names, sizeof(names), "%s", c->name);

		for (i = 0; c->aliases[i] && n < (int)sizeof(names); i++)
			n += snprintf(names + n, sizeof(names) - n, ", %s", c->aliases[i]);
		fprintf(f, "  %-22s %s\n", names, c->summary);
	}
	if (g->default_cmd)
		fprintf(f, "\nWith no command, runs '%s'.\n", g->default_cmd);
	fprintf(f, "Run '%s COMMAND --help' for the options of a command.\n", ctx->prog);
	return CLI_OK;
}

int cli_group_run(const struct cli_ctx *ctx, const struct cli_group *g, int argc, char **argv)
{
	const struct cli_cmd *cmd;
	char *def_argv[2];
	int i = 1;

	/* The group's own options come before the command name. */
	while (i < argc && argv[i][0] == '-' && argv[i][1]) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return cli_group_help(ctx, g, false);
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		/* An option of the default command, e.g. `qvm-volume -p pool`. */
		if (g->default_cmd)
			break;
		fprintf(stderr, "qpool: unknown option '%s'\n", argv[i]);
		return cli_group_help(ctx, g, true);
	}
	if (i >= argc || argv[i][0] == '-') {
		if (!g->default_cmd) {
			fprintf(stderr, "qpool: missing command\n");
			return cli_group_help(ctx, g, true);
		}
		cmd = cli_group_find(g, g->default_cmd);
		if (i >= argc) {
			def_argv[0] = (char *)cmd->name;
			def_argv[1] = NULL;
			return cmd->run(ctx, cmd, 1, def_argv);
		}
		/* argv[i - 1] stands in for the command name. */
		return cmd->run(ctx, cmd, argc - i + 1, argv + i - 1);
	}
	cmd = cli_group_find(g, argv[i]);
	if (!cmd) {
		fprintf(stderr, "qpool: unknown command '%s'\n", argv[i]);
		return cli_group_help(ctx, g, true);
	}
	return cmd->run(ctx, cmd, argc - i, argv + i);
}

/* ---- state ------------------------------------------------------------- */

int cli_state_open(const struct cli_ctx *ctx, bool write, struct qp_state **out)
{
	struct qp_err err = { 0 };
	int r;

	r = qp_state_open(qp_default_root(ctx->root), write ? QP_STATE_WRITE : 0, out, &err);
	if (r < 0) {
		*out = NULL;
		return cli_fail(&err);
	}
	return CLI_OK;
}

/* ---- small helpers ----------------------------------------------------- */

const char *cli_bool(bool b)
{
	return b ? "True" : "False";
}

bool cli_confirm(const char *fmt, ...)
{
	char line[64];
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" [y/N] ", stderr);
	fflush(stderr);
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return line[0] == 'y' || line[0] == 'Y';
}

int cli_parse_kv(const char *arg, struct qp_kvlist *l, const char **bad)
{
	char *copy, *save = NULL, *tok, *eq;
	int r = 0, n = 0;

	copy = strdup(arg);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		eq = strchr(tok, '=');
		if (!eq || eq == tok) {
			*bad = arg;
			r = -EINVAL;
			goto out;
		}
		*eq = '\0';
		r = qp_kv_set(l, tok, eq + 1);
		if (r < 0)
			goto out;
		n++;
	}
	if (!n) {
		*bad = arg;
		r = -EINVAL;
	}
out:
	free(copy);
	return r;
}
