/* Volume operations: queries, revert, resize, import, clone, clear, config. */
#include "qpool.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int qp_vol_lookup(struct qp_state *st, const char *spec, struct qp_volume **out,
		  struct qp_err *err)
{
	const char *colon = strchr(spec, ':');
	struct qp_domain *d;
	char vm[QP_NAME_MAX + 1];
	size_t len;

	*out = NULL;
	if (!colon || colon == spec || !colon[1])
		return qp_err_set(err, -EINVAL, "expected VM:VOLUME, got '%s'", spec);
	len = (size_t)(colon - spec);
	if (len > QP_NAME_MAX)
		return qp_err_set(err, -EINVAL, "invalid VM name in '%s'", spec);
	memcpy(vm, spec, len);
	vm[len] = '\0';
	if (!qp_name_valid(vm) && strcmp(vm, "dom0"))
		return qp_err_set(err, -EINVAL, "invalid VM name '%s'", vm);
	d = qp_dom_find(st, vm);
	if (!d)
		return qp_err_set(err, -ENOENT, "VM '%s' does not exist", vm);
	*out = qp_dom_volume(d, colon + 1);
	if (!*out)
		return qp_err_set(err, -ENOENT, "VM '%s' has no volume '%s'", vm, colon + 1);
	return 0;
}

int qp_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	return r < 0 ? r : v->pool->drv->vol_is_dirty(v, out, err);
}

int qp_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	*out = false;
	if (r < 0)
		return r;
	if (!v->snap_on_start || !qp_dom_started(v->vm))
		return 0;
	return v->pool->drv->vol_is_outdated(v, out, err);
}

int qp_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	return r < 0 ? r : v->pool->drv->vol_usage(v, size, usage, err);
}

int qp_vol_verify(struct qp_volume *v, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	return r < 0 ? r : v->pool->drv->vol_verify(v, err);
}

int qp_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
		     struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	*out = NULL;
	*n = 0;
	return r < 0 ? r : v->pool->drv->vol_revisions(v, out, n, err);
}

int qp_vol_export(struct qp_volume *v, char **path, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	*path = NULL;
	if (r < 0)
		return r;
	if (!v->save_on_stop && !v->snap_on_start && !v->pool->drv->read_only)
		return qp_err_set(err, -ENOTSUP, "volume '%s:%s' is volatile and has no saved content",
				  v->vm->name, v->name);
	return v->pool->drv->vol_export(v, path, err);
}

/* Refuses changes to a volume whose content its pool manages. */
static int check_managed(const struct qp_volume *v, struct qp_err *err)
{
	if (v->pool && v->pool->drv && v->pool->drv->read_only)
		return qp_err_set(err, -EROFS,
				  "volume '%s:%s' is read-only: it is managed by %s pool '%s'",
				  v->vm->name, v->name, v->pool->drv->name, v->pool->name);
	return 0;
}

/* Common preconditions of the operations that replace a volume's content. */
static int check_replace(struct qp_volume *v, const char *what, struct qp_err *err)
{
	int r = qp_vol_ready(v, err);

	if (r == 0)
		r = check_managed(v, err);
	if (r == 0)
		r = qp_dom_halted(v->vm, err);
	if (r == 0 && !v->save_on_stop)
		r = qp_err_set(err, -EINVAL, "volume '%s:%s' is not saved on stop", v->vm->name,
			       v->name);
	if (r < 0)
		qp_err_prefix(err, "cannot %s volume '%s:%s'", what, v->vm->name, v->name);
	return r;
}

int qp_vol_revert(struct qp_state *st, struct qp_volume *v, const char *rev, struct qp_err *err)
{
	struct qp_revision *revs = NULL;
	size_t n = 0;
	char *pick = NULL;
	int r;

	(void)st;
	r = check_replace(v, "revert", err);
	if (r < 0)
		return r;
	if (!rev) {
		r = v->pool->drv->vol_revisions(v, &revs, &n, err);
		if (r < 0)
			return r;
		if (n == 0) {
			qp_revisions_free(revs, n);
			return qp_err_set(err, -ENOENT, "no snapshots available for volume '%s:%s'",
					  v->vm->name, v->name);
		}
		pick = strdup(revs[n - 1].id);
		qp_revisions_free(revs, n);
		if (!pick)
			return qp_err_set(err, -ENOMEM, "out of memory");
		rev = pick;
	}
	r = v->pool->drv->vol_revert(v, rev, err);
	free(pick);
	return r;
}

int qp_vol_resize(struct qp_state *st, struct qp_volume *v, uint64_t size, unsigned flags,
		  struct qp_err *err)
{
	int r;

