/* qpoold: the FUSE view of every VM's volumes, MOUNTPOINT/<vm>/<volume>.img.
 * Declarations shared by the files in fuse/. */
#ifndef QPOOL_FUSE_QFS_H
#define QPOOL_FUSE_QFS_H

#define FUSE_USE_VERSION 314

#include <fuse.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "qpool.h"

/* Largest read and write request (the kernel's ceiling is 256 pages). */
#define QFS_MAX_IO (1024 * 1024)
#define QFS_SUFFIX ".img"

struct qfs_mark;

struct qfs_ctx {
	char *root;		/* absolute state folder */
	char *xml;		/* <root>/qubes.xml */
	pid_t pid;
	pthread_mutex_t lock;	/* guards st and the stamp */
	struct qp_state *st;	/* NULL while there is no qubes.xml */
	struct stat stamp;	/* qubes.xml as st was loaded from */
	pthread_mutex_t marks_lock;
	struct qfs_mark *marks;	/* volumes held open, see qfs_mark_get */
};

enum qfs_kind { QFS_ROOT, QFS_VMDIR, QFS_VOLFILE };

/* What a path names, copied out of the state (which may be replaced at any
 * time by another thread). */
struct qfs_node {
	enum qfs_kind kind;
	uid_t uid;
	gid_t gid;
	bool writable;		/* started and rw */
	uint64_t size;
	struct timespec mtime;
	char vm[QP_NAME_MAX + 1];
	char vol[QP_NAME_MAX + 1];
};

/* ---- qfs_tree.c: state and paths ---------------------------------------- */

int qfs_ctx_init(struct qfs_ctx *c, const char *root);
void qfs_ctx_release(struct qfs_ctx *c);
/* Resolves @path ("/", "/vm", "/vm/vol.img") against the current state,
 * reloading it first when qubes.xml changed.  With @backing non-NULL and a
 * volume file, also returns the path holding its content (the running copy
 * of a started VM, the committed image otherwise); *backing is owned by the
 * caller.  Returns 0 or a negative errno. */
int qfs_resolve(struct qfs_ctx *c, const char *path, struct qfs_node *out, char **backing);
/* Calls @fn for every entry of folder @path (no "." and ".."). */
int qfs_list(struct qfs_ctx *c, const char *path,
	     int (*fn)(void *arg, const char *name, const struct qfs_node *n), void *arg);
void qfs_node_stat(const struct qfs_node *n, struct stat *st);

/* ---- qfs_inuse.c: in-use markers ----------------------------------------- */

/* Counts one more open file of VM:VOL; the first one writes the marker
 * <root>/run/inuse/<vm>/<vol> with our pid.  *out (borrowed, valid until
 * the matching qfs_mark_put) is for qfs_mark_write_begin/end. */
int qfs_mark_get(struct qfs_ctx *c, const char *vm, const char *vol, struct qfs_mark **out);
/* Around every write to the volume: returns 0, or -EIO while a forced stop
 * is under way (see qp_vol_quiesce); then qfs_mark_write_end is not called.
 * A stop waits for the writes between begin and end. */
int qfs_mark_write_begin(struct qfs_mark *m);
void qfs_mark_write_end(struct qfs_mark *m);
/* Counts one fewer; the last one removes the marker. */
void qfs_mark_put(struct qfs_ctx *c, const char *vm, const char *vol);
/* Removes every marker we hold (at unmount). */
void qfs_mark_drop_all(struct qfs_ctx *c);
/* Removes markers left by processes that are gone (a crashed qpoold). */
void qfs_mark_clean_stale(struct qfs_ctx *c);

/* ---- qfs_ahead.c: read-ahead for O_DIRECT readers ------------------------- */

struct qfs_wgen;
struct qfs_ahead;

/* The write counters of the backing file or block device @st describes,
 * shared by every open file on it; NULL when out of memory. */
struct qfs_wgen *qfs_wgen_get(const struct stat *st);
void qfs_wgen_put(struct qfs_wgen *g);
/* Around every write or fallocate on the backing (NULL is a no-op). */
void qfs_wgen_begin(struct qfs_wgen *g);
void qfs_wgen_end(struct qfs_wgen *g);

/* Read-ahead on O_DIRECT descriptor @fd (borrowed; free before closing it);
 * NULL (no read-ahead) when @wgen is NULL or no worker could start. */
struct qfs_ahead *qfs_ahead_new(int fd, struct qfs_wgen *wgen);
void qfs_ahead_free(struct qfs_ahead *a);
/* When the block at @off of @len bytes was read ahead and is still current:
 * true, *buf (aligned, freed with free(), owned by the caller) and *n. */
bool qfs_ahead_take(struct qfs_ahead *a, off_t off, size_t len, void **buf, size_t *n);
/* After a request of @len bytes at @off was answered: reads the next block
 * ahead when this one followed the previous one (@size: the volume's). */
void qfs_ahead_done(struct qfs_ahead *a, off_t off, size_t len, uint64_t size);

/* ---- qfs_ops.c ------------------------------------------------------------ */

extern const struct fuse_operations qfs_ops;

#endif
