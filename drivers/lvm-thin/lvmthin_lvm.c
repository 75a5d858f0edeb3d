/* The lvm_thin driver's dealings with LVM: names, running `lvm`, reading its
 * report and keeping a cached copy in step with the driver's own changes
 * (layout in lvmthin.h).
 *
 * The report is `lvm lvs` with fixed columns separated by '|', which no VG
 * or LV name can contain, sizes in bytes without a suffix:
 *   lv_name|pool_lv|origin|lv_attr|lv_size|data_percent|lv_metadata_size|metadata_percent
 */
#include "lvmthin_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPORT_FIELDS                                                                              \
	"lv_name,pool_lv,origin,lv_attr,lv_size,data_percent,lv_metadata_size,"                    \
	"metadata_percent"
#define REPORT_NFIELDS 8
/* A cached report older than this is read again (another process may have
 * changed the VG meanwhile). */
#define REPORT_MAX_AGE 2

/* ---- names ----------------------------------------------------------------- */

bool lvmthin_name_valid(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (!len || len > 127 || name[0] == '-' || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Appends @s to @dst with every '-' doubled; returns the new end. */
static char *mangle(char *dst, const char *s)
{
	for (; *s; s++) {
		*dst++ = *s;
		if (*s == '-')
			*dst++ = '-';
	}
	return dst;
}

char *lvmthin_dm_path(const char *vg, const char *lv)
{
	static const char prefix[] = "/dev/mapper/";
	char *path = malloc(sizeof(prefix) + 2 * (strlen(vg) + strlen(lv)) + 2);
	char *end;

	if (!path)
		return NULL;
	memcpy(path, prefix, sizeof(prefix) - 1);
	end = mangle(path + sizeof(prefix) - 1, vg);
	*end++ = '-';
	end = mangle(end, lv);
	*end = '\0';
	return path;
}

int lvmthin_vid_split(const char *vid, char **vg, char **lv, struct qp_err *err)
{
	const char *slash = vid ? strchr(vid, '/') : NULL;

	*vg = *lv = NULL;
	if (!slash || strchr(slash + 1, '/'))
		return qp_err_set(err, -EINVAL, "invalid volume id '%s': expected VG/LV",
				  vid ? vid : "");
	*vg = strndup(vid, (size_t)(slash - vid));
	*lv = strdup(slash + 1);
	if (!*vg || !*lv) {
		free(*vg);
		free(*lv);
		*vg = *lv = NULL;
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	if (!lvmthin_name_valid(*vg) || !lvmthin_name_valid(*lv)) {
		free(*vg);
		free(*lv);
		*vg = *lv = NULL;
		return qp_err_set(err, -EINVAL, "invalid volume id '%s': expected VG/LV", vid);
	}
	return 0;
}

long long lvmthin_rev_num(const char *name, const char *base)
{
	size_t len = strlen(base);
	const char *s = name + len + 1;
	long long num = 0;
	size_t digits = 0;

	if (strncmp(name, base, len) || name[len] != '-')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (digits >= 18)
			return -1;
		num = num * 10 + (*s - '0');
	}
	if (!digits || strcmp(s, "-back"))
		return -1;
	return num;
}

uint64_t lvmthin_bp_of(uint64_t size, uint32_t bp)
{
	if (bp > LVMTHIN_BP_FULL)
		bp = LVMTHIN_BP_FULL;
	return size / LVMTHIN_BP_FULL * bp + size % LVMTHIN_BP_FULL * bp / LVMTHIN_BP_FULL;
}

void lvmthin_iso_time(long long epoch, char *buf, size_t len)
{
	time_t t = (time_t)epoch;
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm))
		snprintf(buf, len, "1970-01-01T00:00:00");
}

/* ---- running lvm ----------------------------------------------------------- */

