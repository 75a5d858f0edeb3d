/* qpool command line: `qpool backup` and `qpool restore` (also reachable as
 * qvm-backup and qvm-backup-restore). */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "backup/bk_backup.h"
#include "backup/bk_compress.h"
#include "backup/bk_restore.h"
#include "backup/bk_secure.h"
#include "backup/bk_tar.h"

#define PASS_MAX 4096

static const struct cli_cmd backup_cmd = {
	"backup", { NULL }, NULL,
	"[--passphrase-file F] [--compress | --no-compress] [-Z FILTER] [--exclude VM]... [--yes] "
	"DEST [VM...]",
	"back up VMs",
	"Writes an encrypted backup (format version 4) of the VMs, or of every VM\n"
	"included in backups, to DEST: a new file, or a folder in which\n"
	"qubes-YYYY-MM-DDTHHMMSS is created.  A running VM is backed up as of its\n"
	"last commit.\n\n"
	"options:\n"
	"  --passphrase-file F  read the passphrase from the first line of F ('-': stdin);\n"
	"                       otherwise it is asked twice on the terminal\n"
	"  --compress, -z       compress with gzip (the default)\n"
	"  --no-compress        do not compress\n"
	"  -Z, --compress-filter FILTER  gzip (default), zstd (both built in), or bzip2,\n"
	"                       pbzip2, xz, lzma (run as programs, much slower)\n"
	"  --compress-level N   compression level (default: gzip 1, zstd 3)\n"
	"  -x, --exclude VM     leave VM out (repeatable)\n"
	"  -y, --yes            do not ask for confirmation\n"
	"  --chunk-size SIZE    size of the encrypted chunks (default 1GiB, at most 4GiB;\n"
	"                       up to 1/16 more where that saves a chunk)\n"
	"  --kdf-time SECONDS   aim the scrypt key derivation at about SECONDS per chunk\n"
	"                       (default: N=2^20 r=8 p=1, as the scrypt tool picks)\n"
	"  --kdf-log-n N        scrypt cost log2(N) directly (tests use 10)\n"
	"  --no-scan-zeros      store blocks of zeros inside data extents as data\n"
	"                       (by default they become holes, as Qubes' tar writer does)\n"
	"  --threads N          compression threads (default: one per CPU)\n",
};

static const struct cli_cmd restore_cmd = {
	"restore", { NULL }, NULL,
	"[--passphrase-file F] [--verify-only] [--pool POOL] [--rename-conflicting | "
	"--skip-conflicting] [--exclude VM]... BACKUP [VM...]",
	"restore VMs from a backup",
	"Restores the VMs of BACKUP (all of them, or the ones named), templates first.\n"
	"Nothing is committed unless every chunk of the restored VMs verified.\n\n"
	"options:\n"
	"  --passphrase-file F   read the passphrase from the first line of F ('-': stdin)\n"
	"  --verify-only         check the whole backup; change nothing\n"
	"  -p, --pool POOL       pool for the restored volumes (default: the default pool)\n"
	"  --rename-conflicting  restore a VM whose name is taken under a new name\n"
	"  --skip-conflicting    leave out VMs whose name is taken\n"
	"  -x, --exclude VM      leave VM out (repeatable)\n"
	"  --kdf-max-log-n N     accept scrypt parameters up to log2(N) = N (default 22)\n",
};

/* ---- passphrases ------------------------------------------------------------- */

/* Reads one line (without its newline, or CR LF) from @fd into secure memory. */
static int read_line(int fd, char **out, size_t *len)
{
	char *p = bk_secure_alloc(PASS_MAX + 1);
	size_t n = 0;

	if (!p)
		return -ENOMEM;
	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			bk_secure_free(p);
			return -errno;
		}
		if (r == 0 || c == '\n')
			break;
		if (n == PASS_MAX) {
			bk_secure_free(p);
			return -EFBIG;
		}
		p[n++] = c;
	}
	if (n > 0 && p[n - 1] == '\r')
		p[--n] = '\0';
	*out = p;
	*len = n;
	return 0;
}

static int ask(int tty, const char *prompt, char **out, size_t *len)
{
	struct termios old, raw;
	int r;

	if (write(tty, prompt, strlen(prompt)) < 0)
		return -errno;
	if (tcgetattr(tty, &old) < 0)
		return -errno;
	raw = old;
	raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	raw.c_lflag |= ICANON;
	tcsetattr(tty, TCSAFLUSH, &raw);
	r = read_line(tty, out, len);
	tcsetattr(tty, TCSAFLUSH, &old);
	if (write(tty, "\n", 1) < 0) {
		/* nothing to do: only the prompt's look suffers */
	}
	return r;
}

