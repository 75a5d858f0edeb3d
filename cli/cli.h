/* qpool command line: declarations shared by the files in cli/.
 *
 * Handlers return the process exit status: 0 on success, 1 on failure
 * (message on stderr as "qpool: MESSAGE"), 2 on a usage error.
 */
#ifndef QPOOL_CLI_CLI_H
#define QPOOL_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "qpool.h"

#ifndef QPOOL_VERSION
#define QPOOL_VERSION "0.1.0"
#endif

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

struct cli_ctx {
	const char *root;	/* --root, or NULL for $QPOOL_ROOT / the default */
	const char *prog;	/* "qpool pool", "qvm-pool"... for usage lines */
};

struct cli_cmd;
typedef int (*cli_fn)(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
		      char **argv);

struct cli_cmd {
	const char *name;
	const char *aliases[4];	/* NULL-terminated */
	cli_fn run;
	const char *synopsis;	/* arguments after the name */
	const char *summary;	/* one line for the command list */
	const char *help;	/* description and options, ends with a newline */
};

struct cli_group {
	const char *name;	/* "pool" */
	const char *summary;
	const struct cli_cmd *cmds;	/* terminated by an entry with name NULL */
	const char *default_cmd;	/* run with no command, or NULL */
};

extern const struct cli_group cli_pool_group;
extern const struct cli_group cli_volume_group;
extern const struct cli_group cli_vm_group;

/* qpool backup / qpool restore (backup.c): argv[0] is the command name. */
int cli_backup_main(const struct cli_ctx *ctx, int argc, char **argv);
int cli_restore_main(const struct cli_ctx *ctx, int argc, char **argv);

/* ---- messages (common.c) ----------------------------------------------- */

/* Prints "qpool: MESSAGE" on stderr and returns CLI_FAIL. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints err->msg (or strerror) as a failure and returns CLI_FAIL. */
int cli_fail(const struct qp_err *err);
/* Prints "qpool: MESSAGE" (when fmt is non-NULL) and the usage line of @cmd
 * on stderr; returns CLI_USAGE. */
int cli_usage(const struct cli_ctx *ctx, const struct cli_cmd *cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prints the help of @cmd on stdout; returns CLI_OK. */
int cli_help(const struct cli_ctx *ctx, const struct cli_cmd *cmd);

/* ---- groups of subcommands (common.c) ---------------------------------- */

const struct cli_cmd *cli_group_find(const struct cli_group *g, const char *name);
int cli_group_help(const struct cli_ctx *ctx, const struct cli_group *g, bool to_stderr);
/* Parses the group's own options (-h) and runs the named or default command.
 * argv[0] is the group name (or the program name for qvm-pool...). */
int cli_group_run(const struct cli_ctx *ctx, const struct cli_group *g, int argc, char **argv);

/* ---- option parsing (common.c) ----------------------------------------- */

/* getopt_long in POSIX order, one argument at a time, so that options may
 * still follow operands (as in `resize VM:VOL SIZE -f`): operands are
 * collected into pos[], "--" ends the options, and "-" and negative numbers
 * are operands. */
struct cli_parse {
	int argc;
	char **argv;
	int idx;		/* next argument to look at */
	bool mid;		/* inside a group of short options ("-fv") */
	bool no_more;		/* after "--" */
	char **pos;		/* operands, borrowed from argv */
	int npos;
};

int cli_parse_init(struct cli_parse *p, int argc, char **argv);
void cli_parse_release(struct cli_parse *p);
/* Returns the next option character (or a long option's val), -1 when the
 * arguments are all read, or '?' after printing a usage error for @cmd. */
int cli_parse_next(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
		   const char *shortopts, const struct option *longopts);

/* ---- state (common.c) ---------------------------------------------- */

/* Opens the state (QP_STATE_WRITE when @write); prints the error itself. */
int cli_state_open(const struct cli_ctx *ctx, bool write, struct qp_state **out);
/* Saves the state; prints the error itself. */

/* ---- volumes (volume.c, volume_io.c) ---------------------------------- */

/* qp_vol_lookup that prints its error. */
int cli_vol_lookup(struct qp_state *st, const char *spec, struct qp_volume **out);
int cli_vol_import(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv);
int cli_vol_export(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv);
int cli_vol_clone(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv);
int cli_vol_clear(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv);

/* ---- tables (table.c) -------------------------------------------------- */

/* Rows of cells printed like `column -t`: each column padded to its widest
 * cell, two spaces between columns, no trailing spaces. */
struct cli_table {
	size_t ncols;
	size_t nrows;
	size_t cap;
	char **cells;		/* nrows * ncols, owned */
};

void cli_table_init(struct cli_table *t, size_t ncols);
/* Appends a row of ncols cells (copied; NULL prints as ""). 0 or -ENOMEM. */
int cli_table_add(struct cli_table *t, const char *const *cells);
int cli_table_addv(struct cli_table *t, ...);	/* ncols const char * arguments */
void cli_table_print(const struct cli_table *t);
void cli_table_release(struct cli_table *t);

/* ---- small helpers (common.c) ------------------------------------------ */

const char *cli_bool(bool b);	/* "True" / "False" */
/* Asks QUESTION [y/N] on the terminal; false when not confirmed.  Only call
 * when stdin is a terminal. */
bool cli_confirm(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Splits "k=v[,k=v...]" into @l.  Returns 0, -EINVAL (shape) or -ENOMEM. */
int cli_parse_kv(const char *arg, struct qp_kvlist *l, const char **bad);

#endif