int lvmthin_lvm(char *const argv[], char **out, struct qp_err *err)
{
	static const char failed[] = "'lvm' failed: ";
	char *full[32];
	size_t n = 0;
	int ret;

	full[n++] = "lvm";
	if (argv[0]) {
		/* Drives come and go under the same device names: LVM's record of
		 * which devices held physical volumes (its hints) goes stale, so
		 * every command scans. */
		full[n++] = argv[0];
		full[n++] = "--config";
		full[n++] = "devices { hints = \"none\" }";
		for (size_t i = 1; argv[i]; i++) {
			if (n >= sizeof(full) / sizeof(full[0]) - 1)
				return qp_err_set(err, -E2BIG, "too many arguments for lvm");
			full[n++] = argv[i];
		}
	}
	full[n] = NULL;
	/* lvm warns about every descriptor it inherits without close-on-exec
	 * (a caller's shell may leave some open); that warning would come
	 * first on stderr and hide LVM's real message. */
	if (!getenv("LVM_SUPPRESS_FD_WARNINGS"))
		setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 0);
	ret = qp_run(full, out, err);
	if (ret < 0 && !strncmp(err->msg, failed, sizeof(failed) - 1)) {
		char msg[sizeof(err->msg)];

		snprintf(msg, sizeof(msg), "%s", err->msg + sizeof(failed) - 1);
		qp_err_set(err, ret, "lvm: %s", msg);
	}
	return ret;
}

/* ---- the report ------------------------------------------------------------ */

static void lv_release(struct lvmthin_lv *l)
{
	free(l->name);
	free(l->pool_lv);
	free(l->origin);
	memset(l, 0, sizeof(*l));
}

void lvmthin_report_free(struct lvmthin_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		lv_release(&r->lv[i]);
	free(r->lv);
	free(r->vg);
	free(r);
}

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s) {
		*out = 0;
		return 0;
	}
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	/* a fraction of a byte is never printed, but would be harmless */
	if (*s == '.' || *s == ',')
		for (s++; *s >= '0' && *s <= '9'; s++)
			;
	*out = v;
	return *s ? -1 : 0;
}

/* "12.34" (or "12,34" in some locales) into 1234; "" is 0. */
static int parse_bp(const char *s, uint32_t *out)
{
	uint32_t whole = 0, frac = 0;
	int fd = 0;

	for (; *s >= '0' && *s <= '9'; s++) {
		if (whole > 100000)
			return -1;
		whole = whole * 10 + (uint32_t)(*s - '0');
	}
	if (*s == '.' || *s == ',')
		for (s++; *s >= '0' && *s <= '9'; s++, fd++)
			if (fd < 2)
				frac = frac * 10 + (uint32_t)(*s - '0');
	if (fd == 1)
		frac *= 10;
	*out = whole * 100 + frac;
	return *s ? -1 : 0;
}

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/* Parses one report line into @l. */
static int parse_line(char *line, struct lvmthin_lv *l)
{
	char *f[REPORT_NFIELDS], *p = line;
	size_t n = 0;

	for (; n < REPORT_NFIELDS; n++) {
		char *bar = strchr(p, '|');

		f[n] = p;
		if (!bar)
			break;
		*bar = '\0';
		p = bar + 1;
	}
	if (n != REPORT_NFIELDS - 1)
		return -EINVAL;
	for (n = 0; n < REPORT_NFIELDS; n++)
		f[n] = trim(f[n]);
	if (!lvmthin_name_valid(f[0]) || strlen(f[3]) >= sizeof(l->attr))
		return -EINVAL;
	if (parse_u64(f[4], &l->size) < 0 || parse_bp(f[5], &l->data_bp) < 0 ||
	    parse_u64(f[6], &l->meta_size) < 0 || parse_bp(f[7], &l->meta_bp) < 0)
		return -EINVAL;
	snprintf(l->attr, sizeof(l->attr), "%s", f[3]);
	l->name = strdup(f[0]);
	l->pool_lv = strdup(f[1]);
	l->origin = strdup(f[2]);
	if (!l->name || !l->pool_lv || !l->origin) {
		lv_release(l);
		return -ENOMEM;
	}
	return 0;
}

