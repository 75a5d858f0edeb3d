/* In-use markers: a process that holds a volume open (qpoold serving a file
 * of its tree) keeps <root>/run/inuse/<vm>/<volume> holding its pid, so that
 * `qpool vm stop` can refuse to commit a volume under a reader's feet. */
#include "qpool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

/* Reads the pid in @path: 0 when the file is missing or holds no pid. */
static int read_pid(const char *path, pid_t *out)
{
	char buf[32];
	long long pid;
	char *end;
	ssize_t n;
	int fd;

	*out = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = '\0';
	errno = 0;
	pid = strtoll(buf, &end, 10);
	if (!errno && end != buf && (*end == '\n' || !*end) && pid > 0 && pid <= 0x7fffffff)
		*out = (pid_t)pid;
	return 0;
}

int qp_vol_in_use(struct qp_volume *v, bool *out, struct qp_err *err)
{
	const char *root = v->vm && v->vm->st ? v->vm->st->root : NULL;
	char *path;
	pid_t pid;
	int r;

	*out = false;
	if (!root)
		return 0;
	path = qp_strdupf("%s/%s/%s/%s", root, QP_INUSE_DIR, v->vm->name, v->name);
	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	r = read_pid(path, &pid);
	if (r < 0) {
		r = qp_err_set(err, r, "cannot read in-use marker '%s': %s", path, strerror(-r));
		goto out;
	}
	if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)) {
		*out = true;
	} else if (access(path, F_OK) == 0) {
		/* Left by a process that died (a crashed qpoold): stale. */
		unlink(path);
	}
out:
	free(path);
	return r;
}

/* How long a forced stop waits for writes under way through qpoold. */
#define QUIESCE_WAIT_MS 10000

int qp_vol_quiesce(struct qp_volume *v, int *lockfd, struct qp_err *err)
{
	const char *root = v->vm && v->vm->st ? v->vm->st->root : NULL;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	char *path;
	int fd, r = 0;

	*lockfd = -1;
	if (!root)
		return 0;
	path = qp_strdupf("%s/%s/%s/%s", root, QP_INUSE_DIR, v->vm->name, v->name);
	if (!path)
		return qp_err_set(err, -ENOMEM, "out of memory");
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT ? 0 : qp_err_set(err, -errno, "cannot open in-use marker '%s': %s",
						     path, strerror(errno));
		goto out;
	}
	/* No new writes from here on... */
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		r = qp_err_set(err, -errno, "cannot lock in-use marker '%s': %s", path,
			       strerror(errno));
		goto out;
	}
	/* ...and the ones under way end. */
	for (int ms = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; ms++) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			r = qp_err_set(err, -errno, "cannot lock in-use marker '%s': %s", path,
				       strerror(errno));
			goto out;
		}
		if (ms >= QUIESCE_WAIT_MS) {
			r = qp_err_set(err, -EBUSY, "volume '%s:%s' has writes under way that do not end",
				       v->vm->name, v->name);
			goto out;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	*lockfd = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

void qp_vol_quiesce_end(int lockfd)
{
	if (lockfd >= 0)
		close(lockfd);
}
