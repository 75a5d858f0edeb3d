/* File system and process helpers shared by the drivers (declared at the end
 * of storage/driver.h): running commands without a shell, durable renames and
 * removals, and copies that use reflinks when the file system has them.
 */
#include "qpool.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COPY_BUF (1024 * 1024)
#define ZERO_BLOCK 4096

/* strerror() with a lowercase first letter, as messages start lowercase. */
static const char *errstr(int e, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
	if (buf[0] && isupper((unsigned char)buf[0]) && !(buf[1] && isupper((unsigned char)buf[1])))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

#define ERRSTR(e) errstr((e), (char[128]){ 0 }, 128)

/* ---- running commands --------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* Appends "argv..." to $QPOOL_RUN_LOG when set, so tests can check the
 * command lines a driver runs. */
static void run_log(char *const argv[])
{
	const char *log = getenv("QPOOL_RUN_LOG");
	FILE *f;

	if (!log || !*log)
		return;
	f = fopen(log, "ae");
	if (!f)
		return;
	for (size_t i = 0; argv[i]; i++)
		fprintf(f, "%s%s", i ? " " : "", argv[i]);
	fputc('\n', f);
	fclose(f);
}

static void child_exec(char *const argv[], int out_fd, int err_fd, int exec_fd)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int e;

	if (null >= 0)
		dup2(null, STDIN_FILENO);
	if (out_fd >= 0)
		dup2(out_fd, STDOUT_FILENO);
	else if (null >= 0)
		dup2(null, STDOUT_FILENO);
	dup2(err_fd, STDERR_FILENO);
	signal(SIGPIPE, SIG_DFL);
	execvp(argv[0], argv);
	e = errno;
	if (write(exec_fd, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

/* Reads the child's stdout and stderr until both are closed. */
static int drain(int out_fd, int err_fd, struct buf *out, struct buf *errb)
{
	struct pollfd pfd[2] = { { .fd = out_fd, .events = POLLIN }, { .fd = err_fd, .events = POLLIN } };
	struct buf *dst[2] = { out, errb };
	char chunk[8192];
	int open_fds = (out_fd >= 0) + 1;

	if (out_fd < 0)
		pfd[0].fd = -1;
	while (open_fds > 0) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			n = read(pfd[i].fd, chunk, sizeof(chunk));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				pfd[i].fd = -1;
				open_fds--;
				continue;
			}
			/* stderr beyond 64 KiB is of no use for a message */
			if (i == 1 && errb->len > 65536)
				continue;
			if (buf_add(dst[i], chunk, (size_t)n) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

static int run_failed(char *const argv[], int status, struct buf *errb, struct qp_err *err)
{
	char *line = errb->p ? errb->p : "";
	size_t n;

	while (*line == '\n' || *line == ' ')
		line++;
	n = strcspn(line, "\n");
	if (n)
		return qp_err_set(err, -EIO, "'%s' failed: %.*s", argv[0], (int)n, line);
	if (WIFSIGNALED(status))
		return qp_err_set(err, -EIO, "'%s' failed: killed by signal %d", argv[0],
				  WTERMSIG(status));
	return qp_err_set(err, -EIO, "'%s' failed: exit status %d", argv[0], WEXITSTATUS(status));
}

int qp_run(char *const argv[], char **out, struct qp_err *err)
{
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, execp[2] = { -1, -1 };
	struct buf ob = { 0 }, eb = { 0 };
	int ret = -EIO, status = 0, exec_errno = 0;
	pid_t pid;

	if (!argv || !argv[0])
		return qp_err_set(err, -EINVAL, "cannot run a command: empty argument list");
	run_log(argv);
	if ((out && pipe2(outp, O_CLOEXEC) < 0) || pipe2(errp, O_CLOEXEC) < 0 ||
	    pipe2(execp, O_CLOEXEC) < 0) {
		ret = qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], ERRSTR(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		ret = qp_err_set(err, -errno, "cannot run '%s': %s", argv[0], ERRSTR(errno));
		goto out;
	}
	if (pid == 0)
		child_exec(argv, outp[1], errp[1], execp[1]);
	close(execp[1]);
	execp[1] = -1;
	if (outp[1] >= 0) {
		close(outp[1]);
		outp[1] = -1;
	}
	close(errp[1]);
	errp[1] = -1;
	ret = drain(outp[0], errp[0], &ob, &eb);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			ret = qp_err_set(err, -errno, "cannot wait for '%s': %s", argv[0],
					 ERRSTR(errno));
			goto out;
		}
	}
	if (ret < 0) {
		ret = qp_err_set(err, ret, "cannot read the output of '%s': %s", argv[0],
				 ERRSTR(ret));
		goto out;
	}
	if (read(execp[0], &exec_errno, sizeof(exec_errno)) == (ssize_t)sizeof(exec_errno)) {
		ret = qp_err_set(err, exec_errno == ENOENT ? -ENOENT : -exec_errno,
				 "cannot run '%s': %s", argv[0], ERRSTR(exec_errno));
		goto out;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		ret = run_failed(argv, status, &eb, err);
		goto out;
	}
	if (out) {
		*out = ob.p ? ob.p : strdup("");
		ob.p = NULL;
		if (!*out) {
			ret = qp_err_set(err, -ENOMEM, "cannot run '%s': out of memory", argv[0]);
			goto out;
		}
	}
	ret = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
		if (execp[i] >= 0)
			close(execp[i]);
	}
	free(ob.p);
	free(eb.p);
	return ret;
}

/* ---- durable names -------------------------------------------------------- */

/* The folder holding @path: a malloc'd string. */
static char *parent_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static int fsync_folder(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0 && errno != EINVAL)
		ret = -errno;
	close(fd);
	return ret;
}