static long long now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

int lvmthin_report_parse(const char *vg, const char *text, struct lvmthin_report **out,
			 struct qp_err *err)
{
	struct lvmthin_report *r = calloc(1, sizeof(*r));
	char *copy = strdup(text), *save = NULL, *line;
	int ret = -ENOMEM;

	*out = NULL;
	if (!r || !copy || !(r->vg = strdup(vg)))
		goto nomem;
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct lvmthin_lv l = { 0 }, *nl;
		char *t = trim(line);

		if (!*t)
			continue;
		ret = parse_line(t, &l);
		if (ret == -ENOMEM)
			goto nomem;
		if (ret < 0) {
			ret = qp_err_set(err, -EIO,
					 "unexpected line in the LVM report of '%s': '%.200s'", vg,
					 t);
			goto out;
		}
		nl = realloc(r->lv, (r->n + 1) * sizeof(*nl));
		if (!nl) {
			lv_release(&l);
			goto nomem;
		}
		r->lv = nl;
		r->lv[r->n++] = l;
	}
	r->when = now_mono();
	*out = r;
	r = NULL;
	ret = 0;
	goto out;
nomem:
	ret = qp_err_set(err, -ENOMEM, "out of memory");
out:
	lvmthin_report_free(r);
	free(copy);
	return ret;
}

int lvmthin_report_read(const char *vg, struct lvmthin_report **out, struct qp_err *err)
{
	char *argv[] = { "lvs",	       "--noheadings", "--separator", "|",  "--units",	"b",
			 "--nosuffix", "-o",	       REPORT_FIELDS, "--", (char *)vg, NULL };
	char *text = NULL;
	int ret;

	*out = NULL;
	ret = lvmthin_lvm(argv, &text, err);
	if (ret == 0)
		ret = lvmthin_report_parse(vg, text ? text : "", out, err);
	free(text);
	return ret;
}

int lvmthin_report(struct lvmthin_pool *p, bool renew, struct lvmthin_report **out,
		   struct qp_err *err)
{
	int ret;

	if (p->rep && (!renew || now_mono() - p->rep->when <= REPORT_MAX_AGE)) {
		*out = p->rep;
		return 0;
	}
	lvmthin_report_free(p->rep);
	p->rep = NULL;
	ret = lvmthin_report_read(p->vg, &p->rep, err);
	*out = p->rep;
	return ret;
}

const struct lvmthin_lv *lvmthin_report_find(const struct lvmthin_report *r, const char *name)
{
	for (size_t i = 0; r && i < r->n; i++)
		if (!strcmp(r->lv[i].name, name))
			return &r->lv[i];
	return NULL;
}

/* ---- keeping the cache in step --------------------------------------------- */

enum note_kind { NOTE_RENAME, NOTE_REMOVE, NOTE_SNAPSHOT, NOTE_OTHER };

/* Applies one change to @r; false when the report must be read again. */
static bool note_one(struct lvmthin_report *r, enum note_kind kind, const char *a, const char *b)
{
	struct lvmthin_lv *l, nl = { 0 }, *grown;

	if (kind == NOTE_OTHER)
		return false;
	l = (struct lvmthin_lv *)lvmthin_report_find(r, a);

	switch (kind) {
	case NOTE_RENAME:
		if (!l || lvmthin_report_find(r, b))
			return false;
		free(l->name);
		l->name = strdup(b);
		for (size_t i = 0; l->name && i < r->n; i++) {
			if (strcmp(r->lv[i].origin, a))
				continue;
			free(r->lv[i].origin);
			if (!(r->lv[i].origin = strdup(b)))
				return false;
		}
		return l->name != NULL;
	case NOTE_REMOVE:
		if (!l)
			return true;
		lv_release(l);
		memmove(l, l + 1, (size_t)(r->lv + r->n - (l + 1)) * sizeof(*l));
		r->n--;
		for (size_t i = 0; i < r->n; i++) {
			if (strcmp(r->lv[i].origin, a))
				continue;
			r->lv[i].origin[0] = '\0';
		}
		return true;
	case NOTE_SNAPSHOT:
		if (!l || lvmthin_report_find(r, b))
			return false;
		nl = *l;
		nl.name = strdup(b);
		nl.pool_lv = strdup(l->pool_lv);
		nl.origin = strdup(a);
		nl.attr[4] = 'a';
		grown = nl.name && nl.pool_lv && nl.origin ?
				realloc(r->lv, (r->n + 1) * sizeof(*r->lv)) :
				NULL;
		if (!grown) {
			lv_release(&nl);
			return false;
		}
		r->lv = grown;
		r->lv[r->n++] = nl;
		return true;
	default:
		return false;
	}
}

