/* qpoold: serves every VM's volumes as files, MOUNTPOINT/<vm>/<volume>.img.
 *
 *	qpoold [--root DIR] [-f] [-d] [-o OPTS] MOUNTPOINT
 *
 * Mounted with allow_other and default_permissions, so the kernel enforces
 * the owners and modes qpoold reports.  A mount point left stale by a
 * qpoold that died (kill -9) is detached and mounted again.  SIGTERM,
 * SIGINT and SIGHUP unmount cleanly. */
#include "fuse/qfs.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

/* Thread limits given: libfuse 3.14 logs its own default as out of range. */
#define QFS_MOUNT_OPTS \
	"allow_other,default_permissions,max_read=1048576,fsname=qpoold,subtype=qpoold," \
	"max_threads=16,max_idle_threads=10"

static void usage(FILE *to)
{
	fprintf(to, "usage: qpoold [--root DIR] [-f] [-d] [-s] [-o OPTS] MOUNTPOINT\n"
		    "\nServes the volumes of every VM as MOUNTPOINT/<vm>/<volume>.img.\n"
		    "\noptions:\n"
		    "  --root DIR  qpool state folder (default: $QPOOL_ROOT, else %s)\n"
		    "  -f          stay in the foreground\n"
		    "  -d          FUSE debug output (implies -f)\n"
		    "  -s          one thread only (for debugging)\n"
		    "  -o OPTS     extra FUSE mount options\n"
		    "  -h, --help  show this help and exit\n",
		QP_DEFAULT_ROOT);
}

/* True when /proc/mounts lists a FUSE mount of qpoold at @mp. */
static bool qpoold_mounted(const char *mp)
{
	char line[4096], dev[1024], dir[2048], type[256];
	FILE *fp = fopen("/proc/mounts", "re");
	bool found = false;

	while (fp && fgets(line, sizeof(line), fp))
		if (sscanf(line, "%1023s %2047s %255s", dev, dir, type) == 3 && !strcmp(dir, mp) &&
		    !strncmp(type, "fuse", 4) && !strcmp(dev, "qpoold"))
			found = true;
	if (fp)
		fclose(fp);
	return found;
}

/* Makes @mp usable: a dead FUSE mount (ENOTCONN, its server was killed) is
 * detached; a missing folder is created; a live qpoold there is refused. */
static int prepare_mountpoint(const char *mp, char **real_out)
{
	struct qp_err err = { 0 };
	struct stat sb;
	char *real;

	if (stat(mp, &sb) < 0 && errno == ENOTCONN) {
		fprintf(stderr, "qpoold: '%s' is a stale FUSE mount; detaching it\n", mp);
		if (umount2(mp, MNT_DETACH) < 0) {
			fprintf(stderr, "qpoold: cannot detach '%s': %s\n", mp, strerror(errno));
			return -1;
		}
	}
	if (stat(mp, &sb) < 0) {
		if (errno != ENOENT || qp_mkdirs(mp, &err) < 0) {
			fprintf(stderr, "qpoold: cannot use mount point '%s': %s\n", mp,
				err.code ? err.msg : strerror(errno));
			return -1;
		}
	} else if (!S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "qpoold: mount point '%s' is not a folder\n", mp);
		return -1;
	}
	real = realpath(mp, NULL);
	if (!real) {
		fprintf(stderr, "qpoold: cannot use mount point '%s': %s\n", mp, strerror(errno));
		return -1;
	}
	if (qpoold_mounted(real)) {
		fprintf(stderr, "qpoold: '%s' is already served by a running qpoold\n", mp);
		free(real);
		return -1;
	}
	*real_out = real;
	return 0;
}

struct args {
	const char *root;
	const char *mountpoint;
	const char *extra_opts;
	bool foreground;
	bool debug;
	bool single;
};

static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option lo[] = {
		{ "root", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "+fdso:h", lo, NULL)) != -1) {
		switch (c) {
		case 'r':
			a->root = optarg;
			break;
		case 'f':
			a->foreground = true;
			break;
		case 'd':
			a->debug = a->foreground = true;
			break;
		case 's':
			a->single = true;
			break;
		case 'o':
			a->extra_opts = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "qpoold: %s\n", argc > optind ? "too many arguments" : "missing MOUNTPOINT");
		usage(stderr);
		return -1;
	}
	a->mountpoint = argv[optind];
	return 0;
}

int main(int argc, char **argv)
{
	struct qp_err err = { 0 };
	struct args a = { 0 };
	struct qfs_ctx c;
	char *root = NULL, *mp = NULL, *opts = NULL;
	char *fargv[10];
	int fargc = 0, ret = 2;

	if (parse_args(argc, argv, &a) < 0)
		return 2;
	/* Every read allocates its 1 MiB reply: keep such buffers on the heap
	 * for reuse instead of a fresh mmap (and 256 page faults) each time. */
	mallopt(M_MMAP_THRESHOLD, 64 * QFS_MAX_IO);
	mallopt(M_TRIM_THRESHOLD, 128 * QFS_MAX_IO);
	ret = 1;
	root = realpath(qp_default_root(a.root), NULL);
	if (!root && errno == ENOENT && qp_mkdirs(qp_default_root(a.root), &err) == 0)
		root = realpath(qp_default_root(a.root), NULL);
	if (!root) {
		fprintf(stderr, "qpoold: cannot use state folder '%s': %s\n",
			qp_default_root(a.root), err.code ? err.msg : strerror(errno));
		goto err0;
	}
	if (prepare_mountpoint(a.mountpoint, &mp) < 0)
		goto err0;
	opts = a.extra_opts ? qp_strdupf("%s,%s", QFS_MOUNT_OPTS, a.extra_opts)
			    : strdup(QFS_MOUNT_OPTS);
	if (!mp || !opts) {
		fprintf(stderr, "qpoold: out of memory\n");
		goto err0;
	}
	if (qfs_ctx_init(&c, root) < 0) {
		fprintf(stderr, "qpoold: out of memory\n");
		goto err0;
	}
	fargv[fargc++] = argv[0];
	fargv[fargc++] = "-o";
	fargv[fargc++] = opts;
	if (a.foreground)
		fargv[fargc++] = "-f";
	if (a.debug)
		fargv[fargc++] = "-d";
	if (a.single)
		fargv[fargc++] = "-s";
	fargv[fargc++] = mp;
	fargv[fargc] = NULL;
	ret = fuse_main(fargc, fargv, &qfs_ops, &c);
	qfs_mark_drop_all(&c);
	qfs_ctx_release(&c);
err0:
	free(opts);
	free(mp);
	free(root);
	return ret;
}