/* fsync of the folder that holds the name @path (whatever @path is). */
static int fsync_parent(const char *path)
{
	char *dir = parent_of(path);
	int ret;

	if (!dir)
		return -ENOMEM;
	ret = fsync_folder(dir);
	free(dir);
	return ret;
}

int qp_fsync_dir(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return fsync_folder(path);
	return fsync_parent(path);
}

int qp_tmp_name(const char *target, char **out)
{
	unsigned char rnd[4];
	char *name;

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		/* no entropy yet this early after boot: time and pid still make it unique */
		struct timespec ts;
		uint32_t x;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		x = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16);
		memcpy(rnd, &x, sizeof(rnd));
	}
	if (asprintf(&name, "%s~%02x%02x%02x%02x", target, rnd[0], rnd[1], rnd[2], rnd[3]) < 0)
		return -ENOMEM;
	*out = name;
	return 0;
}

/* Length of the folder part of @path, for comparing folders. */
static size_t folder_len(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? (size_t)(slash - path) : 0;
}

int qp_rename(const char *from, const char *to, struct qp_err *err)
{
	return qp_rename_f(from, to, 0, err);
}

int qp_rename_f(const char *from, const char *to, unsigned flags, struct qp_err *err)
{
	size_t fl = folder_len(from), tl = folder_len(to);
	int ret;

	if (flags & ~QP_FS_NOSYNC)
		return qp_err_set(err, -EINVAL, "unknown flags");
	if (rename(from, to) < 0)
		return qp_err_set(err, -errno, "cannot rename '%s' to '%s': %s", from, to,
				  ERRSTR(errno));
	if (flags & QP_FS_NOSYNC)
		return 0;
	ret = fsync_parent(to);
	if (ret == 0 && (fl != tl || strncmp(from, to, fl)))
		ret = fsync_parent(from);
	if (ret < 0)
		return qp_err_set(err, ret, "cannot sync the folder of '%s': %s", to, ERRSTR(ret));
	return 0;
}

int qp_unlink(const char *path, struct qp_err *err)
{
	return qp_unlink_f(path, 0, err);
}

int qp_unlink_f(const char *path, unsigned flags, struct qp_err *err)
{
	int ret;

	if (flags & ~QP_FS_NOSYNC)
		return qp_err_set(err, -EINVAL, "unknown flags");
	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return 0;
		return qp_err_set(err, -errno, "cannot remove '%s': %s", path, ERRSTR(errno));
	}
	if (flags & QP_FS_NOSYNC)
		return 0;
	ret = fsync_parent(path);
	if (ret < 0)
		return qp_err_set(err, ret, "cannot sync the folder of '%s': %s", path,
				  ERRSTR(ret));
	return 0;
}

int qp_mkdirs(const char *path, struct qp_err *err)
{
	char *p = strdup(path);
	struct stat st;
	int ret = -ENOMEM;

	if (!p)
		return qp_err_set(err, -ENOMEM, "cannot create folder '%s': out of memory", path);
	for (char *s = p + 1;; s++) {
		char c = *s;

		if (c != '/' && c != '\0')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			ret = qp_err_set(err, -errno, "cannot create folder '%s': %s", p,
					 ERRSTR(errno));
			goto out;
		}
		*s = c;
		if (!c)
			break;
	}
	if (stat(path, &st) < 0) {
		ret = qp_err_set(err, -errno, "cannot create folder '%s': %s", path, ERRSTR(errno));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = qp_err_set(err, -ENOTDIR, "cannot create folder '%s': a file is in the way",
				 path);
		goto out;
	}
	ret = 0;
