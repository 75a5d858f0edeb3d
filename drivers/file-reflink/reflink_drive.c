/* file-reflink pools on external drives (the drive helpers are in
 * storage/drive.c).
 *
 * Options: device=SPEC names the drive (UUID=, LABEL=, PARTUUID=,
 * PARTLABEL= or a /dev path), key_file=FILE unlocks it when it is LUKS (else
 * the passphrase is asked for), mount_point=DIR is where qpool mounts its
 * filesystem (default: dir_path; dir_path must be at or below it).  The
 * filesystem's UUID is recorded as fs_uuid when the pool is added, for every
 * file-reflink pool whose folder is on a filesystem with a UUID, with or
 * without device: the pool is online only while dir_path is on that
 * filesystem, so an empty folder left where the drive used to be mounted is
 * never written into.
 */
#include "reflink_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool under(const char *path, const char *top)
{
	size_t n = strlen(top);

	if (!strcmp(top, "/"))
		return true;
	return !strncmp(path, top, n) && (path[n] == '/' || path[n] == '\0');
}

int reflink_drive_init(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	const char *dev = qp_kv_get(&p->config, "device");
	const char *mp = qp_kv_get(&p->config, "mount_point");
	size_t len;
	int r;

	free(rp->mount_point);
	rp->mount_point = NULL;
	r = qp_drive_opts_check(p, err);
	if (r < 0)
		return r;
	if (!dev) {
		if (mp)
			return qp_err_set(err, -EINVAL,
					  "option 'mount_point' of pool '%s' needs option 'device'",
					  p->name);
		return 0;
	}
	if (mp && mp[0] != '/')
		return qp_err_set(err, -EINVAL,
				  "invalid mount_point '%s' for pool '%s': not an absolute path", mp,
				  p->name);
	if (!mp) {
		rp->mount_point = strdup(rp->dir_path);
	} else {
		len = strlen(mp);
		while (len > 1 && mp[len - 1] == '/')
			len--;
		rp->mount_point = strndup(mp, len);
	}
	if (!rp->mount_point)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (!under(rp->dir_path, rp->mount_point))
		return qp_err_set(err, -EINVAL, "dir_path '%s' of pool '%s' is not under mount_point '%s'",
				  rp->dir_path, p->name, rp->mount_point);
	return 0;
}

/* The UUID of the filesystem holding @path or its nearest existing parent. */
static char *uuid_near(const char *path)
{
	char *d = strdup(path), *uuid = NULL, *slash;

	while (d && access(d, F_OK) < 0 && (slash = strrchr(d, '/')))
		*(slash == d ? slash + 1 : slash) = '\0';
	if (d)
		qp_drive_fs_uuid(d, &uuid, NULL);
	free(d);
	return uuid;
}

/* Unlocks and mounts the drive at mount_point unless dir_path is already on
 * its filesystem.  *mounted tells whether it was mounted here. */
static int drive_mount(struct qp_pool *p, bool *mounted, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	char *dev = NULL, *want = NULL, *type = NULL, *here = NULL;
	bool was_open = qp_drive_mapped(p);
	int r;

	*mounted = false;
	r = qp_drive_open(p, &dev, NULL, err);
	if (r < 0)
		return r;
	if (qp_drive_probe(dev, &want, &type) < 0 || !want) {
		r = qp_err_set(err, -ENODATA, "device '%s' of pool '%s' holds no filesystem", dev,
			       p->name);
		goto out;
	}
	here = uuid_near(rp->dir_path);
	if (here && !strcasecmp(here, want)) {
		const char *rec = qp_kv_get(&p->config, "fs_uuid");

		r = rec && strcasecmp(rec, want)
			    ? qp_err_set(err, -EXDEV, "device '%s' holds filesystem %s, not %s of "
						      "pool '%s'; not used", dev, want, rec, p->name)
			    : 0;
		goto out;
	}
	r = qp_drive_mount(p, dev, NULL, rp->mount_point, err);
	if (r == 0)
		*mounted = true;
out:
	if (r < 0 && !was_open)
		qp_drive_close(p, &(struct qp_err){ 0 });
	free(dev);
	free(want);
	free(type);
	free(here);
	return r;
}

int reflink_drive_setup(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);

	rp->mounted_here = false;
	if (!qp_kv_get(&p->config, "device"))
		return 0;
	return drive_mount(p, &rp->mounted_here, err);
}

int reflink_drive_record(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	char *uuid = NULL;
	int r;

	r = qp_drive_fs_uuid(rp->dir_path, &uuid, NULL);
	if (r < 0 && !qp_kv_get(&p->config, "device"))
		return 0;
	if (r < 0)
		return qp_err_set(err, r, "cannot find the filesystem of '%s': %s", rp->dir_path,
				  strerror(-r));
	if (!uuid) {
		if (qp_kv_get(&p->config, "device"))
			return qp_err_set(err, -ENODATA, "filesystem of '%s' has no UUID",
					  rp->dir_path);
		return 0;
	}
	r = qp_kv_set(&p->config, "fs_uuid", uuid);
	free(uuid);
	qp_drive_forget();
	return r < 0 ? qp_err_set(err, -ENOMEM, "out of memory") : 0;
}

void reflink_drive_undo(struct qp_pool *p)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	struct qp_err ignore;

	if (!rp->mounted_here)
		return;
	qp_drive_umount(p, rp->mount_point, &ignore);
	qp_drive_close(p, &ignore);
	rp->mounted_here = false;
}

int reflink_pool_attach(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	const char *uuid = qp_kv_get(&p->config, "fs_uuid");
	enum qp_pool_state ps;
	struct qp_err ignore;
	bool mounted;
	int r;

	if (!uuid)
		return qp_err_set(err, -EINVAL, "pool '%s' has no recorded filesystem", p->name);
	qp_drive_forget();
	r = qp_drive_state(p, rp->dir_path, &ps, err);
	if (r < 0 || ps == QP_POOL_ONLINE)
		return r;
	if (!qp_kv_get(&p->config, "device"))
		return qp_err_set(err, -ENODEV,
				  "pool '%s' names no device: mount the filesystem %s so that '%s' is on it",
				  p->name, uuid, rp->dir_path);
	/* What a vanished drive left behind: a mount of our filesystem whose
	 * device is gone, and a mapping that no longer reads. */
	qp_drive_umount(p, rp->mount_point, &ignore);
	if (qp_drive_mapping_dead(p))
		qp_drive_close(p, &ignore);
	r = drive_mount(p, &mounted, err);
	if (r < 0)
		return r;
	qp_drive_forget();
	r = qp_drive_state(p, rp->dir_path, &ps, err);
	if (r == 0 && ps != QP_POOL_ONLINE)
		r = qp_err_set(err, -ENOENT, "folder '%s' of pool '%s' is not on its drive",
			       rp->dir_path, p->name);
	if (r < 0 && mounted) {
		qp_drive_umount(p, rp->mount_point, &ignore);
		qp_drive_close(p, &ignore);
	}
	return r;
}

int reflink_pool_detach(struct qp_pool *p, struct qp_err *err)
{
	struct reflink_pool *rp = reflink_to_pool(p);
	int r;

	if (!qp_kv_get(&p->config, "device"))
		return qp_err_set(err, -EOPNOTSUPP,
				  "pool '%s' names no device: unmount its filesystem yourself",
				  p->name);
	r = qp_drive_umount(p, rp->mount_point, err);
	if (r < 0)
		return r;
	return qp_drive_close(p, err);
}
