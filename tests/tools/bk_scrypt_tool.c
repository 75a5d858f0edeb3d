/* bk_scrypt_tool: drives qpool's scrypt container code from test scripts.
 *
 *	bk_scrypt_tool enc [-n LOG_N] [-r R] [-p P] PASSFILE IN OUT
 *	bk_scrypt_tool dec [-n MAX_LOG_N] PASSFILE IN OUT
 *
 * The passphrase is the content of PASSFILE, one final newline removed (as
 * `scrypt -P` reads a line); it never appears in argv or the environment.
 * IN and OUT may be "-" for stdin and stdout.  `enc` defaults to log_n 20,
 * r 8, p 1.  `dec` uses qpool's default resource limits, with -n raising
 * the largest accepted log2(N).  On failure OUT is removed (unless stdout).
 *
 * Exit status: 0 success, 1 error, 2 usage, 3 wrong passphrase
 * (-EKEYREJECTED), 4 corrupt or unauthenticated data (-EBADMSG).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/bk_scrypt.h"
#include "backup/bk_secure.h"

static void usage(void)
{
	fprintf(stderr, "usage: bk_scrypt_tool enc [-n LOG_N] [-r R] [-p P] PASSFILE IN OUT\n"
			"       bk_scrypt_tool dec [-n MAX_LOG_N] PASSFILE IN OUT\n");
	exit(2);
}

/* Reads the passphrase file into secure memory. */
static int read_pass(const char *path, char **out, size_t *len, struct qp_err *err)
{
	size_t cap = 4096, n = 0;
	char *p;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qp_err_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
	p = bk_secure_alloc(cap);
	if (!p) {
		close(fd);
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	for (;;) {
		ssize_t r = read(fd, p + n, cap - 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += r;
		if (n == cap - 1) {
			close(fd);
			bk_secure_free(p);
			return qp_err_set(err, -EFBIG, "passphrase in '%s' is too long", path);
		}
	}
	close(fd);
	if (n && p[n - 1] == '\n')
		n--;
	*out = p;
	*len = n;
	return 0;
}

static long num(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	struct bk_scrypt_params pr = bk_scrypt_params_default();
	struct bk_scrypt_limits lim = bk_scrypt_limits_default();
	struct qp_err err = { 0 };
	struct bk_scrypt_key *key = NULL;
	char *pass = NULL;
	size_t passlen = 0;
	int enc, c, in = 0, out = 1, ret;
	const char *outpath;

	if (argc < 2 || (strcmp(argv[1], "enc") && strcmp(argv[1], "dec")))
		usage();
	enc = !strcmp(argv[1], "enc");
	optind = 2;
	while ((c = getopt(argc, argv, "n:r:p:")) != -1) {
		switch (c) {
		case 'n':
			pr.log_n = lim.max_log_n = num(optarg, 1, 63);
			break;
		case 'r':
			pr.r = num(optarg, 1, 1 << 30);
			break;
		case 'p':
			pr.p = num(optarg, 1, 1 << 30);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 3)
		usage();
	outpath = argv[optind + 2];
	ret = read_pass(argv[optind], &pass, &passlen, &err);
	if (ret == 0 && strcmp(argv[optind + 1], "-")) {
		in = open(argv[optind + 1], O_RDONLY | O_CLOEXEC);
		if (in < 0)
			ret = qp_err_set(&err, -errno, "cannot open '%s': %s", argv[optind + 1],
					 strerror(errno));
	}
	if (ret == 0 && strcmp(outpath, "-")) {
		out = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (out < 0)
			ret = qp_err_set(&err, -errno, "cannot create '%s': %s", outpath,
					 strerror(errno));
	}
	if (ret == 0 && enc) {
		ret = bk_scrypt_derive(pass, passlen, &pr, NULL, &key, &err);
		if (ret == 0)
			ret = bk_scrypt_encrypt_fd(key, in, out, &err);
	} else if (ret == 0) {
		ret = bk_scrypt_decrypt_fd(pass, passlen, &lim, in, out, &err);
	}
	bk_scrypt_key_free(key);
	bk_secure_free(pass);
	if (ret < 0) {
		fprintf(stderr, "bk_scrypt_tool: %s\n", err.msg);
		if (out > 1 && strcmp(outpath, "-"))
			unlink(outpath);
		return ret == -EKEYREJECTED ? 3 : ret == -EBADMSG ? 4 : 1;
	}
	if (out > 1 && close(out) < 0) {
		fprintf(stderr, "bk_scrypt_tool: cannot write '%s': %s\n", outpath,
			strerror(errno));
		unlink(outpath);
		return 1;
	}
	return 0;
}