static void note(struct lvmthin_pool *p, enum note_kind kind, const char *a, const char *b)
{
	struct qp_state *st = p->base.st;
	size_t n = st ? st->n_pools : 1;

	for (size_t i = 0; i < n; i++) {
		struct lvmthin_pool *q = st ? lvmthin_to_pool(st->pools[i]) : p;

		if (st && (st->pools[i]->drv != &qp_driver_lvmthin || strcmp(q->vg, p->vg)))
			continue;
		if (q->rep && !note_one(q->rep, kind, a, b)) {
			lvmthin_report_free(q->rep);
			q->rep = NULL;
		}
	}
	if (st && !qp_pool_find(st, p->base.name) && p->rep && !note_one(p->rep, kind, a, b)) {
		/* a pool not (yet) in the state */
		lvmthin_report_free(p->rep);
		p->rep = NULL;
	}
}

void lvmthin_note_rename(struct lvmthin_pool *p, const char *from, const char *to)
{
	note(p, NOTE_RENAME, from, to);
}

void lvmthin_note_remove(struct lvmthin_pool *p, const char *name)
{
	note(p, NOTE_REMOVE, name, NULL);
}

void lvmthin_note_snapshot(struct lvmthin_pool *p, const char *origin, const char *name)
{
	note(p, NOTE_SNAPSHOT, origin, name);
}

void lvmthin_note_other(struct lvmthin_pool *p)
{
	note(p, NOTE_OTHER, NULL, NULL);
}

/* ---- revisions ------------------------------------------------------------- */

void lvmthin_revs_free(struct lvmthin_rev *r, size_t n)
{
	if (!r)
		return;
	for (size_t i = 0; i < n; i++)
		free(r[i].name);
	free(r);
}

static int rev_cmp(const void *a, const void *b)
{
	const struct lvmthin_rev *x = a, *y = b;

	return (x->num > y->num) - (x->num < y->num);
}

int lvmthin_revs(const struct lvmthin_report *r, const char *base, struct lvmthin_rev **out,
		 size_t *n, struct qp_err *err)
{
	struct lvmthin_rev *res = NULL, *nr;
	size_t cnt = 0;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; r && i < r->n; i++) {
		long long num = lvmthin_rev_num(r->lv[i].name, base);

		if (num < 0)
			continue;
		nr = realloc(res, (cnt + 1) * sizeof(*res));
		if (!nr)
			goto nomem;
		res = nr;
		res[cnt].num = num;
		if (!(res[cnt].name = strdup(r->lv[i].name)))
			goto nomem;
		cnt++;
	}
	if (cnt)
		qsort(res, cnt, sizeof(*res), rev_cmp);
	*out = res;
	*n = cnt;
	return 0;
nomem:
	lvmthin_revs_free(res, cnt);
	return qp_err_set(err, -ENOMEM, "out of memory");
}

long long lvmthin_rev_next(const struct lvmthin_rev *r, size_t n, long long now)
{
	if (n && r[n - 1].num >= now)
		return r[n - 1].num + 1;
	return now;
}
