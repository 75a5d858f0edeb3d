/* qpool command line: the volume data commands import, export, clone and
 * clear. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OPT_SIZE = 0x100, OPT_NO_RESIZE };

/* ---- import ------------------------------------------------------------- */

/* Size of a regular file or block device, or -ENOTSUP for streams. */
static int input_size(int fd, uint64_t *size)
{
	struct stat s;

	if (fstat(fd, &s) < 0)
		return -errno;
	if (S_ISREG(s.st_mode)) {
		*size = (uint64_t)s.st_size;
		return 0;
	}
	if (S_ISBLK(s.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	return -ENOTSUP;
}

struct import_args {
	bool has_size;
	bool no_resize;
	uint64_t size;
};

static int import_run(struct qp_state *st, struct qp_volume *v, const char *path,
		      const struct import_args *a, const struct cli_ctx *ctx,
		      const struct cli_cmd *cmd)
{
	struct qp_err err = { 0 };
	unsigned flags = QP_IMPORT_RESIZE;
	uint64_t size = 0;
	int fd = STDIN_FILENO, r, ret;

	if (strcmp(path, "-")) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return cli_error("cannot open '%s': %s", path, strerror(errno));
	}
	r = input_size(fd, &size);
	if (a->has_size) {
		size = a->size;
	} else if (a->no_resize) {
		/* A stream is read for exactly the volume's size. */
		if (r < 0)
			size = v->size;
		flags = 0;
	} else if (r < 0) {
		if (!strcmp(path, "-"))
			ret = cli_usage(ctx, cmd, "the size of standard input is unknown; give --size");
		else
			ret = cli_usage(ctx, cmd, "the size of '%s' is unknown; give --size", path);
		goto out;
	}
	if (qp_vol_import(st, v, fd, size, flags, &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	if (fd != STDIN_FILENO)
		close(fd);
	return ret;
}

int cli_vol_import(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "no-resize", no_argument, NULL, OPT_NO_RESIZE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct import_args a = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "h", lo)) != -1) {
		switch (c) {
		case OPT_SIZE:
			if (qp_parse_size(optarg, &a.size) < 0) {
				ret = cli_usage(ctx, cmd, "invalid size '%s'", optarg);
				goto out;
			}
			a.has_size = true;
			break;
		case OPT_NO_RESIZE:
			a.no_resize = true;
			break;
		case 'h':
			ret = cli_help(ctx, cmd);
			goto out;
		default:
			ret = CLI_USAGE;
			goto out;
		}
	}
	if (p.npos != 2) {
		ret = cli_usage(ctx, cmd, p.npos < 2 ? "missing arguments" : "too many arguments");
		goto out;
	}
	if (a.has_size && a.no_resize) {
		ret = cli_usage(ctx, cmd, "--size and --no-resize exclude each other");
		goto out;
	}
	ret = cli_state_open(ctx, true, &st);
	if (!ret)
		ret = cli_vol_lookup(st, p.pos[0], &v);
	if (!ret)
		ret = import_run(st, v, p.pos[1], &a, ctx, cmd);
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* ---- export ------------------------------------------------------------- */

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static bool all_zero(const char *buf, size_t len)
{
	return !len || (!buf[0] && !memcmp(buf, buf + 1, len - 1));
}

/* Copies [off, end) of @in to @out.  @seek: the output is a regular file
 * where zero blocks become holes. */
static int copy_range(int in, int out, off_t off, off_t end, bool seek, char *buf, size_t bufsz)
{
	while (off < end) {
		size_t want = (size_t)(end - off) < bufsz ? (size_t)(end - off) : bufsz;
		ssize_t n = pread(in, buf, want, off);
		int r;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;	/* shorter than it was */
		if (seek && all_zero(buf, (size_t)n))
			r = lseek(out, n, SEEK_CUR) < 0 ? -errno : 0;
		else
			r = write_all(out, buf, (size_t)n);
		if (r < 0)
			return r;
		off += n;
	}
	return 0;
}

/* Copies @in to @out; holes of @in are skipped (@seek) or written as zeros. */
static int copy_sparse(int in, int out, off_t size, bool seek)
{
	size_t bufsz = 1 << 20;
	char *buf = malloc(bufsz);
	off_t off = 0, data, hole;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	while (off < size && r == 0) {
		data = lseek(in, off, SEEK_DATA);
		if (data < 0)
			data = errno == ENXIO ? size : off;	/* no SEEK_DATA: all data */
		hole = data < size ? lseek(in, data, SEEK_HOLE) : size;
		if (hole < 0 || hole > size)
			hole = size;
		if (data > off) {
			if (seek) {
				r = lseek(out, data - off, SEEK_CUR) < 0 ? -errno : 0;
			} else {
				memset(buf, 0, bufsz);
				for (off_t z = off; z < data && r == 0; z += (off_t)bufsz)
					r = write_all(out, buf,
						      (size_t)(data - z) < bufsz ? (size_t)(data - z)
										 : bufsz);
			}
		}
		if (r == 0)
			r = copy_range(in, out, data, hole, seek, buf, bufsz);
		off = hole;
	}
	/* Trailing holes: set the length of the file. */
	if (r == 0 && seek && ftruncate(out, size) < 0)
		r = -errno;
	free(buf);
	return r;
}

static int export_to(const char *src, const char *dst)
{
	bool to_stdout = !dst || !strcmp(dst, "-"), seek;
	int in = -1, out = STDOUT_FILENO, r, ret = CLI_FAIL;
	struct stat s, o;
	uint64_t size = 0;

	if (to_stdout && isatty(STDOUT_FILENO))
		return cli_error("refusing to write binary data to a terminal; give PATH or redirect");
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0 || fstat(in, &s) < 0) {
		cli_error("cannot open '%s': %s", src, strerror(errno));
		goto out;
	}
	if (!to_stdout) {
		out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (out < 0) {
			cli_error("cannot create '%s': %s", dst, strerror(errno));
			goto out;
		}
	}
	/* Holes are kept when the output is a regular file written from its
	 * start (a PATH, or a `>` redirection). */
	seek = fstat(out, &o) == 0 && S_ISREG(o.st_mode) && !(fcntl(out, F_GETFL) & O_APPEND) &&
	       lseek(out, 0, SEEK_CUR) == 0 && ftruncate(out, 0) == 0;
	/* a block device (an LVM volume) has no st_size: ask for its size */
	r = input_size(in, &size);
	if (r == 0)
		r = copy_sparse(in, out, (off_t)size, seek);
	if (r == 0 && !to_stdout && fsync(out) < 0)
		r = -errno;
	if (r < 0) {
		cli_error("cannot export to '%s': %s", to_stdout ? "standard output" : dst,
			  strerror(-r));
		goto out;
	}
	ret = CLI_OK;
out:
	if (in >= 0)
		close(in);
	if (out != STDOUT_FILENO && out >= 0 && close(out) < 0 && ret == CLI_OK)
		ret = cli_error("cannot write '%s': %s", dst, strerror(errno));
	return ret;
}