/* The passphrase from --passphrase-file, else from the terminal (twice when
 * @confirm).  Returns 0 or CLI_FAIL (message printed). */
static int get_pass(const char *file, bool confirm, char **out, size_t *len)
{
	char *again = NULL;
	size_t alen = 0;
	int fd, r;

	if (file) {
		fd = strcmp(file, "-") ? open(file, O_RDONLY | O_CLOEXEC) : 0;
		if (fd < 0)
			return cli_error("cannot open '%s': %s", file, strerror(errno));
		r = read_line(fd, out, len);
		if (fd > 0)
			close(fd);
		if (r < 0)
			return cli_error("cannot read the passphrase from '%s': %s", file, strerror(-r));
		return 0;
	}
	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return cli_error("no terminal to ask the passphrase on; use --passphrase-file");
	r = ask(fd, "Please enter passphrase: ", out, len);
	if (r == 0 && confirm) {
		r = ask(fd, "Please confirm passphrase: ", &again, &alen);
		if (r == 0 && (alen != *len || memcmp(again, *out, alen))) {
			bk_secure_free(again);
			bk_secure_free(*out);
			*out = NULL;
			close(fd);
			return cli_error("the passphrases do not match");
		}
		bk_secure_free(again);
	}
	close(fd);
	if (r < 0)
		return cli_error("cannot read the passphrase: %s", strerror(-r));
	if (*len == 0) {
		bk_secure_free(*out);
		*out = NULL;
		return cli_error("empty passphrase");
	}
	return 0;
}

/* ---- progress ----------------------------------------------------------------- */

struct progress {
	struct timespec start;
	double last;
	bool shown;
};

static double elapsed(const struct progress *p)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - p->start.tv_sec) + (now.tv_nsec - p->start.tv_nsec) / 1e9;
}

static void show(struct progress *p, uint64_t done, uint64_t total)
{
	double t = elapsed(p), rate = t > 0 ? done / t : 0;

	if (t - p->last < 0.25 && done < total)
		return;
	p->last = t;
	p->shown = true;
	if (rate > 0 && total > done)
		fprintf(stderr, "\r%8.1f / %.1f MiB  %7.1f MB/s  %5.0f s left ", done / 1048576.0,
			total / 1048576.0, rate / 1e6, (total - done) / rate);
	else
		fprintf(stderr, "\r%8.1f / %.1f MiB  %7.1f MB/s             ", done / 1048576.0,
			total / 1048576.0, rate / 1e6);
}

static void backup_progress(void *ctx, uint64_t in, uint64_t total, uint64_t out)
{
	(void)out;
	show(ctx, in > total ? total : in, total);
}

static void restore_progress(void *ctx, uint64_t done, uint64_t total)
{
	show(ctx, done, total);
}

static void note(void *ctx, const char *msg)
{
	struct progress *p = ctx;

	if (p && p->shown)
		fputc('\n', stderr);
	fprintf(stderr, "qpool: %s\n", msg);
}

/* ---- backup ---------------------------------------------------------------------- */

/* scrypt's log2(N) for about @secs seconds: times N = 2^14 and scales. */
static int kdf_for_time(double secs, int *log_n)
{
	struct bk_scrypt_params pr = { .log_n = 14, .r = 8, .p = 1 };
	struct bk_scrypt_key *key = NULL;
	struct qp_err err = { 0 };
	struct progress t;
	double base;

	clock_gettime(CLOCK_MONOTONIC, &t.start);
	if (bk_scrypt_derive("x", 1, &pr, NULL, &key, &err) < 0)
		return cli_fail(&err);
	bk_scrypt_key_free(key);
	base = elapsed(&t);
	*log_n = 14;
	while (*log_n < 22 && base * 2 <= secs) {
		base *= 2;
		(*log_n)++;
	}
	while (*log_n > 10 && base > secs) {
		base /= 2;
		(*log_n)--;
	}
	return 0;
}

static int push(char ***v, size_t *n, char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[(*n)++] = s;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	return qp_parse_size(s, out) < 0 ? -EINVAL : 0;
}