out:
	free(p);
	return ret;
}

/* ---- copies ------------------------------------------------------------- */

static bool all_zero(const char *p, size_t n)
{
	static const char zero[ZERO_BLOCK];

	while (n >= ZERO_BLOCK) {
		if (memcmp(p, zero, ZERO_BLOCK))
			return false;
		p += ZERO_BLOCK;
		n -= ZERO_BLOCK;
	}
	return n == 0 || !memcmp(p, zero, n);
}

/* Copies [off, end) of @in to @out, leaving blocks of zeros as holes. */
static int copy_range(int in, int out, char *buf, off_t off, off_t end)
{
	while (off < end) {
		size_t want = (size_t)(end - off < COPY_BUF ? end - off : COPY_BUF);
		ssize_t n = pread(in, buf, want, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;	/* the source shrank under us */
		for (ssize_t done = 0; done < n;) {
			size_t blk = (size_t)(n - done) < ZERO_BLOCK ? (size_t)(n - done) : ZERO_BLOCK;
			ssize_t w;

			if (all_zero(buf + done, blk)) {
				done += (ssize_t)blk;
				continue;
			}
			w = pwrite(out, buf + done, blk, off + done);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			done += w;
		}
		off += n;
	}
	return 0;
}

/* Sparse copy of @size bytes: only the data extents are read. */
static int sparse_copy(int in, int out, off_t size)
{
	char *buf = malloc(COPY_BUF);
	off_t off = 0;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (off < size) {
		off_t data = lseek(in, off, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO)
				break;	/* only a hole is left */
			if (errno != EINVAL && errno != EOPNOTSUPP) {
				ret = -errno;
				goto out;
			}
			/* no SEEK_DATA: everything is data */
			ret = copy_range(in, out, buf, off, size);
			goto out;
		}
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0 || hole > size)
			hole = size;
		ret = copy_range(in, out, buf, data, hole);
		if (ret < 0)
			goto out;
		off = hole;
	}
out:
	free(buf);
	return ret;
}

static int src_size(int fd, const struct stat *st, off_t *size)
{
	if (S_ISBLK(st->st_mode)) {
		uint64_t bytes;

		if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		*size = (off_t)bytes;
		return 0;
	}
	if (!S_ISREG(st->st_mode))
		return -EINVAL;
	*size = st->st_size;
	return 0;
}

int qp_copy_file(const char *src, const char *dst, bool *reflinked, struct qp_err *err)
{
	return qp_copy_file_f(src, dst, reflinked, 0, err);
}

int qp_copy_file_f(const char *src, const char *dst, bool *reflinked, unsigned flags,
		   struct qp_err *err)
{
	int in = -1, out = -1, ret;
	bool created = false, cloned = false;
	struct stat st;
	off_t size = 0;

	if (flags & ~QP_FS_NOSYNC)
		return qp_err_set(err, -EINVAL, "unknown flags");
	if (reflinked)
		*reflinked = false;
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		ret = qp_err_set(err, -errno, "cannot open '%s': %s", src, ERRSTR(errno));
		goto out;
	}
	if (fstat(in, &st) < 0) {
		ret = qp_err_set(err, -errno, "cannot stat '%s': %s", src, ERRSTR(errno));
		goto out;
	}
	ret = src_size(in, &st, &size);
	if (ret < 0) {
		ret = qp_err_set(err, ret, "cannot copy '%s': %s", src,
				 ret == -EINVAL ? "not a regular file or block device" : ERRSTR(ret));
		goto out;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		ret = qp_err_set(err, -errno, "cannot create '%s': %s", dst, ERRSTR(errno));
		goto out;
	}
	created = true;
	if (S_ISREG(st.st_mode) && ioctl(out, FICLONE, in) == 0) {
		cloned = true;
	} else if (S_ISREG(st.st_mode) && errno != EBADF && errno != EINVAL &&
		   errno != EOPNOTSUPP && errno != EXDEV && errno != ENOTTY) {
		ret = -errno;
		goto copy_err;
	}
	if (!cloned) {
		ret = sparse_copy(in, out, size);
		if (ret < 0)
			goto copy_err;
		if (ftruncate(out, size) < 0) {
			ret = -errno;
			goto copy_err;
		}
	}
	if (!(flags & QP_FS_NOSYNC) && fsync(out) < 0) {
		ret = -errno;
		goto copy_err;
	}
	if (reflinked)
		*reflinked = cloned;
	ret = 0;
	goto out;
copy_err:
	ret = qp_err_set(err, ret, "cannot copy '%s' to '%s': %s", src, dst, ERRSTR(ret));
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (ret < 0 && created)
		unlink(dst);
	return ret;
}
