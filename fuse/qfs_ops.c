/* qpoold's FUSE operations (high-level API, multi-threaded).
 *
 * Every open volume file keeps the descriptor of the file or block device
 * it opened: a commit that renames images later does not move it.  I/O is
 * pread/pwrite straight on that descriptor, in requests of up to 1 MiB with
 * direct_io (no page cache of our own).  A client that opens with O_DIRECT
 * gets O_DIRECT on the backing file too (read into aligned buffers); other
 * reads hand libfuse the descriptor, which splices when it can.  Sequential
 * O_DIRECT readers get read-ahead (qfs_ahead.c). */
#include "fuse/qfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define QFS_ALIGN 4096

struct qfs_file {
	int fd;
	int fd_buffered;	/* without O_DIRECT, for unaligned requests; or -1 */
	bool direct;
	struct qfs_node node;
	/* Writable files: the running copy they opened, to tell when the VM
	 * has been stopped (forced) under them.  @opened: what fd is, for
	 * every file. */
	char *backing;
	struct stat opened;
	struct qfs_wgen *wgen;	/* write counters of the backing */
	struct qfs_mark *mark;	/* the volume's in-use marker */
	struct qfs_ahead *ahead;	/* O_DIRECT readers only, or NULL */
};

static struct qfs_ctx *ctx(void)
{
	return fuse_get_context()->private_data;
}

static struct qfs_file *file_of(const struct fuse_file_info *fi)
{
	return fi ? (struct qfs_file *)(uintptr_t)fi->fh : NULL;
}

/* ---- mount-wide ------------------------------------------------------------ */

static void *qfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct qfs_ctx *c = ctx();

	/* Changes made by qpool must show at once: nothing is cached. */
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	cfg->direct_io = 1;
	cfg->kernel_cache = 0;
	cfg->hard_remove = 1;
	/* libfuse 3.14 wants max_read here equal to the -o max_read given at
	 * mount time; max_write is capped by its 1 MiB request buffer. */
	conn->max_read = QFS_MAX_IO;
	conn->max_write = QFS_MAX_IO;
	/* Replies are spliced from the backing descriptor to the kernel. */
	conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	/* After fuse_daemonize the pid is the daemon's. */
	c->pid = getpid();
	qfs_mark_clean_stale(c);
	return c;
}

static void qfs_destroy(void *data)
{
	qfs_mark_drop_all(data);
}

/* ---- names ------------------------------------------------------------------- */

static int qfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	struct qfs_node n;
	int r = path ? qfs_resolve(ctx(), path, &n, NULL) : -ENOENT;

	/* An open file whose VM stopped meanwhile keeps what it opened. */
	if (r == -ENOENT && f) {
		n = f->node;
		r = 0;
	}
	if (r < 0)
		return r;
	qfs_node_stat(&n, st);
	return 0;
}

struct fill_arg {
	void *buf;
	fuse_fill_dir_t filler;
};

static int fill_one(void *arg, const char *name, const struct qfs_node *n)
{
	struct fill_arg *a = arg;
	struct stat st;

	qfs_node_stat(n, &st);
	return a->filler(a->buf, name, &st, 0, 0);
}

static int qfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fill_arg a = { buf, filler };

	(void)off;
	(void)fi;
	(void)flags;
	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	return qfs_list(ctx(), path, fill_one, &a);
}

/* Sizes change through `qvm-volume resize`, modes and owners through qpool. */
static int qfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	struct qfs_node n;
	int r = 0;

	if (f)
		n = f->node;
	else
		r = qfs_resolve(ctx(), path, &n, NULL);
	if (r < 0)
		return r;
	if (n.kind != QFS_VOLFILE)
		return -EISDIR;
	if (!n.writable)
		return -EROFS;
	return size >= 0 && (uint64_t)size == n.size ? 0 : -EPERM;
}

static int qfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)path;
	(void)mode;
	(void)fi;
	return -EPERM;
}

static int qfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	(void)path;
	(void)uid;
	(void)gid;
	(void)fi;
	return -EPERM;
}

/* ---- open and release --------------------------------------------------------- */

/* A shared lock on the state lock while a file is opened: a `qpool vm stop`
 * (which holds it exclusively) either runs before, and the file opens the
 * committed image, or after, and sees the in-use marker. */
static int state_lock_shared(struct qfs_ctx *c)
{
	char *path = qp_strdupf("%s/qubes.xml.lock", c->root);
	int fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;

	free(path);
	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_SH) < 0)
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	return fd;
}