int cli_backup_main(const struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "compress", no_argument, NULL, 'z' },
		{ "no-compress", no_argument, NULL, 'n' },
		{ "compress-filter", required_argument, NULL, 'Z' },
		{ "compress-level", required_argument, NULL, 'L' },
		{ "exclude", required_argument, NULL, 'x' },
		{ "yes", no_argument, NULL, 'y' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ "kdf-time", required_argument, NULL, 'T' },
		{ "kdf-log-n", required_argument, NULL, 'N' },
		{ "no-scan-zeros", no_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bk_backup_opts o = { .compress = true, .kdf = bk_scrypt_params_default(),
				    .sparse_flags = BK_SPARSE_SCAN_ZEROS };
	struct bk_backup_result res = { 0 };
	struct progress prog = { 0 };
	struct qp_err err = { 0 };
	const char *pfile = NULL;
	char **excl = NULL, *pass = NULL;
	size_t nexcl = 0, plen = 0;
	bool yes = false;
	enum bk_filter filt;
	struct qp_err ferr = { 0 };
	long long v;
	double secs;
	int c, ret = CLI_USAGE;
	struct cli_parse p;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, &backup_cmd, "P:znZ:L:x:yc:T:N:st:h", lo)) != -1) {
		switch (c) {
		case 'P': pfile = optarg; break;
		case 'z': o.compress = true; break;
		case 'n': o.compress = false; break;
		case 'Z':
			if (bk_filter_lookup(optarg, &filt, &ferr) < 0 || !strcmp(optarg, "none")) {
				ret = cli_usage(ctx, &backup_cmd, "unknown compression filter '%s' (gzip, zstd, bzip2, xz...)", optarg);
				goto out;
			}
			if (filt == BK_FILTER_EXTERNAL && bk_filter_check(optarg, &ferr) < 0) {
				ret = cli_error("%s", ferr.msg);
				goto out;
			}
			o.filter = optarg;
			o.compress = true;
			break;
		case 'L':
			if (qp_parse_int(optarg, 1, 19, &v) < 0) {
				ret = cli_usage(ctx, &backup_cmd, "invalid level '%s'", optarg);
				goto out;
			}
			o.level = (int)v;
			break;
		case 'x':
			if (push(&excl, &nexcl, optarg) < 0) {
				ret = cli_error("out of memory");
				goto out;
			}
			break;
		case 'y': yes = true; break;
		case 'c':
			if (parse_u64(optarg, &o.chunk_size) < 0 || o.chunk_size < 4096 ||
			    o.chunk_size > (4ULL << 30)) {
				ret = cli_usage(ctx, &backup_cmd, "invalid chunk size '%s' (4KiB to 4GiB)", optarg);
				goto out;
			}
			break;
		case 'T':
			secs = strtod(optarg, NULL);
			if (!(secs > 0 && secs < 3600)) {
				ret = cli_usage(ctx, &backup_cmd, "invalid time '%s'", optarg);
				goto out;
			}
			ret = kdf_for_time(secs, &o.kdf.log_n);
			if (ret)
				goto out;
			break;
		case 'N':
			if (qp_parse_int(optarg, 1, 30, &v) < 0) {
				ret = cli_usage(ctx, &backup_cmd, "invalid log2(N) '%s'", optarg);
				goto out;
			}
			o.kdf.log_n = (int)v;
			break;
		case 's': o.sparse_flags &= ~(unsigned)BK_SPARSE_SCAN_ZEROS; break;
		case 't':
			if (qp_parse_int(optarg, 1, 64, &v) < 0) {
				ret = cli_usage(ctx, &backup_cmd, "invalid thread count '%s'", optarg);
				goto out;
			}
			o.workers = (int)v;
			break;
		case 'h': ret = cli_help(ctx, &backup_cmd); goto out;
		default: ret = CLI_USAGE; goto out;
		}
	}
	if (p.npos < 1) {
		ret = cli_usage(ctx, &backup_cmd, "missing DEST");
		goto out;
	}
	o.dest = p.pos[0];
	o.vms = p.pos + 1;
	o.n_vms = (size_t)p.npos - 1;
	o.exclude = excl;
	o.n_exclude = nexcl;
	if (!yes && isatty(0) && !cli_confirm("back up %s to '%s'?",
					      o.n_vms ? "the VMs named" : "every VM included in backups",
					      o.dest)) {
		ret = cli_error("cancelled");
		goto out;
	}
	ret = get_pass(pfile, true, &pass, &plen);
	if (ret)
		goto out;
	o.pass = pass;
	o.passlen = plen;
	clock_gettime(CLOCK_MONOTONIC, &prog.start);
	if (isatty(2)) {
		o.progress = backup_progress;
		o.progress_ctx = &prog;
	}
	if (bk_backup_run(qp_default_root(ctx->root), &o, &res, &err) < 0) {
		if (prog.shown)
			fputc('\n', stderr);
		ret = cli_fail(&err);
		goto out;
	}
	secs = elapsed(&prog);
	if (prog.shown)
		fputc('\n', stderr);
	/* The rate counts what was read (the data, not the holes). */
	printf("backed up %u VM%s (%.1f MiB of volumes, %.1f MiB of data) to '%s': %.1f MiB, %u chunks, %.1f s, %.1f MB/s\n",
	       res.n_vms, res.n_vms == 1 ? "" : "s", res.total / 1048576.0,
	       res.in_bytes / 1048576.0, res.path, res.out_bytes / 1048576.0, res.chunks, secs,
	       secs > 0 ? res.in_bytes / secs / 1e6 : 0);
	ret = CLI_OK;
