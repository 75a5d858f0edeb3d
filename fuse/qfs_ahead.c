/* qpoold's read-ahead for readers that open with O_DIRECT.
 *
 * Such a reader (qemu with cache=none, a backup reading a volume) asks for
 * one block at a time and waits for it.  Through FUSE every block is copied
 * twice (backing file -> qpoold -> reader), so the reader waits for both
 * copies back to back.  When a file is read sequentially, a worker reads the
 * next block while the current one is handed over, and the next request
 * finds it ready: the copies overlap on separate CPUs.
 *
 * What is read ahead is never stale: every write or fallocate through
 * qpoold on the same backing file or device bumps that backing's counters
 * (qfs_wgen_begin/end), and a block read ahead is used only when no write
 * to its backing started after, or was under way at, the moment its read
 * began.  Blocks are read ahead only after two sequential requests, at most
 * QFS_AHEAD_DEPTH of them per open file (each the size of the last request).
 * Two, so that the loop or disk under the backing always has the next read
 * queued while qpoold hands a block over. */
#include "fuse/qfs.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QFS_AHEAD_WORKERS 2
#define QFS_AHEAD_DEPTH 2	/* blocks read ahead per open file */
/* Bytes held in blocks read ahead, all files together: a file that stops
 * reading keeps its blocks until its next read or its release. */
#define QFS_AHEAD_BUDGET (64u << 20)

static atomic_size_t held;
#define QFS_AHEAD_ALIGN 4096

/* Write counters of one backing file (dev, ino) or device (rdev). */
struct qfs_wgen {
	struct qfs_wgen *next;
	dev_t dev;
	ino_t ino;
	unsigned refs;		/* guarded by wgen_lock */
	atomic_uint_fast64_t started;
	atomic_uint_fast64_t finished;
};

static pthread_mutex_t wgen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qfs_wgen *wgens;

enum ahead_state { AHEAD_IDLE, AHEAD_QUEUED, AHEAD_READING, AHEAD_READY };

/* One block read ahead; its fields are guarded by its file's lock. */
struct ahead_slot {
	struct qfs_ahead *a;
	enum ahead_state state;
	off_t off;
	size_t len;
	void *buf;
	ssize_t got;		/* bytes read, or a negative errno */
	uint_fast64_t gen;	/* wgen->started when its read began */
	bool valid;		/* no write was under way then */
	struct ahead_slot *qnext;	/* in the worker queue */
};

struct qfs_ahead {
	int fd;
	struct qfs_wgen *wgen;
	pthread_mutex_t lock;
	pthread_cond_t done;
	off_t next_off;		/* where the last request ended, or -1 */
	struct ahead_slot slot[QFS_AHEAD_DEPTH];
};

/* ---- write counters ---------------------------------------------------------- */

struct qfs_wgen *qfs_wgen_get(const struct stat *st)
{
	dev_t dev = S_ISBLK(st->st_mode) ? st->st_rdev : st->st_dev;
	ino_t ino = S_ISBLK(st->st_mode) ? 0 : st->st_ino;
	struct qfs_wgen *g;

	pthread_mutex_lock(&wgen_lock);
	for (g = wgens; g; g = g->next)
		if (g->dev == dev && g->ino == ino)
			break;
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (g) {
			g->dev = dev;
			g->ino = ino;
			atomic_init(&g->started, 0);
			atomic_init(&g->finished, 0);
			g->next = wgens;
			wgens = g;
		}
	}
	if (g)
		g->refs++;
	pthread_mutex_unlock(&wgen_lock);
	return g;
}

void qfs_wgen_put(struct qfs_wgen *g)
{
	struct qfs_wgen **p;

	if (!g)
		return;
	pthread_mutex_lock(&wgen_lock);
	if (--g->refs == 0) {
		for (p = &wgens; *p != g; p = &(*p)->next)
			;
		*p = g->next;
		free(g);
	}
	pthread_mutex_unlock(&wgen_lock);
}

void qfs_wgen_begin(struct qfs_wgen *g)
{
	if (g)
		atomic_fetch_add(&g->started, 1);
}

void qfs_wgen_end(struct qfs_wgen *g)
{
	if (g)
		atomic_fetch_add(&g->finished, 1);
}

/* ---- workers ----------------------------------------------------------------- */

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct ahead_slot *queue_head, **queue_tail = &queue_head;
static int workers;