int cli_vol_export(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	char *path = NULL;
	int c, ret;

	if (cli_parse_init(&p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(&p, ctx, cmd, "h", lo)) != -1) {
		ret = c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
		goto out;
	}
	if (p.npos < 1 || p.npos > 2) {
		ret = cli_usage(ctx, cmd, p.npos < 1 ? "missing VM:VOLUME" : "too many arguments");
		goto out;
	}
	ret = cli_state_open(ctx, false, &st);
	if (!ret)
		ret = cli_vol_lookup(st, p.pos[0], &v);
	if (ret)
		goto out;
	if (qp_vol_export(v, &path, &err) < 0) {
		ret = cli_fail(&err);
		goto out;
	}
	ret = export_to(path, p.npos > 1 ? p.pos[1] : NULL);
out:
	free(path);
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

/* ---- clone, clear ------------------------------------------------------- */

/* Parses [-f] and @nvol VM:VOLUME operands, opens the state for writing and
 * looks the volumes up.  Returns -1 when the caller should go on. */
static int replace_begin(struct cli_parse *p, const struct cli_ctx *ctx,
			 const struct cli_cmd *cmd, int argc, char **argv, int nvol, bool *force,
			 struct qp_state **st, struct qp_volume **vols)
{
	static const struct option lo[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, i, ret;

	*st = NULL;
	*force = false;
	if (cli_parse_init(p, argc, argv) < 0)
		return cli_error("out of memory");
	while ((c = cli_parse_next(p, ctx, cmd, "fh", lo)) != -1) {
		if (c == 'f')
			*force = true;
		else
			return c == 'h' ? cli_help(ctx, cmd) : CLI_USAGE;
	}
	if (p->npos != nvol)
		return cli_usage(ctx, cmd, p->npos < nvol ? "missing arguments" : "too many arguments");
	ret = cli_state_open(ctx, true, st);
	for (i = 0; !ret && i < nvol; i++)
		ret = cli_vol_lookup(*st, p->pos[i], &vols[i]);
	return ret ? ret : -1;
}

/* Asks on a terminal; without one, -f is required. */
static int confirm(const struct cli_ctx *ctx, const struct cli_cmd *cmd, bool force,
		   const char *question, const char *what)
{
	if (force)
		return CLI_OK;
	if (!isatty(STDIN_FILENO)) {
		cli_usage(ctx, cmd, "refusing to %s without confirmation; use -f to confirm", what);
		return CLI_FAIL;
	}
	if (!cli_confirm("%s", question))
		return cli_error("aborted");
	return CLI_OK;
}

int cli_vol_clone(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_volume *vols[2];
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct cli_parse p;
	char q[256], what[128];
	bool force;
	int ret;

	ret = replace_begin(&p, ctx, cmd, argc, argv, 2, &force, &st, vols);
	if (ret >= 0)
		goto out;
	snprintf(q, sizeof(q), "Overwrite %s with %s?", p.pos[1], p.pos[0]);
	snprintf(what, sizeof(what), "overwrite '%s'", p.pos[1]);
	ret = confirm(ctx, cmd, force, q, what);
	if (ret)
		goto out;
	if (qp_vol_clone(st, vols[0], vols[1], &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}

int cli_vol_clear(const struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_volume *v;
	struct cli_parse p;
	char q[256], what[128];
	bool force;
	int ret;

	ret = replace_begin(&p, ctx, cmd, argc, argv, 1, &force, &st, &v);
	if (ret >= 0)
		goto out;
	snprintf(q, sizeof(q), "Clear %s? Its content will be replaced with zeros.", p.pos[0]);
	snprintf(what, sizeof(what), "clear '%s'", p.pos[0]);
	ret = confirm(ctx, cmd, force, q, what);
	if (ret)
		goto out;
	if (qp_vol_clear(st, v, &err) < 0)
		ret = cli_fail(&err);
	else
		ret = CLI_OK;
out:
	qp_state_free(st);
	cli_parse_release(&p);
	return ret;
}