static int open_backing(struct qfs_file *f, const char *backing, int flags)
{
	int acc = flags & O_ACCMODE;
	int base = (acc == O_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC | (flags & (O_SYNC | O_DSYNC));

	f->direct = flags & O_DIRECT;
	f->fd = open(backing, base | (f->direct ? O_DIRECT : 0));
	if (f->fd < 0)
		return -errno;
	if (f->direct) {
		f->fd_buffered = open(backing, base);
		if (f->fd_buffered < 0) {
			int r = -errno;

			close(f->fd);
			f->fd = -1;
			return r;
		}
	}
	return 0;
}

static int qfs_open(const char *path, struct fuse_file_info *fi)
{
	struct qfs_ctx *c = ctx();
	struct qfs_file *f = calloc(1, sizeof(*f));
	char *backing = NULL;
	int r, lock = -1;

	if (!f)
		return -ENOMEM;
	f->fd = f->fd_buffered = -1;
	lock = state_lock_shared(c);
	r = qfs_resolve(c, path, &f->node, &backing);
	if (r < 0)
		goto out;
	r = -EROFS;
	if ((fi->flags & O_ACCMODE) != O_RDONLY && !f->node.writable)
		goto out;
	r = -EPERM;
	if ((fi->flags & O_TRUNC) && f->node.size)
		goto out;
	r = qfs_mark_get(c, f->node.vm, f->node.vol, &f->mark);
	if (r < 0)
		goto out;
	r = open_backing(f, backing, fi->flags);
	if (r == 0 && fstat(f->fd, &f->opened) < 0)
		r = -errno;
	if (r == 0) {
		f->wgen = qfs_wgen_get(&f->opened);
		r = f->wgen ? 0 : -ENOMEM;
	}
	if (r == 0 && f->direct)
		f->ahead = qfs_ahead_new(f->fd, f->wgen);
	if (r < 0) {
		if (f->fd >= 0)
			close(f->fd);
		if (f->fd_buffered >= 0)
			close(f->fd_buffered);
		qfs_wgen_put(f->wgen);
		qfs_mark_put(c, f->node.vm, f->node.vol);
		goto out;
	}
	if (f->node.writable) {
		f->backing = backing;
		backing = NULL;
	}
	fi->fh = (uintptr_t)f;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	f = NULL;
out:
	if (lock >= 0)
		close(lock);
	free(backing);
	free(f);
	return r;
}

static int qfs_release(const char *path, struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);

	(void)path;
	if (!f)
		return 0;
	qfs_ahead_free(f->ahead);
	qfs_wgen_put(f->wgen);
	close(f->fd);
	if (f->fd_buffered >= 0)
		close(f->fd_buffered);
	qfs_mark_put(ctx(), f->node.vm, f->node.vol);
	free(f->backing);
	free(f);
	return 0;
}

/* ---- I/O ------------------------------------------------------------------------- */

/* Whether the running copy a writable file opened is still the one at its
 * path.  A stop (forced, while the file is open) commits it, that is
 * renames it to the committed name, or discards it: writes through the old
 * handle would then land in committed data, so they fail with EIO.  The
 * in-use marker's write gate (write_enter) makes the check and the write
 * one step for a forced stop. */
static bool still_running(const struct qfs_file *f)
{
	struct stat now;

	if (!f->backing || stat(f->backing, &now) < 0)
		return false;
	if (S_ISBLK(f->opened.st_mode))
		return S_ISBLK(now.st_mode) && now.st_rdev == f->opened.st_rdev;
	return now.st_dev == f->opened.st_dev && now.st_ino == f->opened.st_ino;
}

/* Before a write or fallocate: -EIO when the VM was stopped (forced) under
 * the file or is being stopped, else 0 and the write counts as under way
 * (a forced stop waits for it) until write_leave. */
static int write_enter(struct qfs_file *f)
{
	int r = qfs_mark_write_begin(f->mark);

	if (r < 0)
		return r;
	if (!still_running(f)) {
		qfs_mark_write_end(f->mark);
		return -EIO;
	}
	qfs_wgen_begin(f->wgen);
	return 0;
}

static void write_leave(struct qfs_file *f)
{
	qfs_wgen_end(f->wgen);
	qfs_mark_write_end(f->mark);
}

/* Clamps a request to the volume's size: *len becomes 0 at or past the end. */
static int clamp(const struct qfs_file *f, off_t off, size_t *len)
{
	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= f->node.size)
		*len = 0;
	else if (*len > f->node.size - (uint64_t)off)
		*len = (size_t)(f->node.size - (uint64_t)off);
	return 0;
}

static bool aligned(const void *buf, size_t len, off_t off)
{
	return !(((uintptr_t)buf | len | (uint64_t)off) & (QFS_ALIGN - 1));
}

