/* qpool command line: global options and dispatch.
 *
 *   qpool [--root DIR] COMMAND ...
 *
 * Invoked as qvm-pool, qvm-volume, qvm-backup or qvm-backup-restore (by
 * symlink), it behaves as `qpool pool`, `qpool volume`, `qpool backup` and
 * `qpool restore`.
 */
#include "cli.h"
#include "backup/bk_kdfmem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cli_top {
	const char *name;		/* qpool COMMAND */
	const char *alias;		/* program name that means the same, or NULL */
	const struct cli_group *group;	/* NULL: not available in this build */
	const char *summary;
	/* A command without subcommands (backup, restore): run instead of group. */
	int (*run)(const struct cli_ctx *ctx, int argc, char **argv);
};

static const struct cli_top tops[] = {
	{ "pool", "qvm-pool", &cli_pool_group, "manage storage pools (also qvm-pool)", NULL },
	{ "volume", "qvm-volume", &cli_volume_group, "manage volumes (also qvm-volume)", NULL },
	{ "vm", NULL, &cli_vm_group, "create, start, stop, remove and list VMs", NULL },
	{ "backup", "qvm-backup", NULL, "back up VMs (also qvm-backup)", cli_backup_main },
	{ "restore", "qvm-backup-restore", NULL, "restore VMs from a backup (also qvm-backup-restore)",
	  cli_restore_main },
	{ NULL, NULL, NULL, NULL, NULL },
};

static void top_usage(FILE *f)
{
	fputs("usage: qpool [--root DIR] COMMAND [ARGS...]\n", f);
}

static int top_help(void)
{
	const struct cli_top *t;

	top_usage(stdout);
	fputs("\nStorage pool manager: pools, volumes and the VMs that use them.\n"
	      "\noptions:\n"
	      "  --root DIR     state folder (default: $QPOOL_ROOT, else " QP_DEFAULT_ROOT ")\n"
	      "  -h, --help     show this help and exit\n"
	      "  --version      show the version and exit\n"
	      "\ncommands:\n",
	      stdout);
	for (t = tops; t->name; t++)
		if (t->group || t->run)
			printf("  %-14s %s\n", t->name, t->summary);
	printf("  %-14s %s\n", "help", "show the help of a command: help [COMMAND [SUBCOMMAND]]");
	fputs("\nRun 'qpool COMMAND --help' for the commands of each group.\n", stdout);
	return CLI_OK;
}

static const struct cli_top *top_find(const char *name, bool by_alias)
{
	const struct cli_top *t;

	for (t = tops; t->name; t++)
		if (!strcmp(by_alias ? (t->alias ? t->alias : "") : t->name, name))
			return t;
	return NULL;
}

static int run_top(const struct cli_top *t, const char *root, const char *prog, int argc,
		   char **argv)
{
	struct cli_ctx ctx = { .root = root, .prog = prog };

	/* A single command names itself in its usage line: "qpool backup ...". */
	if (t->run) {
		ctx.prog = "qpool";
		return t->run(&ctx, argc, argv);
	}
	if (!t->group)
		return cli_error("%s is not available in this build", t->name);
	return cli_group_run(&ctx, t->group, argc, argv);
}

/* qpool help [COMMAND [SUBCOMMAND]] */
static int help_cmd(const char *root, int argc, char **argv)
{
	const struct cli_top *t;
	const struct cli_cmd *c;
	struct cli_ctx ctx = { .root = root };
	char prog[64];

	if (argc < 2)
		return top_help();
	t = top_find(argv[1], false);
	if (t && t->run) {
		char *hargv[] = { argv[1], (char *)"--help", NULL };

		ctx.prog = "qpool";
		return t->run(&ctx, 2, hargv);
	}
	if (!t || !t->group) {
		fprintf(stderr, "qpool: unknown command '%s'\n", argv[1]);
		top_usage(stderr);
		return CLI_USAGE;
	}
	snprintf(prog, sizeof(prog), "qpool %s", t->name);
	ctx.prog = prog;
	if (argc < 3)
		return cli_group_help(&ctx, t->group, false);
	c = cli_group_find(t->group, argv[2]);
	if (!c) {
		fprintf(stderr, "qpool: unknown command '%s'\n", argv[2]);
		return cli_group_help(&ctx, t->group, true);
	}
	return cli_help(&ctx, c);
}

int main(int argc, char **argv)
{
	const struct cli_top *t;
	const char *base, *root = NULL;
	char prog[64];
	int i = 1;

	/* Before OpenSSL allocates: scrypt's 1 GiB blocks kept for reuse. */
	(void)bk_kdfmem_install();
	base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	t = top_find(base, true);

	/* Global options, before the command. */
	while (i < argc && argv[i][0] == '-' && argv[i][1]) {
		if (!strcmp(argv[i], "--root")) {
			if (i + 1 >= argc) {
				fputs("qpool: option '--root' needs an argument\n", stderr);
				top_usage(stderr);
				return CLI_USAGE;
			}
			root = argv[i + 1];
			i += 2;
		} else if (!strncmp(argv[i], "--root=", 7)) {
			root = argv[i] + 7;
			i++;
		} else if (!t && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
			return top_help();
		} else if (!strcmp(argv[i], "--version")) {
			printf("qpool %s\n", QPOOL_VERSION);
			return CLI_OK;
		} else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (t) {
			break;	/* an option of the group, e.g. qvm-pool -h */
		} else {
			fprintf(stderr, "qpool: unknown option '%s'\n", argv[i]);
			top_usage(stderr);
			return CLI_USAGE;
		}
	}

	if (t) {
		/* argv[i - 1] stands in for the program name. */
		argv[i - 1] = (char *)base;
		return run_top(t, root, base, argc - i + 1, argv + i - 1);
	}
	if (i >= argc) {
		fputs("qpool: missing command\n", stderr);
		top_usage(stderr);
		return CLI_USAGE;
	}
	if (!strcmp(argv[i], "help"))
		return help_cmd(root, argc - i, argv + i);
	t = top_find(argv[i], false);
	if (!t) {
		fprintf(stderr, "qpool: unknown command '%s'\n", argv[i]);
		top_usage(stderr);
		return CLI_USAGE;
	}
	snprintf(prog, sizeof(prog), "qpool %s", t->name);
	return run_top(t, root, prog, argc - i, argv + i);
}
