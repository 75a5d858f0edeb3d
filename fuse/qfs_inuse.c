/* In-use markers for volumes open through qpoold: <root>/run/inuse/<vm>/<vol>
 * holds our pid from the first open of the volume's file to its last
 * release (qp_vol_in_use reads them; `qpool vm stop` refuses while one is
 * there).  Markers of a qpoold that died are stale and ignored.
 *
 * The marker is also the write gate of a forced stop (qp_vol_quiesce): we
 * hold a shared flock on it while any write to the volume is under way, and
 * refuse new writes while the stopper holds its byte-0 lock; the stopper's
 * exclusive flock then waits for the writes under way to end.  So no write
 * lands in a volume after `vm stop --force` has committed it. */
#include "fuse/qfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct qfs_mark {
	struct qfs_mark *next;
	char *vm;
	char *vol;
	unsigned n;
	int fd;			/* the marker, for its locks; or -1 */
	pthread_mutex_t gate;
	unsigned writing;	/* writes under way, under gate */
};

static char *mark_dir(const struct qfs_ctx *c, const char *vm)
{
	return qp_strdupf("%s/%s/%s", c->root, QP_INUSE_DIR, vm);
}

/* Writes the marker atomically (temp file, rename); *lockfd: the marker,
 * open for its locks. */
static int mark_write(const struct qfs_ctx *c, const char *vm, const char *vol, int *lockfd)
{
	char *dir = mark_dir(c, vm), *path = NULL, *tmp = NULL, buf[32];
	struct qp_err err = { 0 };
	int fd = -1, r = -ENOMEM, len;

	if (!dir)
		goto out;
	path = qp_strdupf("%s/%s", dir, vol);
	tmp = qp_strdupf("%s/.%s~%ld", dir, vol, (long)c->pid);
	if (!path || !tmp)
		goto out;
	r = qp_mkdirs(dir, &err);
	if (r < 0)
		goto out;
	errno = EIO;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	len = snprintf(buf, sizeof(buf), "%ld\n", (long)c->pid);
	if (fd < 0 || write(fd, buf, (size_t)len) != len || rename(tmp, path) < 0) {
		r = errno ? -errno : -EIO;
		unlink(tmp);
		goto out;
	}
	/* The same inode as the one renamed into place. */
	*lockfd = fd;
	fd = -1;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		fprintf(stderr, "qpoold: cannot write in-use marker of '%s:%s': %s\n", vm, vol,
			err.code ? err.msg : strerror(-r));
	free(tmp);
	free(path);
	free(dir);
	return r;
}

static void mark_remove(const struct qfs_ctx *c, const char *vm, const char *vol)
{
	char *dir = mark_dir(c, vm), *path = dir ? qp_strdupf("%s/%s", dir, vol) : NULL;

	if (path) {
		unlink(path);
		rmdir(dir);	/* when it was the last one */
	}
	free(path);
	free(dir);
}

static void mark_free(struct qfs_mark *m)
{
	if (m->fd >= 0)
		close(m->fd);
	pthread_mutex_destroy(&m->gate);
	free(m->vm);
	free(m->vol);
	free(m);
}

int qfs_mark_get(struct qfs_ctx *c, const char *vm, const char *vol, struct qfs_mark **out)
{
	struct qfs_mark *m;
	int r = 0;

	pthread_mutex_lock(&c->marks_lock);
	for (m = c->marks; m; m = m->next)
		if (!strcmp(m->vm, vm) && !strcmp(m->vol, vol))
			break;
	if (!m) {
		m = calloc(1, sizeof(*m));
		if (m && (!(m->vm = strdup(vm)) || !(m->vol = strdup(vol)))) {
			free(m->vm);
			free(m);
			m = NULL;
		}
		if (!m) {
			r = -ENOMEM;
			goto out;
		}
		m->fd = -1;
		pthread_mutex_init(&m->gate, NULL);
		r = mark_write(c, vm, vol, &m->fd);
		if (r < 0) {
			mark_free(m);
			goto out;
		}
		m->next = c->marks;
		c->marks = m;
	}
	m->n++;
	*out = m;
out:
	pthread_mutex_unlock(&c->marks_lock);
	return r;
}

int qfs_mark_write_begin(struct qfs_mark *m)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	int r = 0;

	if (!m || m->fd < 0)
		return 0;
	pthread_mutex_lock(&m->gate);
	if (fcntl(m->fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
		/* A forced stop is under way. */
		r = -EIO;
	} else if (m->writing++ == 0) {
		/* Waits while a stopper holds it exclusively; the write then
		 * finds its running copy gone. */
		while (flock(m->fd, LOCK_SH) < 0 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&m->gate);
	return r;
}

void qfs_mark_write_end(struct qfs_mark *m)
{
	if (!m || m->fd < 0)
		return;
	pthread_mutex_lock(&m->gate);
	if (--m->writing == 0)
		flock(m->fd, LOCK_UN);
	pthread_mutex_unlock(&m->gate);
}

void qfs_mark_put(struct qfs_ctx *c, const char *vm, const char *vol)
{
	struct qfs_mark **pp, *m;

	pthread_mutex_lock(&c->marks_lock);
	for (pp = &c->marks; (m = *pp); pp = &m->next) {
		if (strcmp(m->vm, vm) || strcmp(m->vol, vol))
			continue;
		if (--m->n == 0) {
			*pp = m->next;
			mark_remove(c, vm, vol);
			mark_free(m);
		}
		break;
	}
	pthread_mutex_unlock(&c->marks_lock);
}

void qfs_mark_drop_all(struct qfs_ctx *c)
{
	struct qfs_mark *m;

	pthread_mutex_lock(&c->marks_lock);
	while ((m = c->marks)) {
		c->marks = m->next;
		mark_remove(c, m->vm, m->vol);
		mark_free(m);
	}
	pthread_mutex_unlock(&c->marks_lock);
}

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Removes the markers of one VM folder whose pid is gone or is ours (left by
 * an earlier qpoold that had our pid). */
static void clean_dir(struct qfs_ctx *c, const char *dir)
{
	struct dirent *e;
	DIR *dh = opendir(dir);
	char buf[32];

	if (!dh)
		return;
	while ((e = readdir(dh))) {
		char *path;
		long pid = 0;
		ssize_t n;
		int fd;

		if (e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, "..")))
			continue;
		path = qp_strdupf("%s/%s", dir, e->d_name);
		if (!path)
			break;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			pid = strtol(buf, NULL, 10);
		}
		if (e->d_name[0] == '.' || pid <= 0 || pid == (long)c->pid || !pid_alive((pid_t)pid))
			unlink(path);
		free(path);
	}
	closedir(dh);
	rmdir(dir);
}

void qfs_mark_clean_stale(struct qfs_ctx *c)
{
	char *top = qp_strdupf("%s/%s", c->root, QP_INUSE_DIR);
	struct dirent *e;
	DIR *dh = top ? opendir(top) : NULL;

	while (dh && (e = readdir(dh))) {
		char *dir;

		if (e->d_name[0] == '.')
			continue;
		dir = qp_strdupf("%s/%s", top, e->d_name);
		if (dir)
			clean_dir(c, dir);
		free(dir);
	}
	if (dh)
		closedir(dh);
	free(top);
}
