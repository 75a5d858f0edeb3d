/* qpool backup: ordered writes from a thread of their own (see bk_aout.h). */
#include "bk_aout.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One write: appended at the file's running offset, or at @off. */
struct op {
	uint8_t *data;
	size_t len;
	bool positional;
	uint64_t off;
};

struct bk_aout {
	int fd;
	const char *what;
	pthread_t thread;
	bool started;
	/* ---- under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct op ring[BK_AOUT_BUFS]; /* the caller fills ring[(head + count) % N] */
	unsigned head, count;	      /* the thread's next op; ops handed over */
	bool done, stop;      /* no more ops; drop what is left */
	int ret;
	struct qp_err err;
};

static int write_all(struct bk_aout *a, const struct op *o, uint64_t *pos, struct qp_err *err)
{
	uint64_t off = o->positional ? o->off : *pos;

	for (size_t done = 0; done < o->len;) {
		ssize_t n = pwrite(a->fd, o->data + done, o->len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return qp_err_set(err, n < 0 ? -errno : -EIO, "cannot write %s: %s", a->what,
					  n < 0 ? strerror(errno) : "no progress");
		done += (size_t)n;
	}
	if (!o->positional)
		*pos += o->len;
	return 0;
}

static void *aout_main(void *arg)
{
	struct bk_aout *a = arg;
	off_t start = lseek(a->fd, 0, SEEK_CUR);
	uint64_t pos = start < 0 ? 0 : (uint64_t)start, synced = pos;
	struct qp_err err = { 0 };
	int r = 0;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		struct op o;

		while (a->count == 0 && !a->done && !a->stop)
			pthread_cond_wait(&a->cond, &a->lock);
		if (a->stop || a->count == 0)
			break;
		o = a->ring[a->head];
		pthread_mutex_unlock(&a->lock);
		r = write_all(a, &o, &pos, &err);
		/* Writeback starts now instead of at the final fsync; a hint,
		 * whatever it answers. */
		if (r == 0 && pos - synced >= BK_AOUT_FLUSH) {
			(void)sync_file_range(a->fd, (off_t)synced, (off_t)(pos - synced),
					      SYNC_FILE_RANGE_WRITE);
			synced = pos;
		}
		pthread_mutex_lock(&a->lock);
		if (r < 0) {
			a->ret = r;
			a->err = err;
			a->stop = true;
		}
		a->ring[a->head].len = 0;
		a->head = (a->head + 1) % BK_AOUT_BUFS;
		a->count--;
		pthread_cond_broadcast(&a->cond);
	}
	/* The file's offset where appends ended, as write() would leave it. */
	if (a->ret == 0 && !a->stop)
		(void)lseek(a->fd, (off_t)pos, SEEK_SET);
	a->stop = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int bk_aout_start(int fd, const char *what, struct bk_aout **out, struct qp_err *err)
{
	struct bk_aout *a = calloc(1, sizeof(*a));
	int r;

	*out = NULL;
	if (!a)
		return qp_err_set(err, -ENOMEM, "out of memory");
	a->fd = fd;
	a->what = what;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	for (int i = 0; i < BK_AOUT_BUFS; i++) {
		a->ring[i].data = malloc(BK_AOUT_BUF);
		if (!a->ring[i].data) {
			bk_aout_free(a);
			return qp_err_set(err, -ENOMEM, "out of memory");
		}
	}
	r = pthread_create(&a->thread, NULL, aout_main, a);
	if (r) {
		bk_aout_free(a);
		return qp_err_set(err, -r, "cannot start a thread: %s", strerror(r));
	}
	a->started = true;
	*out = a;
	return 0;
}

/* With the lock held: the first error, or 0. */
static int failed(struct bk_aout *a, struct qp_err *err)
{
	if (a->ret < 0) {
		*err = a->err;
		return a->ret;
	}
	return a->stop ? qp_err_set(err, -ECANCELED, "writing %s was stopped", a->what) : 0;
}

/* With the lock held: the op being filled, once there is room for one. */
static struct op *fill_op(struct bk_aout *a)
{
	while (a->count == BK_AOUT_BUFS && !a->stop)
		pthread_cond_wait(&a->cond, &a->lock);
	return &a->ring[(a->head + a->count) % BK_AOUT_BUFS];
}

/* With the lock held: hands the op being filled to the thread. */
static void hand_over(struct bk_aout *a)
{
	a->count++;
	pthread_cond_broadcast(&a->cond);
}

int bk_aout_write(void *aout, const void *buf, size_t len, struct qp_err *err)
{
	struct bk_aout *a = aout;
	const uint8_t *p = buf;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	while (len > 0 && (r = failed(a, err)) == 0) {
		struct op *o = fill_op(a);
		size_t n = BK_AOUT_BUF - o->len < len ? BK_AOUT_BUF - o->len : len;

		if (a->stop)
			continue;
		o->positional = false;
		/* The copy runs without the lock: the thread does not touch
		 * the op being filled. */
		pthread_mutex_unlock(&a->lock);
		memcpy(o->data + o->len, p, n);
		pthread_mutex_lock(&a->lock);
		o->len += n;
		p += n;
		len -= n;
		if (o->len == BK_AOUT_BUF)
			hand_over(a);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

int bk_aout_pwrite(struct bk_aout *a, const void *buf, size_t len, uint64_t off,
		   struct qp_err *err)
{
	struct op *o;
	int r;

	if (len > BK_AOUT_BUF)
		return qp_err_set(err, -EINVAL, "positional write of %zu bytes is too large", len);
	pthread_mutex_lock(&a->lock);
	o = fill_op(a);
	if (o->len > 0 && !a->stop) {
		hand_over(a);
		o = fill_op(a);
	}
	r = failed(a, err);
	if (r == 0) {
		memcpy(o->data, buf, len);
		o->len = len;
		o->positional = true;
		o->off = off;
		hand_over(a);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

int bk_aout_finish(struct bk_aout *a, struct qp_err *err)
{
	int r;

	pthread_mutex_lock(&a->lock);
	if (!a->stop) {
		struct op *o = fill_op(a);

		if (o->len > 0 && !a->stop)
			hand_over(a);
	}
	a->done = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	if (a->started) {
		pthread_join(a->thread, NULL);
		a->started = false;
	}
	r = a->ret;
	if (r < 0)
		*err = a->err;
	return r;
}

void bk_aout_free(struct bk_aout *a)
{
	if (!a)
		return;
	if (a->started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	for (int i = 0; i < BK_AOUT_BUFS; i++)
		free(a->ring[i].data);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}
