/* lvm_thin pools on external drives (the drive helpers are in
 * storage/drive.c).
 *
 * Options: device=SPEC names the drive that holds the volume group's
 * physical volume (UUID=, LABEL=, PARTUUID=, PARTLABEL= or a /dev path),
 * key_file=FILE unlocks it when it is LUKS (else the passphrase is asked
 * for).  `qvm-pool add` unlocks the drive, checks that its physical volume
 * belongs to volume_group, activates the group and records its UUID as
 * vg_uuid.  From then on the pool is online only while a volume group of
 * that name and UUID is there: another disk with a group of the same name is
 * never used.
 *
 * A drive that vanishes leaves device-mapper devices behind (the LUKS
 * mapping and the group's LVs on it) that fail every I/O.  Attach removes
 * them (they are found by the group's UUID in their device-mapper UUIDs)
 * before it unlocks and activates the drive afresh.
 */
#include "lvmthin_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void report_drop(struct lvmthin_pool *lp)
{
	lvmthin_report_free(lp->rep);
	lp->rep = NULL;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* The volume group of physical volume @dev: *name and *uuid owned. */
static int pv_group(const char *dev, char **name, char **uuid, struct qp_err *err)
{
	char *argv[] = { "pvs", "--noheadings", "--separator", "|", "-o",
			 "vg_name,vg_uuid", "--", (char *)dev, NULL };
	char *out = NULL, *line, *bar;
	int r;

	*name = *uuid = NULL;
	r = lvmthin_lvm(argv, &out, err);
	if (r < 0)
		return qp_err_prefix(err, "device '%s' holds no LVM physical volume", dev);
	line = trim(out ? out : "");
	bar = strchr(line, '|');
	if (!bar || bar == line || !bar[1]) {
		free(out);
		return qp_err_set(err, -ENODATA, "physical volume '%s' is in no volume group", dev);
	}
	*bar = '\0';
	*name = strdup(trim(line));
	*uuid = strdup(trim(bar + 1));
	free(out);
	if (!*name || !*uuid) {
		free(*name);
		free(*uuid);
		*name = *uuid = NULL;
		return qp_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

/* The UUID of the volume group the pool names, as LVM sees it now; NULL
 * (no error) when there is none. */
static int group_uuid(struct lvmthin_pool *lp, char **uuid, struct qp_err *err)
{
	char *argv[] = { "vgs", "--noheadings", "-o", "vg_uuid", "--", lp->vg, NULL };
	char *out = NULL;
	struct qp_err e2 = { 0 };
	int r;

	*uuid = NULL;
	r = lvmthin_lvm(argv, &out, &e2);
	if (r < 0) {
		free(out);
		if (strstr(e2.msg, "not found"))
			return 0;
		*err = e2;
		return r;
	}
	*uuid = strdup(trim(out ? out : ""));
	free(out);
	return *uuid ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

static int vg_change(struct lvmthin_pool *lp, const char *how, struct qp_err *err)
{
	char *argv[] = { "vgchange", "-q", (char *)how, "--", lp->vg, NULL };
	int r = lvmthin_lvm(argv, NULL, err);

	report_drop(lp);
	qp_step(strcmp(how, "-an") ? "lvmthin-vg-activate" : "lvmthin-vg-deactivate");
	return r;
}

/* Unlocks the drive, checks that its physical volume is in the pool's
 * group (with the recorded UUID, when there is one) and activates the
 * group.  *uuid (optional) gets the group's UUID. */
static int drive_up(struct qp_pool *p, char **uuid, struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	const char *want = qp_kv_get(&p->config, "vg_uuid");
	char *dev = NULL, *name = NULL, *got = NULL;
	int r;

	r = qp_drive_open(p, &dev, NULL, err);
	if (r < 0)
		return r;
	r = pv_group(dev, &name, &got, err);
	if (r < 0)
		goto out;
	if (strcmp(name, lp->vg)) {
		r = qp_err_set(err, -EXDEV, "device '%s' holds volume group '%s', not '%s' of pool '%s'",
			       dev, name, lp->vg, p->name);
		goto out;
	}
	if (want && strcmp(want, got)) {
		r = qp_err_set(err, -EXDEV,
			       "device '%s' holds volume group '%s' %s, not %s of pool '%s'; not used",
			       dev, name, got, want, p->name);
		goto out;
	}
	r = vg_change(lp, "-ay", err);
	if (r < 0) {
		/* The group is the pool's own (checked above): undo a partial
		 * activation. */
		vg_change(lp, "-an", &(struct qp_err){ 0 });
		qp_err_prefix(err, "cannot activate volume group '%s'", lp->vg);
	}
	if (r == 0 && uuid) {
		*uuid = got;
		got = NULL;
	}
out:
	free(dev);
	free(name);
	free(got);
	return r;
}

static void drive_down(struct qp_pool *p, bool close)
{
	struct qp_err ignore;

	vg_change(lvmthin_to_pool(p), "-an", &ignore);
	if (close)
		qp_drive_close(p, &ignore);
}

int lvmthin_drive_setup(struct qp_pool *p, struct qp_err *err)
{
	bool was_open = qp_drive_mapped(p);
	char *uuid = NULL;
	int r;

	if (!qp_kv_get(&p->config, "device"))
		return 0;
	lvmthin_to_pool(p)->opened_here = !was_open;
	r = drive_up(p, &uuid, err);
	if (r == 0 && qp_kv_set(&p->config, "vg_uuid", uuid) < 0)
		r = qp_err_set(err, -ENOMEM, "out of memory");
	free(uuid);
	if (r < 0 && !was_open)
		qp_drive_close(p, &(struct qp_err){ 0 });
	return r;
}

void lvmthin_drive_undo(struct qp_pool *p)
{
	if (qp_kv_get(&p->config, "device") && lvmthin_to_pool(p)->opened_here)
		drive_down(p, true);
}

int lvmthin_drive_state(struct qp_pool *p, bool found, enum qp_pool_state *out,
			struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	const char *want = qp_kv_get(&p->config, "vg_uuid");
	char *got = NULL;
	int r;

	*out = QP_POOL_OFFLINE;
	if (found) {
		if (!want || lp->uuid_ok) {
			*out = QP_POOL_ONLINE;
			return 0;
		}
		r = group_uuid(lp, &got, err);
		if (r < 0)
			return qp_err_prefix(err, "cannot check pool '%s'", p->name);
		lp->uuid_ok = got && !strcmp(got, want);
		free(got);
		if (lp->uuid_ok)
			*out = QP_POOL_ONLINE;
		return 0;
	}
	if (!qp_kv_get(&p->config, "device"))
		return 0;
	return qp_drive_state(p, NULL, out, err);
}

/* Removes the device-mapper devices of the pool's group (found by the
 * group's UUID in theirs, "LVM-<vg uuid><lv uuid>") left by a drive that
 * vanished, then the LUKS mapping under them.  Upper devices go first: a
 * device still used by another cannot be removed, so rounds repeat while
 * they make progress. */
static int remove_stale(struct qp_pool *p, struct qp_err *err)
{
	const char *want = qp_kv_get(&p->config, "vg_uuid");
	char *argv[] = { "dmsetup", "info", "-c", "--noheadings", "--separator", "|",
			 "-o", "name,uuid", NULL };
	char prefix[64];
	size_t n = 0;
	int r = 0, left = 1, last = -1;

	for (const char *s = want; s && *s && n < sizeof(prefix) - 5; s++)
		if (*s != '-')
			prefix[4 + n++] = *s;
	memcpy(prefix, "LVM-", 4);
	prefix[4 + n] = '\0';
	if (n != 32)
		return 0;
	while (left && left != last) {
		char *out = NULL, *line, *save = NULL;

		last = left;
		left = 0;
		r = qp_run(argv, &out, err);
		if (r < 0) {
			free(out);
			if (strstr(err->msg, "No devices found"))
				return 0;
			return qp_err_prefix(err, "cannot list device-mapper devices");
		}
		for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			char *bar = strchr(line, '|');
			char *rm[] = { "dmsetup", "remove", NULL, NULL };
			struct qp_err ignore;

			if (!bar || strncmp(trim(bar + 1), prefix, strlen(prefix)))
				continue;
			*bar = '\0';
			rm[2] = trim(line);
			if (qp_run(rm, NULL, &ignore) < 0)
				left++;
		}
		free(out);
	}
	if (left)
		return qp_err_set(err, -EBUSY,
				  "devices of volume group '%s' from before the drive vanished are "
				  "still in use", lvmthin_to_pool(p)->vg);
	return qp_drive_close(p, err);
}

/* Refuses when a volume group of the pool's name is there already and it is
 * not the one recorded. */
static int foreign_group(struct qp_pool *p, struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	const char *want = qp_kv_get(&p->config, "vg_uuid");
	char *got = NULL;
	int r;

	if (!want)
		return 0;
	r = group_uuid(lp, &got, err);
	if (r == 0 && got && strcmp(got, want))
		r = qp_err_set(err, -EXDEV,
			       "volume group '%s' here is %s, not %s of pool '%s'; not used",
			       lp->vg, got, want, p->name);
	free(got);
	return r;
}

int lvmthin_pool_attach(struct qp_pool *p, struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	enum qp_pool_state ps;
	bool opened;
	int r;

	if (!qp_kv_get(&p->config, "device"))
		return qp_err_set(err, -EOPNOTSUPP,
				  "pool '%s' names no device: activate volume group '%s' yourself",
				  p->name, lp->vg);
	report_drop(lp);
	r = p->drv->pool_state(p, &ps, err);
	if (r < 0 || ps == QP_POOL_ONLINE)
		return r;
	r = foreign_group(p, err);
	if (r < 0)
		return r;
	/* A LUKS mapping that no longer reads belongs to a drive that left. */
	if (qp_drive_mapping_dead(p)) {
		r = remove_stale(p, err);
		if (r == 0 && qp_drive_mapping_dead(p))
			r = qp_err_set(err, -EBUSY,
				       "'/dev/mapper/qpool-%s', left by the drive that vanished, is still in use",
				       p->name);
		if (r < 0)
			return r;
	}
	opened = !qp_drive_mapped(p);
	r = drive_up(p, NULL, err);
	if (r < 0) {
		/* Nothing was activated: a group of that name is left alone. */
		if (opened)
			qp_drive_close(p, &(struct qp_err){ 0 });
		return r;
	}
	r = p->drv->pool_state(p, &ps, err);
	if (r == 0 && ps != QP_POOL_ONLINE)
		r = qp_err_set(err, -ENOENT, "thin pool '%s/%s' of pool '%s' is not on its drive",
			       lp->vg, lp->thin_pool, p->name);
	if (r < 0 && opened)
		drive_down(p, true);
	return r;
}

int lvmthin_pool_detach(struct qp_pool *p, struct qp_err *err)
{
	struct lvmthin_pool *lp = lvmthin_to_pool(p);
	enum qp_pool_state ps;
	int r;

	if (!qp_kv_get(&p->config, "device"))
		return qp_err_set(err, -EOPNOTSUPP,
				  "pool '%s' names no device: deactivate volume group '%s' yourself",
				  p->name, lp->vg);
	/* A group of that name that is not the pool's own is left alone. */
	report_drop(lp);
	r = p->drv->pool_state(p, &ps, err);
	if (r < 0)
		return r;
	if (ps != QP_POOL_ONLINE)
		return qp_drive_close(p, err);
	r = vg_change(lp, "-an", err);
	if (r < 0)
		return qp_err_prefix(err, "cannot deactivate volume group '%s'", lp->vg);
	return qp_drive_close(p, err);
}
