/* Drives backup/bk_tar and backup/bk_compress from shell tests.
 *
 *	bk_tar_tool outer-write DIR NAME...	outer archive of DIR/NAME... on stdout
 *	bk_tar_tool outer-list [LIMIT]		"NAME SIZE" per member of stdin
 *	bk_tar_tool outer-extract DIR		extracts stdin's members into DIR
 *	bk_tar_tool inner-write [-z] [-f FILTER] [-b BLOCK] IMAGE NAME
 *						inner stream (sparse entry) on stdout;
 *						-z: zero blocks become holes too
 *	bk_tar_tool inner-write-file [-f FILTER] FILE NAME
 *	bk_tar_tool inner-read [-f FILTER] LIMIT OUTFILE
 *						extracts the first inner entry of stdin,
 *						prints "NAME REALSIZE"
 *	bk_tar_tool compress FILTER [BLOCK]	stdin to stdout in independent blocks
 *	bk_tar_tool decompress FILTER [LIMIT]	stdin to stdout
 *	bk_tar_tool filter NAME [-d]		runs the external filter NAME
 */
#include "backup/bk_compress.h"
#include "backup/bk_tar.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct qp_err err;

static uint64_t size_arg(const char *s)
{
	uint64_t n;

	if (qp_parse_size(s, &n) < 0) {
		fprintf(stderr, "bk_tar_tool: bad size '%s'\n", s);
		exit(2);
	}
	return n;
}

static int fail(int ret)
{
	fprintf(stderr, "bk_tar_tool: %s (%d)\n", err.msg, ret);
	return 1;
}

/* ---- a sink that compresses in independent blocks ---- */

struct block_sink {
	enum bk_filter f;
	size_t block;
	struct bk_buf in, out;
	struct bk_out *next;
};

static int block_flush(struct block_sink *s, struct qp_err *e)
{
	int ret;

	if (s->in.len == 0)
		return 0;
	s->out.len = 0;
	ret = bk_compress_block(s->f, 0, s->in.data, s->in.len, &s->out, e);
	if (ret == 0)
		ret = bk_out_write(s->next, s->out.data, s->out.len, e);
	s->in.len = 0;
	return ret;
}

static int block_write(void *ctx, const void *buf, size_t len, struct qp_err *e)
{
	struct block_sink *s = ctx;
	const uint8_t *p = buf;
	int ret;

	while (len > 0) {
		size_t k = s->block - s->in.len;

		if (k > len)
			k = len;
		if (bk_buf_reserve(&s->in, k) < 0)
			return qp_err_set(e, -ENOMEM, "out of memory");
		memcpy(s->in.data + s->in.len, p, k);
		s->in.len += k;
		p += k;
		len -= k;
		if (s->in.len == s->block && (ret = block_flush(s, e)) < 0)
			return ret;
	}
	return 0;
}

static int parse_filter(const char *name, enum bk_filter *f)
{
	int ret = bk_filter_lookup(name, f, &err);

	if (ret == 0 && *f == BK_FILTER_EXTERNAL)
		ret = qp_err_set(&err, -EINVAL, "filter '%s' is external", name);
	return ret;
}

/* ---- subcommands ---- */