static void read_block(struct ahead_slot *b)
{
	struct qfs_ahead *a = b->a;
	uint_fast64_t gen = atomic_load(&a->wgen->started);
	bool valid = atomic_load(&a->wgen->finished) == gen;
	size_t done = 0;
	ssize_t n = 0;

	while (valid && done < b->len) {
		n = pread(a->fd, (char *)b->buf + done, b->len - done, b->off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	pthread_mutex_lock(&a->lock);
	b->got = n < 0 ? -errno : (ssize_t)done;
	b->gen = gen;
	b->valid = valid;
	b->state = AHEAD_READY;
	pthread_cond_broadcast(&a->done);
	pthread_mutex_unlock(&a->lock);
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		struct ahead_slot *b;

		pthread_mutex_lock(&queue_lock);
		while (!queue_head)
			pthread_cond_wait(&queue_cond, &queue_lock);
		b = queue_head;
		queue_head = b->qnext;
		if (!queue_head)
			queue_tail = &queue_head;
		pthread_mutex_unlock(&queue_lock);

		/* The owner waits for READING to end before it frees the slot. */
		pthread_mutex_lock(&b->a->lock);
		b->state = AHEAD_READING;
		pthread_mutex_unlock(&b->a->lock);
		read_block(b);
	}
	return NULL;
}

/* Starts the workers once; returns false when none could start. */
static bool workers_ready(void)
{
	pthread_mutex_lock(&queue_lock);
	while (workers < QFS_AHEAD_WORKERS) {
		pthread_t t;

		if (pthread_create(&t, NULL, worker, NULL) != 0)
			break;
		pthread_detach(t);
		workers++;
	}
	pthread_mutex_unlock(&queue_lock);
	return workers > 0;
}

static void enqueue(struct ahead_slot *b)
{
	b->qnext = NULL;
	pthread_mutex_lock(&queue_lock);
	*queue_tail = b;
	queue_tail = &b->qnext;
	pthread_cond_signal(&queue_cond);
	pthread_mutex_unlock(&queue_lock);
}

/* Takes a queued block off the queue; false when a worker already has it. */
static bool unqueue(struct ahead_slot *b)
{
	struct ahead_slot **p;
	bool found = false;

	pthread_mutex_lock(&queue_lock);
	for (p = &queue_head; *p; p = &(*p)->qnext) {
		if (*p == b) {
			*p = b->qnext;
			if (!queue_head)
				queue_tail = &queue_head;
			else if (!b->qnext)
				queue_tail = p;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&queue_lock);
	return found;
}

/* ---- per open file ---------------------------------------------------------- */

struct qfs_ahead *qfs_ahead_new(int fd, struct qfs_wgen *wgen)
{
	struct qfs_ahead *a;

	if (!wgen || !workers_ready())
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->fd = fd;
	a->wgen = wgen;
	a->next_off = -1;
	for (int i = 0; i < QFS_AHEAD_DEPTH; i++)
		a->slot[i].a = a;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->done, NULL);
	return a;
}

/* With the file's lock held: waits until no worker holds @b, then drops it. */
static void drop_locked(struct ahead_slot *b)
{
	if (b->state == AHEAD_QUEUED && unqueue(b))
		b->state = AHEAD_IDLE;
	while (b->state == AHEAD_QUEUED || b->state == AHEAD_READING)
		pthread_cond_wait(&b->a->done, &b->a->lock);
	if (b->buf)
		atomic_fetch_sub(&held, b->len);
	free(b->buf);
	b->buf = NULL;
	b->state = AHEAD_IDLE;
}

void qfs_ahead_free(struct qfs_ahead *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < QFS_AHEAD_DEPTH; i++)
		drop_locked(&a->slot[i]);
	pthread_mutex_unlock(&a->lock);
	pthread_cond_destroy(&a->done);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

bool qfs_ahead_take(struct qfs_ahead *a, off_t off, size_t len, void **buf, size_t *n)
{
	struct ahead_slot *b = NULL;
	bool hit = false;

	if (!a)
		return false;
	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < QFS_AHEAD_DEPTH; i++)
		if (a->slot[i].state != AHEAD_IDLE && a->slot[i].off == off && a->slot[i].len == len)
			b = &a->slot[i];
	if (b) {
		while (b->state != AHEAD_READY)
			pthread_cond_wait(&a->done, &a->lock);
		/* Nothing was written to the backing since the read began. */
		hit = b->valid && b->got >= 0 && atomic_load(&a->wgen->started) == b->gen;
		if (hit) {
			atomic_fetch_sub(&held, b->len);
			*buf = b->buf;
			*n = (size_t)b->got;
			b->buf = NULL;
			b->state = AHEAD_IDLE;
		}
	}
	/* A reader that moved elsewhere, or a write: the rest is dropped. */
	for (int i = 0; i < QFS_AHEAD_DEPTH; i++)
		if (a->slot[i].state != AHEAD_IDLE && (!hit || a->slot[i].off < off))
			drop_locked(&a->slot[i]);
	pthread_mutex_unlock(&a->lock);
	return hit;
}

/* With the lock held: whether a block at @off is read ahead already. */
static bool have_locked(const struct qfs_ahead *a, off_t off)
{
	for (int i = 0; i < QFS_AHEAD_DEPTH; i++)
		if (a->slot[i].state != AHEAD_IDLE && a->slot[i].off == off)
			return true;
	return false;
}

void qfs_ahead_done(struct qfs_ahead *a, off_t off, size_t len, uint64_t size)
{
	bool sequential;
	off_t next;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	sequential = a->next_off == off;
	next = a->next_off = off + (off_t)len;
	/* Aligned blocks only: the descriptor is O_DIRECT. */
	if (!sequential || !len || (((uint64_t)off | len) & (QFS_AHEAD_ALIGN - 1)))
		goto out;
	for (int i = 0; i < QFS_AHEAD_DEPTH && (uint64_t)next < size; i++, next += (off_t)len) {
		struct ahead_slot *b = NULL;
		size_t n = len;

		if (have_locked(a, next))
			continue;
		for (int j = 0; j < QFS_AHEAD_DEPTH && !b; j++)
			if (a->slot[j].state == AHEAD_IDLE)
				b = &a->slot[j];
		if ((uint64_t)next + n > size)
			n = (size_t)(size - (uint64_t)next);
		if (!b || (n & (QFS_AHEAD_ALIGN - 1)))
			break;
		if (atomic_fetch_add(&held, n) + n > QFS_AHEAD_BUDGET) {
			atomic_fetch_sub(&held, n);
			break;
		}
		if (posix_memalign(&b->buf, QFS_AHEAD_ALIGN, n)) {
			atomic_fetch_sub(&held, n);
			b->buf = NULL;
			break;
		}
		b->off = next;
		b->len = n;
		b->state = AHEAD_QUEUED;
		enqueue(b);
	}
out:
	pthread_mutex_unlock(&a->lock);
}