	if (flags & ~QP_RESIZE_FORCE)
		return qp_err_set(err, -EINVAL, "unknown resize flags");
	r = qp_vol_ready(v, err);
	if (r == 0)
		r = check_managed(v, err);
	if (r < 0)
		return r;
	if (!v->rw)
		return qp_err_set(err, -EROFS, "volume '%s:%s' is read-only", v->vm->name, v->name);
	if (v->snap_on_start && !qp_dom_started(v->vm))
		return qp_err_set(err, -EINVAL,
				  "volume '%s:%s' takes its size from '%s' at start; resize the source",
				  v->vm->name, v->name, v->source ? v->source : "its source");
	if (size == 0)
		return qp_err_set(err, -EINVAL, "a volume cannot have size 0");
	if (size < v->size && !(flags & QP_RESIZE_FORCE))
		return qp_err_set(err, -EINVAL,
				  "refusing to shrink volume '%s:%s' from %llu to %llu bytes; use --force",
				  v->vm->name, v->name, (unsigned long long)v->size,
				  (unsigned long long)size);
	if (size == v->size)
		return 0;
	r = v->pool->drv->vol_resize(v, size, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot resize volume '%s:%s'", v->vm->name, v->name);
	v->size = size;
	return qp_state_save(st, err);
}

static bool all_zero(const unsigned char *b, size_t n)
{
	return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

/* Copies exactly @size bytes from @in to @out, leaving zero blocks as holes
 * (the staging file is already sparse at its full size). */
static int copy_stream(int in, int out, uint64_t size, const char *what, struct qp_err *err)
{
	enum { BUF = 1 << 20 };
	unsigned char *buf = malloc(BUF);
	uint64_t done = 0;
	int r = 0;

	if (!buf)
		return qp_err_set(err, -ENOMEM, "out of memory");
	while (done < size) {
		size_t want = size - done < BUF ? (size_t)(size - done) : BUF;
		size_t got = 0;

		while (got < want) {
			ssize_t n = read(in, buf + got, want - got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				r = qp_err_set(err, -errno, "cannot read %s: %s", what, strerror(errno));
				goto out;
			}
			if (n == 0) {
				r = qp_err_set(err, -EIO, "%s ended after %llu of %llu bytes", what,
					       (unsigned long long)(done + got),
					       (unsigned long long)size);
				goto out;
			}
			got += (size_t)n;
		}
		if (!all_zero(buf, got)) {
			for (size_t off = 0; off < got;) {
				ssize_t n = pwrite(out, buf + off, got - off, (off_t)(done + off));

				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0) {
					r = qp_err_set(err, -errno, "cannot write the volume: %s",
						       strerror(errno));
					goto out;
				}
				off += (size_t)n;
			}
		}
		done += got;
	}
	/* Refuse input longer than announced rather than silently cutting it. */
	for (;;) {
		ssize_t n = read(in, buf, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			r = qp_err_set(err, -EFBIG, "%s is longer than %llu bytes", what,
				       (unsigned long long)size);
		break;
	}
	if (r == 0 && fsync(out) < 0)
		r = qp_err_set(err, -errno, "cannot write the volume: %s", strerror(errno));
out:
	free(buf);
	return r;
}

/* Begins an import of @size bytes, fills it from @fd (fd < 0: leaves it
 * empty) and commits it, or removes the staging on any failure. */
static int import_from(struct qp_volume *v, int fd, uint64_t size, struct qp_err *err)
{
	const struct qp_driver *drv = v->pool->drv;
	struct qp_err ignore;
	char *path = NULL;
	int out = -1, r;

	r = drv->vol_import_begin(v, size, &path, err);
	if (r < 0)
		return r;
	if (fd >= 0) {
		out = open(path, O_WRONLY | O_CLOEXEC);
		if (out < 0)
			r = qp_err_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
		else
			r = copy_stream(fd, out, size, "the input", err);
		if (out >= 0 && close(out) < 0 && r == 0)
			r = qp_err_set(err, -errno, "cannot write '%s': %s", path, strerror(errno));
	}
	free(path);
	if (r < 0) {
		drv->vol_import_end(v, false, &ignore);
		return r;
	}
	return drv->vol_import_end(v, true, err);
}

int qp_vol_import(struct qp_state *st, struct qp_volume *v, int fd, uint64_t size,
		  unsigned flags, struct qp_err *err)
{
	int r;

	if (flags & ~QP_IMPORT_RESIZE)
		return qp_err_set(err, -EINVAL, "unknown import flags");
	r = check_replace(v, "import into", err);
	if (r < 0)
		return r;
	if (!(flags & QP_IMPORT_RESIZE) && size != v->size)
		return qp_err_set(err, -EINVAL,
				  "input size %llu differs from the size %llu of volume '%s:%s'",
				  (unsigned long long)size, (unsigned long long)v->size,
				  v->vm->name, v->name);
	if (size == 0)
		return qp_err_set(err, -EINVAL, "cannot import an empty volume");
	r = import_from(v, fd, size, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot import into volume '%s:%s'", v->vm->name,
				     v->name);
	v->size = size;
	return qp_state_save(st, err);
}

int qp_vol_clear(struct qp_state *st, struct qp_volume *v, struct qp_err *err)
{
	int r = check_replace(v, "clear", err);

	if (r < 0)
		return r;
	r = import_from(v, -1, v->size, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot clear volume '%s:%s'", v->vm->name, v->name);
	(void)st;
	return 0;
}

int qp_vol_clone(struct qp_state *st, struct qp_volume *src, struct qp_volume *dst,
		 struct qp_err *err)
{
	int r;

	if (src == dst)
		return qp_err_set(err, -EINVAL, "cannot clone volume '%s:%s' onto itself",
				  src->vm->name, src->name);
	r = qp_vol_ready(src, err);
	if (r == 0 && !src->save_on_stop)
		r = qp_err_set(err, -EINVAL, "source volume '%s:%s' is not saved on stop",
			       src->vm->name, src->name);
	if (r == 0 && qp_vol_rtk(src) == -1 && qp_dom_started(src->vm))
		r = qp_err_set(err, -EBUSY,
			       "source volume '%s:%s' is running with snapshots disabled",
			       src->vm->name, src->name);
	if (r < 0)
		return r;
	r = check_replace(dst, "clone into", err);
	if (r < 0)
		return r;
	r = dst->pool->drv->vol_import_volume(dst, src, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot clone '%s:%s' into '%s:%s'", src->vm->name,
				     src->name, dst->vm->name, dst->name);
	dst->size = src->size;
	return qp_state_save(st, err);
}

static int config_rtk(struct qp_volume *v, const char *val, struct qp_err *err)
{
	long long n;
	bool was_off = qp_vol_rtk(v) == -1;

	if (qp_parse_int(val, -1, 1000000, &n) < 0)
		return qp_err_set(err, -EINVAL, "revisions_to_keep must be an integer >= -1, not '%s'",
				  val);
	if (n == -1 && (!v->save_on_stop || v->snap_on_start))
		return qp_err_set(err, -EINVAL,
				  "snapshots can be disabled only on volumes saved on stop");
	if ((n == -1) != was_off) {
		int r = qp_dom_halted(v->vm, err);

		for (size_t i = 0; r == 0 && i < v->vm->st->n_doms; i++) {
			struct qp_domain *d = v->vm->st->doms[i];

			for (size_t j = 0; r == 0 && j < d->n_vols; j++)
				if (d->vols[j]->src == v && qp_dom_started(d))
					r = qp_err_set(err, -EBUSY, "VM '%s' uses this volume",
						       d->name);
		}
		if (r < 0)
			return r;
	}
	v->rtk_set = true;
	v->rtk = (int)n;
	return 0;
}

int qp_vol_config(struct qp_state *st, struct qp_volume *v, const char *prop, const char *val,
		  struct qp_err *err)
{
	bool b;
	int r = 0;

	if (!strcmp(prop, "revisions_to_keep")) {
		r = config_rtk(v, val, err);
	} else if (!strcmp(prop, "rw") || !strcmp(prop, "ephemeral")) {
		if (qp_parse_bool(val, &b) < 0)
			return qp_err_set(err, -EINVAL, "'%s' is not a boolean (True or False)", val);
		r = qp_dom_halted(v->vm, err);
		if (r == 0 && prop[0] == 'r' && b)
			r = check_managed(v, err);
		if (r == 0 && prop[0] == 'r')
			v->rw = b;
		if (r == 0 && prop[0] == 'e') {
			if (b && (v->snap_on_start || v->save_on_stop || !v->rw))
				return qp_err_set(err, -EINVAL,
						  "only volatile, writable volumes can be ephemeral");
			v->ephemeral = b;
		}
	} else {
		return qp_err_set(err, -EINVAL,
				  "unknown volume property '%s' (rw, revisions_to_keep, ephemeral)",
				  prop);
	}
	if (r < 0)
		return qp_err_prefix(err, "cannot set '%s' of volume '%s:%s'", prop, v->vm->name,
				     v->name);
	return qp_state_save(st, err);
}