/* pread or pwrite until done, end of file or error. */
static ssize_t io_full(bool wr, int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? pwrite(fd, (char *)buf + done, len - done, off + (off_t)done)
			       : pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* The descriptor for a request: the O_DIRECT one when the request allows it. */
static int io_fd(const struct qfs_file *f, const void *buf, size_t len, off_t off)
{
	return f->direct && !aligned(buf, len, off) ? f->fd_buffered : f->fd;
}

/* O_DIRECT: read into an aligned buffer of our own. */
static int read_direct(struct qfs_file *f, struct fuse_bufvec *bv, size_t size, off_t off)
{
	void *mem = NULL;
	ssize_t n = 0;

	/* Aligned, so that an O_DIRECT descriptor can read into it. */
	if (size && posix_memalign(&mem, QFS_ALIGN, size))
		return -ENOMEM;
	if (size)
		n = io_full(false, io_fd(f, mem, size, off), mem, size, off);
	if (n < 0) {
		free(mem);
		return (int)n;
	}
	*bv = FUSE_BUFVEC_INIT((size_t)n);
	bv->buf[0].mem = mem;
	return 0;
}

/* Buffered: hand libfuse the descriptor, so that it splices the data
 * from the page cache to the kernel when it can (requests that fit its
 * pipe), and reads it itself otherwise. */
static int qfs_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	struct fuse_bufvec *bv;
	int r;

	(void)path;
	r = clamp(f, off, &size);
	if (r < 0)
		return r;
	bv = malloc(sizeof(*bv));
	if (!bv)
		return -ENOMEM;
	if (f->direct) {
		void *mem;
		size_t n;

		if (qfs_ahead_take(f->ahead, off, size, &mem, &n)) {
			*bv = FUSE_BUFVEC_INIT(n);
			bv->buf[0].mem = mem;
		} else {
			r = read_direct(f, bv, size, off);
			if (r < 0) {
				free(bv);
				return r;
			}
		}
		qfs_ahead_done(f->ahead, off, bv->buf[0].size, f->node.size);
	} else {
		*bv = FUSE_BUFVEC_INIT(size);
		bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
		bv->buf[0].fd = f->fd;
		bv->buf[0].pos = off;
	}
	*bufp = bv;
	return 0;
}

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void bounce_key_init(void)
{
	pthread_key_create(&bounce_key, free);
}

/* A per-thread aligned buffer of QFS_MAX_IO bytes, for O_DIRECT writes of
 * data that libfuse hands us at an unaligned address. */
static void *bounce_buf(void)
{
	void *b;

	pthread_once(&bounce_once, bounce_key_init);
	b = pthread_getspecific(bounce_key);
	if (!b && posix_memalign(&b, QFS_ALIGN, QFS_MAX_IO) == 0)
		pthread_setspecific(bounce_key, b);
	return b;
}

static int qfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	void *src = (void *)buf;
	ssize_t n;
	int r;

	(void)path;
	if (!f->node.writable)
		return -EROFS;
	r = clamp(f, off, &size);
	if (r < 0)
		return r;
	/* As on a block device: nothing is written at or past the end. */
	if (!size)
		return -ENOSPC;
	if (f->direct && aligned(NULL, size, off) && !aligned(buf, 0, 0) && size <= QFS_MAX_IO) {
		src = bounce_buf();
		if (!src)
			return -ENOMEM;
		memcpy(src, buf, size);
	}
	r = write_enter(f);
	if (r < 0)
		return r;
	n = io_full(true, io_fd(f, src, size, off), src, size, off);
	write_leave(f);
	return (int)n;
}

static int qfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);

	(void)path;
	if (f->fd_buffered >= 0 && (datasync ? fdatasync(f->fd_buffered) : fsync(f->fd_buffered)))
		return -errno;
	return (datasync ? fdatasync(f->fd) : fsync(f->fd)) < 0 ? -errno : 0;
}

static int qfs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}

static int qfs_fallocate(const char *path, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	int r;

	(void)path;
	if (!f->node.writable)
		return -EROFS;
	if (off < 0 || len <= 0 || (uint64_t)off > f->node.size ||
	    (uint64_t)len > f->node.size - (uint64_t)off)
		return -ENOSPC;
	r = write_enter(f);
	if (r < 0)
		return r;
	r = fallocate(f->fd, mode | FALLOC_FL_KEEP_SIZE, off, len) < 0 ? -errno : 0;
	write_leave(f);
	return r;
}

static off_t qfs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	struct qfs_file *f = file_of(fi);
	off_t r;

	(void)path;
	if (off < 0 || (uint64_t)off >= f->node.size)
		return -ENXIO;
	r = lseek(f->fd, off, whence);
	if (r < 0)
		return -errno;
	if ((uint64_t)r > f->node.size)
		return whence == SEEK_HOLE ? (off_t)f->node.size : -ENXIO;
	return r;
}

const struct fuse_operations qfs_ops = {
	.init = qfs_init,
	.destroy = qfs_destroy,
	.getattr = qfs_getattr,
	.readdir = qfs_readdir,
	.truncate = qfs_truncate,
	.chmod = qfs_chmod,
	.chown = qfs_chown,
	.open = qfs_open,
	.release = qfs_release,
	.read_buf = qfs_read_buf,
	.write = qfs_write,
	.fsync = qfs_fsync,
	.flush = qfs_flush,
	.fallocate = qfs_fallocate,
	.lseek = qfs_lseek,
};