static int outer_write(int argc, char **argv)
{
	struct bk_out out;
	char buf[65536];

	bk_out_init_fd(&out, 1);
	for (int i = 1; i < argc; i++) {
		char *path = qp_strdupf("%s/%s", argv[0], argv[i]);
		int fd = open(path, O_RDONLY), ret;
		struct stat st;
		ssize_t n;

		free(path);
		if (fd < 0 || fstat(fd, &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		ret = bk_tar_member_begin(&out, argv[i], st.st_size, st.st_mtime, &err);
		while (ret == 0 && (n = read(fd, buf, sizeof(buf))) > 0)
			ret = bk_out_write(&out, buf, n, &err);
		if (ret == 0)
			ret = bk_tar_member_end(&out, st.st_size, &err);
		close(fd);
		if (ret < 0)
			return fail(ret);
	}
	return 0;
}

static int outer_read(const char *dir, uint64_t limit)
{
	struct bk_in in;
	struct bk_tar_reader *r;
	struct bk_tar_entry e;
	int ret;

	bk_in_init_fd(&in, 0);
	ret = bk_tar_reader_new(&in, BK_TAR_OUTER, limit, &r, &err);
	if (ret < 0)
		return fail(ret);
	while ((ret = bk_tar_next(r, &e, &err)) > 0) {
		printf("%s %" PRIu64 "\n", e.name, e.size);
		if (dir) {
			char *path = qp_strdupf("%s/%s", dir, e.name), *slash;
			int fd;

			for (slash = strchr(path + strlen(dir) + 1, '/'); slash;
			     slash = strchr(slash + 1, '/')) {
				*slash = '\0';
				mkdir(path, 0755);
				*slash = '/';
			}
			fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			free(path);
			if (fd < 0) {
				perror(e.name);
				ret = -errno;
				break;
			}
			ret = bk_tar_extract(r, fd, &err);
			close(fd);
			if (ret < 0)
				break;
		}
	}
	bk_tar_reader_free(r);
	return ret < 0 ? fail(ret) : 0;
}

static int inner_write(int argc, char **argv, int file)
{
	struct block_sink s = { .f = BK_FILTER_NONE, .block = 1024 * 1024 };
	struct bk_out fdout, out = { .write = block_write, .ctx = &s };
	unsigned flags = 0;
	int opt, fd, ret;

	while ((opt = getopt(argc, argv, "zf:b:")) != -1) {
		if (opt == 'z')
			flags |= BK_SPARSE_SCAN_ZEROS;
		else if (opt == 'f' && parse_filter(optarg, &s.f) < 0)
			return fail(err.code);
		else if (opt == 'b')
			s.block = size_arg(optarg);
		else if (opt != 'f')
			return 2;
	}
	if (argc - optind != 2)
		return 2;
	bk_out_init_fd(&fdout, 1);
	s.next = &fdout;
	fd = open(argv[optind], O_RDONLY);
	if (fd < 0) {
		perror(argv[optind]);
		return 1;
	}
	if (file) {
		struct stat st;
		char *data;

		fstat(fd, &st);
		data = malloc(st.st_size + 1);
		if (read(fd, data, st.st_size) != st.st_size)
			return 1;
		ret = bk_inner_write_file(&out, argv[optind + 1], data, st.st_size, st.st_mtime,
					  &err);
		free(data);
	} else {
		ret = bk_inner_write_sparse(&out, fd, argv[optind + 1], 1700000000, flags, &err);
	}
	if (ret == 0)
		ret = block_flush(&s, &err);
	close(fd);
	bk_buf_release(&s.in);
	bk_buf_release(&s.out);
	return ret < 0 ? fail(ret) : 0;
}

struct decomp_src {
	struct bk_decomp *d;
	struct bk_in *src;
};

static ssize_t decomp_read(void *ctx, void *buf, size_t len, struct qp_err *e)
{
	struct decomp_src *s = ctx;

	return bk_decomp_read(s->d, s->src, buf, len, e);
}

static int inner_read(int argc, char **argv)
{
	enum bk_filter f = BK_FILTER_NONE;
	struct bk_in fdin, in;
	struct decomp_src ds = { .src = &fdin };
	struct bk_tar_reader *r = NULL;
	struct bk_tar_entry e;
	int opt, fd, ret;

	while ((opt = getopt(argc, argv, "f:")) != -1)
		if (opt != 'f' || parse_filter(optarg, &f) < 0)
			return opt == 'f' ? fail(err.code) : 2;
	if (argc - optind != 2)
		return 2;
	bk_in_init_fd(&fdin, 0);
	ret = bk_decomp_new(f, UINT64_MAX, &ds.d, &err);
	if (ret < 0)
		return fail(ret);
	in = (struct bk_in){ .read = decomp_read, .ctx = &ds };
	fd = open(argv[optind + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror(argv[optind + 1]);
		return 1;
	}
	ret = bk_tar_reader_new(&in, BK_TAR_INNER, size_arg(argv[optind]), &r, &err);
	if (ret == 0)
		ret = bk_tar_next(r, &e, &err);
	if (ret == 0)
		ret = qp_err_set(&err, -ENOENT, "no entry");
	if (ret > 0) {
		printf("%s %" PRIu64 "\n", e.name, e.realsize);
		ret = bk_tar_extract(r, fd, &err);
	}
	if (ret == 0)
		ret = bk_tar_next(r, &e, &err) > 0 ? qp_err_set(&err, -EBADMSG, "extra entry") : 0;
	close(fd);
	bk_tar_reader_free(r);
	bk_decomp_free(ds.d);
	return ret < 0 ? fail(ret) : 0;
}

static int compress(int argc, char **argv)
{
	struct block_sink s = { .block = argc > 1 ? size_arg(argv[1]) : 1 << 20 };
	struct bk_out fdout, out = { .write = block_write, .ctx = &s };
	char buf[65536];
	ssize_t n;
	int ret = 0;

	if (argc < 1 || parse_filter(argv[0], &s.f) < 0 || s.block == 0)
		return argc < 1 ? 2 : fail(err.code);
	bk_out_init_fd(&fdout, 1);
	s.next = &fdout;
	while (ret == 0 && (n = read(0, buf, sizeof(buf))) > 0)
		ret = bk_out_write(&out, buf, n, &err);
	if (ret == 0)
		ret = block_flush(&s, &err);
	bk_buf_release(&s.in);
	bk_buf_release(&s.out);
	return ret < 0 ? fail(ret) : 0;
}

static int decompress(int argc, char **argv)
{
	enum bk_filter f;
	struct bk_decomp *d;
	struct bk_out out;
	char buf[65536];
	ssize_t n;
	int ret;

	if (argc < 1 || parse_filter(argv[0], &f) < 0)
		return argc < 1 ? 2 : fail(err.code);
	ret = bk_decomp_new(f, argc > 1 ? size_arg(argv[1]) : UINT64_MAX, &d, &err);
	if (ret < 0)
		return fail(ret);
	bk_out_init_fd(&out, 1);
	while (ret == 0 && (n = read(0, buf, sizeof(buf))) > 0)
		ret = bk_decomp_update(d, buf, n, &out, &err);
	if (ret == 0)
		ret = bk_decomp_finish(d, &err);
	bk_decomp_free(d);
	return ret < 0 ? fail(ret) : 0;
}

static int filter(int argc, char **argv)
{
	const char *av[4];
	struct bk_child c;
	int ret;

	if (argc < 1)
		return 2;
	ret = bk_filter_argv(argv[0], argc > 1 && strcmp(argv[1], "-d") == 0, av, &err);
	if (ret == 0)
		ret = bk_filter_spawn(av, 0, 1, &c, &err);
	if (ret == 0)
		ret = bk_filter_wait(&c, &err);
	return ret < 0 ? fail(ret) : 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	argc -= 2;
	argv += 2;
	if (strcmp(cmd, "outer-write") == 0 && argc >= 1)
		return outer_write(argc, argv);
	if (strcmp(cmd, "outer-list") == 0)
		return outer_read(NULL, argc > 0 ? size_arg(argv[0]) : UINT64_MAX);
	if (strcmp(cmd, "outer-extract") == 0 && argc == 1)
		return outer_read(argv[0], UINT64_MAX);
	if (strcmp(cmd, "inner-write") == 0)
		return inner_write(argc + 1, argv - 1, 0);
	if (strcmp(cmd, "inner-write-file") == 0)
		return inner_write(argc + 1, argv - 1, 1);
	if (strcmp(cmd, "inner-read") == 0)
		return inner_read(argc + 1, argv - 1);
	if (strcmp(cmd, "compress") == 0)
		return compress(argc, argv);
	if (strcmp(cmd, "decompress") == 0)
		return decompress(argc, argv);
	if (strcmp(cmd, "filter") == 0)
		return filter(argc, argv);
	fprintf(stderr, "usage: bk_tar_tool outer-write|outer-list|outer-extract|inner-write|"
			"inner-write-file|inner-read|compress|decompress|filter ...\n");
	return 2;
}
