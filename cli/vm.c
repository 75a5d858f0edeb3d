/* qpool command line: `qpool vm`, the VM manager's side: create, start,
 * stop, remove, list. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct option help_only[] = {
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Parses -h and expects one NAME operand.  Returns -1 when the caller
 * should go on. */
static int parse_name(struct cli_parse *p, const struct cli_ctx *ctx, const struct cli_cmd *cmd,
		      int argc, char **argv)
{
	int c;

	if (cli_parse_init(p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(p, ctx, cmd, "h", help_only)) != -1)
		return c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
	if (p->npos != 1)
		return cli_usage(ctx, cmd, p->npos ? "too many arguments" : "missing NAME");
	if (!qp_name_valid(p->pos[0]))
		return cli_error("invalid VM name '%s'", p->pos[0]);
	return -1;
}

static int vm_create(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "class", required_argument, NULL, 'C' },
		{ "template", required_argument, NULL, 't' },
		{ "label", required_argument, NULL, 'l' },
		{ "pool", required_argument, NULL, 'P' },
		{ "owner", required_argument, NULL, 'o' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qp_vm_spec spec = { .cls = QP_APPVM };
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "C:t:l:P:o:k:h", lo)) != -1) {
		switch (c) {
		case 'C':
			if (qp_class_parse(optarg, &spec.cls) < 0 || spec.cls == QP_ADMINVM) {
				ret = cli_usage(ctx, cmd, "unknown class '%s' (TemplateVM, StandaloneVM, AppVM, DispVM)",
						optarg);
				goto out;
			}
			break;
		case 't':
			spec.template_name = optarg;
			break;
		case 'l':
			spec.label = optarg;
			break;
		case 'P':
			spec.pool = optarg;
			break;
		case 'o':
			spec.owner = optarg;
			break;
		case 'k':
			spec.kernel = optarg;
			break;
		case 'h':
			ret = cli_help(ctx, cmd);
			goto out;
		default:
			ret = CLI_USAGE;
			goto out;
		}
	}
	if (p.npos != 1) {
		ret = cli_usage(ctx, cmd, p.npos ? "too many arguments" : "missing NAME");
		goto out;
	}
	spec.name = p.pos[0];
	if ((spec.cls == QP_APPVM || spec.cls == QP_DISPVM) && !spec.template_name) {
		ret = cli_usage(ctx, cmd, "an %s needs --template", qp_class_name(spec.cls));
		goto out;
	}
	if (!qp_name_valid(spec.name)) {
		ret = cli_error("invalid VM name '%s'", spec.name);
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_create(st, &spec, &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vm_set_owner(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
			char **argv)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "h", help_only)) != -1) {
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	if (p.npos != 2) {
		ret = cli_usage(ctx, cmd, p.npos > 2 ? "too many arguments" : "missing NAME or OWNER");
		goto out;
	}
	if (!qp_name_valid(p.pos[0])) {
		ret = cli_error("invalid VM name '%s'", p.pos[0]);
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_set_owner(st, p.pos[0], p.pos[1], &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vm_set_kernel(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc,
			 char **argv)
{
	static const struct option lo[] = {
		{ "default", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	bool dflt = false;
	int want;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "h", lo)) != -1) {
		if (c == 'd') {
			dflt = true;
			continue;
		}
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	want = dflt ? 1 : 2;
	if (p.npos != want) {
		ret = cli_usage(ctx, cmd, p.npos > want ? "too many arguments"
				: dflt ? "missing VERSION" : "missing NAME or VERSION");
		goto out;
	}
	if (!dflt && !qp_name_valid(p.pos[0])) {
		ret = cli_error("invalid VM name '%s'", p.pos[0]);
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_set_kernel(st, dflt ? NULL : p.pos[0], p.pos[want - 1], &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vm_start(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_attach *att = NULL;
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	size_t n = 0, i;
	int ret;

	ret = parse_name(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_start(st, p.pos[0], &att, &n, &err) < 0) {
		ret = cli_fail(&err);
		goto out;
	}
	ret = CLI_OK;
	for (i = 0; i < n; i++)
		printf("%s %s %s\n", att[i].volume, att[i].path, att[i].rw ? "rw" : "ro");
out:
	qp_attach_free(att, n);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vm_stop(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	unsigned flags = 0;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "fh", lo)) != -1) {
		if (c == 'f') {
			flags |= QP_STOP_FORCE;
			continue;
		}
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	if (p.npos != 1) {
		ret = cli_usage(ctx, cmd, p.npos ? "too many arguments" : "missing NAME");
		goto out;
	}
	if (!qp_name_valid(p.pos[0])) {
		ret = cli_error("invalid VM name '%s'", p.pos[0]);
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_stop(st, p.pos[0], flags, &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int vm_remove(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	int ret;

	ret = parse_name(&p, ctx, cmd, argc, argv);
	if (ret >= 0)
		goto out;
	ret = cli_state_open(ctx, true, &st);
	if (ret)
		goto out;
	if (qp_vm_remove(st, p.pos[0], &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

static int dom_cmp(const void *a, const void *b)
{
	return strcmp((*(struct qp_domain *const *)a)->name, (*(struct qp_domain *const *)b)->name);
}

static int vm_list(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_domain **doms = NULL;
	struct qp_state *st = NULL;
	struct cli_table t;
	struct cli_parse p;
	size_t i, n = 0;
	int c, ret;

	cli_table_init(&t, 4);
	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "h", help_only)) != -1) {
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	if (p.npos) {
		ret = cli_usage(ctx, cmd, "unexpected argument '%s'", p.pos[0]);
		goto out;
	}
	ret = cli_state_open(ctx, false, &st);
	if (ret)
		goto out;
	doms = calloc(st->n_doms + 1, sizeof(*doms));
	if (!doms) {
		ret = cli_error("out of memory");
		goto out;
	}
	for (i = 0; i < st->n_doms; i++)
		if (st->doms[i]->cls != QP_ADMINVM)
			doms[n++] = st->doms[i];
	qsort(doms, n, sizeof(*doms), dom_cmp);
	ret = CLI_FAIL;
	if (cli_table_addv(&t, "NAME", "CLASS", "TEMPLATE", "STATE") < 0)
		goto oom;
	for (i = 0; i < n; i++) {
		const char *tpl = qp_dom_prop(doms[i], "template");

		if (cli_table_addv(&t, doms[i]->name, qp_class_name(doms[i]->cls),
				   tpl && tpl[0] ? tpl : "-",
				   qp_dom_started(doms[i]) ? "Running" : "Halted") < 0)
			goto oom;
	}
	cli_table_print(&t);
	ret = CLI_OK;
	goto out;
oom:
	ret = cli_error("out of memory");
out:
	free(doms);
	cli_table_release(&t);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

#define HELP_ONLY "\noptions:\n  -h, --help  show this help and exit\n"

static const struct cli_cmd vm_cmds[] = {
	{ "create", { NULL }, vm_create,
	  "[--class CLASS] [--template TEMPLATE] [--label LABEL] [-P POOL] [--owner UID[:GID]]\n"
	  "       [--kernel VERSION] NAME",
	  "create a VM and its volumes",
	  "\nCreates VM NAME with the volumes of its class: a TemplateVM or StandaloneVM\n"
	  "gets its own root and private, an AppVM a snapshot of its template's root and its\n"
	  "own private, a DispVM snapshots of its template's root and private; every VM gets\n"
	  "a volatile volume.  When the VM has a kernel (--kernel, else its template's,\n"
	  "else the default kernel) and a pool of driver linux-kernel exists, it also gets\n"
	  "a read-only kernel volume in that pool (default_pool_kernel, else the only one).\n"
	  "\noptions:\n"
	  "  --class CLASS        TemplateVM, StandaloneVM, AppVM (default) or DispVM\n"
	  "  --template TEMPLATE  template VM (required for AppVM and DispVM)\n"
	  "  --label LABEL        label colour (default red, black for templates)\n"
	  "  -P, --pool POOL      pool of the new volumes (default: the default pool)\n"
	  "  --owner UID[:GID]    owner of the VM's files under qpoold (default: root;\n"
	  "                       GID defaults to UID's primary group)\n"
	  "  --kernel VERSION     kernel version, installed in the kernel pool (\"\" for none)\n"
	  "  -h, --help           show this help and exit\n" },
	{ "set-kernel", { NULL }, vm_set_kernel, "NAME VERSION | --default VERSION",
	  "set the kernel of a halted VM, or the default kernel",
	  "\nSets the kernel version of halted VM NAME (\"\" for none) and the vid of its\n"
	  "kernel volume, which is added when the VM has none.  The kernel must be\n"
	  "installed in the kernel pool (a folder VERSION with a vmlinuz).  With --default,\n"
	  "sets the default kernel of VMs created later without --kernel.\n"
	  "\noptions:\n"
	  "  --default   set the default kernel instead of a VM's\n"
	  "  -h, --help  show this help and exit\n" },
	{ "set-owner", { NULL }, vm_set_owner, "NAME UID[:GID]|none",
	  "set or clear the owner of a VM's files",
	  "\nSets the owner of VM NAME's folder and volume files in qpoold's tree (mode\n"
	  "0700, files 0600 or 0400), or with 'none' gives them back to root.  The change\n"
	  "shows in a running qpoold at once.\n" HELP_ONLY },
	{ "start", { NULL }, vm_start, "NAME", "start a VM's volumes",
	  "\nPrepares every volume of VM NAME and prints one line per volume:\n"
	  "VOLUME PATH rw|ro, the path to attach.\n" HELP_ONLY },
	{ "stop", { NULL }, vm_stop, "[--force] NAME", "stop a VM's volumes",
	  "\nCommits the volumes saved on stop and discards the others.  A volume that\n"
	  "fails to stop leaves the VM marked running, so that stopping again finishes.\n"
	  "\noptions:\n"
	  "  -f, --force  stop even if a volume file is open through qpoold (without it,\n"
	  "               the stop is refused with \"volume 'VM:VOL' is in use\")\n"
	  "  -h, --help   show this help and exit\n" },
	{ "remove", { "rm", NULL }, vm_remove, "NAME", "remove a halted VM and its volumes",
	  "\nRefused while the VM runs or while other VMs use it as their template.\n" HELP_ONLY },
	{ "list", { "ls", NULL }, vm_list, "", "list VMs with class, template and state",
	  HELP_ONLY },
	{ NULL, { NULL }, NULL, NULL, NULL, NULL },
};

const struct cli_group cli_vm_group = {
	.name = "vm",
	.summary = "Create, start, stop, remove and list VMs.",
	.cmds = vm_cmds,
	.default_cmd = NULL,
};