out:
	bk_backup_result_release(&res);
	bk_secure_free(pass);
	free(excl);
	cli_parse_release(&p);
	return ret;
}

/* ---- restore ------------------------------------------------------------------ */

int cli_restore_main(const struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "verify-only", no_argument, NULL, 'v' },
		{ "pool", required_argument, NULL, 'p' },
		{ "rename-conflicting", no_argument, NULL, 'r' },
		{ "skip-conflicting", no_argument, NULL, 's' },
		{ "exclude", required_argument, NULL, 'x' },
		{ "kdf-max-log-n", required_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bk_restore_opts o = { .limits = bk_scrypt_limits_default() };
	struct bk_restore_result res = { 0 };
	struct progress prog = { 0 };
	struct qp_err err = { 0 };
	const char *pfile = NULL;
	char **excl = NULL, *pass = NULL;
	size_t nexcl = 0, plen = 0;
	long long v;
	double secs;
	int c, ret = CLI_USAGE;
	struct cli_parse p;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, &restore_cmd, "P:vp:rsx:N:h", lo)) != -1) {
		switch (c) {
		case 'P': pfile = optarg; break;
		case 'v': o.verify_only = true; break;
		case 'p': o.pool = optarg; break;
		case 'r':
		case 's':
			if (o.conflict != BK_CONFLICT_FAIL) {
				ret = cli_usage(ctx, &restore_cmd, "--rename-conflicting and --skip-conflicting exclude each other");
				goto out;
			}
			o.conflict = c == 'r' ? BK_CONFLICT_RENAME : BK_CONFLICT_SKIP;
			break;
		case 'x':
			if (push(&excl, &nexcl, optarg) < 0) {
				ret = cli_error("out of memory");
				goto out;
			}
			break;
		case 'N':
			if (qp_parse_int(optarg, 1, 40, &v) < 0) {
				ret = cli_usage(ctx, &restore_cmd, "invalid log2(N) '%s'", optarg);
				goto out;
			}
			o.limits.max_log_n = (int)v;
			o.limits.max_mem = UINT64_MAX;
			o.limits.max_work = UINT64_MAX;
			break;
		case 'h': ret = cli_help(ctx, &restore_cmd); goto out;
		default: ret = CLI_USAGE; goto out;
		}
	}
	if (p.npos < 1) {
		ret = cli_usage(ctx, &restore_cmd, "missing BACKUP");
		goto out;
	}
	o.path = p.pos[0];
	o.vms = p.pos + 1;
	o.n_vms = (size_t)p.npos - 1;
	o.exclude = excl;
	o.n_exclude = nexcl;
	ret = get_pass(pfile, false, &pass, &plen);
	if (ret)
		goto out;
	o.pass = pass;
	o.passlen = plen;
	clock_gettime(CLOCK_MONOTONIC, &prog.start);
	if (isatty(2)) {
		o.progress = restore_progress;
		o.progress_ctx = &prog;
	}
	o.note = note;
	o.note_ctx = &prog;
	if (bk_restore_run(qp_default_root(ctx->root), &o, &res, &err) < 0) {
		if (prog.shown)
			fputc('\n', stderr);
		ret = cli_fail(&err);
		goto out;
	}
	secs = elapsed(&prog);
	if (prog.shown)
		fputc('\n', stderr);
	/* The rate counts what was read (the archive, not the holes). */
	printf("%s %u VM%s (%.1f MiB of volumes) from '%s': %.1f MiB, %u chunks, %.1f s, %.1f MB/s\n",
	       o.verify_only ? "verified" : "restored", res.n_vms, res.n_vms == 1 ? "" : "s",
	       res.vol_bytes / 1048576.0, o.path, res.archive_bytes / 1048576.0, res.chunks, secs,
	       secs > 0 ? res.archive_bytes / secs / 1e6 : 0);
	ret = res.missing ? CLI_FAIL : CLI_OK;
out:
	bk_secure_free(pass);
	free(excl);
	cli_parse_release(&p);
	return ret;
}
