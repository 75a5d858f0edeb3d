/* Small shared pieces of the storage core: errors, key/value lists, parsers,
 * names, classes, the crash-test hook and the boot id. */
#include "qpool.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int qp_err_set(struct qp_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

int qp_err_prefix(struct qp_err *err, const char *fmt, ...)
{
	char pre[512], old[sizeof(err->msg)];
	va_list ap;

	if (!err)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* Truncation is acceptable: the message stays NUL-terminated. */
	size_t n = strlen(pre);

	if (n > sizeof(err->msg) - 3)
		n = sizeof(err->msg) - 3;
	memcpy(err->msg, pre, n);
	memcpy(err->msg + n, ": ", 2);
	snprintf(err->msg + n + 2, sizeof(err->msg) - n - 2, "%.*s",
		 (int)(sizeof(err->msg) - n - 3), old);
	return err->code;
}

char *qp_strdupf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

/* ---- key/value lists ---------------------------------------------------- */

const char *qp_kv_get(const struct qp_kvlist *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].key, key))
			return l->v[i].val;
	return NULL;
}

int qp_kv_set(struct qp_kvlist *l, const char *key, const char *val)
{
	struct qp_kv *nv;
	char *k, *v;

	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i].key, key))
			continue;
		if (!val) {
			free(l->v[i].key);
			free(l->v[i].val);
			memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(*l->v));
			l->n--;
			return 0;
		}
		v = strdup(val);
		if (!v)
			return -ENOMEM;
		free(l->v[i].val);
		l->v[i].val = v;
		return 0;
	}
	if (!val)
		return 0;
	nv = realloc(l->v, (l->n + 1) * sizeof(*l->v));
	if (!nv)
		return -ENOMEM;
	l->v = nv;
	k = strdup(key);
	v = strdup(val);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	l->v[l->n].key = k;
	l->v[l->n].val = v;
	l->n++;
	return 0;
}

void qp_kv_release(struct qp_kvlist *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].val);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* ---- parsers ------------------------------------------------------------ */

int qp_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "1", "yes", "on", NULL };
	static const char *const no[] = { "false", "0", "no", "off", NULL };

	if (!s)
		return -EINVAL;
	for (int i = 0; yes[i]; i++)
		if (!strcasecmp(s, yes[i]))
			return *out = true, 0;
	for (int i = 0; no[i]; i++)
		if (!strcasecmp(s, no[i]))
			return *out = false, 0;
	return -EINVAL;
}

int qp_parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int qp_parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mul;
	} units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1000ULL }, { "KB", 1000ULL }, { "Ki", 1ULL << 10 }, { "KiB", 1ULL << 10 },
		{ "M", 1000000ULL }, { "MB", 1000000ULL }, { "Mi", 1ULL << 20 }, { "MiB", 1ULL << 20 },
		{ "G", 1000000000ULL }, { "GB", 1000000000ULL }, { "Gi", 1ULL << 30 },
		{ "GiB", 1ULL << 30 },
		{ "T", 1000000000000ULL }, { "TB", 1000000000000ULL }, { "Ti", 1ULL << 40 },
		{ "TiB", 1ULL << 40 },
	};
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix))
			continue;
		if (v > UINT64_MAX / units[i].mul)
			return -ERANGE;
		*out = v * units[i].mul;
		return 0;
	}
	return -EINVAL;
}

/* ---- names and classes -------------------------------------------------- */

bool qp_name_valid(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len > QP_NAME_MAX || name[0] == '-' || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = name[i];

		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return false;
	}
	return true;
}

static const char *const class_names[] = {
	[QP_ADMINVM] = "AdminVM",
	[QP_TEMPLATEVM] = "TemplateVM",
	[QP_STANDALONEVM] = "StandaloneVM",
	[QP_APPVM] = "AppVM",
	[QP_DISPVM] = "DispVM",
};

const char *qp_class_name(enum qp_class c)
{
	if ((unsigned)c >= sizeof(class_names) / sizeof(class_names[0]))
		return "unknown";
	return class_names[c];
}

int qp_class_parse(const char *s, enum qp_class *out)
{
	for (size_t i = 0; i < sizeof(class_names) / sizeof(class_names[0]); i++) {
		if (s && !strcasecmp(s, class_names[i])) {
			*out = (enum qp_class)i;
			return 0;
		}
	}
	return -EINVAL;
}

void qp_revisions_free(struct qp_revision *r, size_t n)
{
	if (!r)
		return;
	for (size_t i = 0; i < n; i++) {
		free(r[i].id);
		free(r[i].time);
	}
	free(r);
}

void qp_attach_free(struct qp_attach *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++) {
		free(a[i].volume);
		free(a[i].path);
	}
	free(a);
}

/* ---- test hook ---------------------------------------------------------- */

void qp_step(const char *what)
{
	static long crash_after = -1;
	static long count;
	static int trace = -1;

	if (crash_after < 0) {
		const char *s = getenv("QPOOL_CRASH_AFTER");

		crash_after = s && *s ? strtol(s, NULL, 10) : 0;
		if (crash_after < 0)
			crash_after = 0;
	}
	if (trace < 0) {
		const char *s = getenv("QPOOL_STEP_TRACE");

		trace = s && *s && strcmp(s, "0");
	}
	count++;
	if (trace)
		fprintf(stderr, "qpool-step %ld %s\n", count, what);
	if (crash_after && count == crash_after)
		_exit(99);
}

/* ---- boot id ------------------------------------------------------------ */

const char *qp_boot_id(void)
{
	static char id[64];
	const char *env;
	ssize_t n;
	int fd;

	if (id[0])
		return id;
	env = getenv("QPOOL_BOOT_ID");
	if (env && *env) {
		snprintf(id, sizeof(id), "%s", env);
		return id;
	}
	fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	n = fd >= 0 ? read(fd, id, sizeof(id) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		snprintf(id, sizeof(id), "unknown");
		return id;
	}
	id[n] = '\0';
	id[strcspn(id, "\n")] = '\0';
	return id;
}
