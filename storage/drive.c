/* Pools on external drives: finding a pool's drive (libblkid), unlocking
 * LUKS (libcryptsetup), mounting, and the check that a pool's folder is on
 * the filesystem the pool was created on.
 *
 * A pool names its drive with the option device=UUID=..., LABEL=...,
 * PARTUUID=..., PARTLABEL=... or a /dev path.  The UUID of the filesystem
 * that holds the pool is recorded as fs_uuid when the pool is added; from
 * then on the pool is online only while its folder lies on a mounted
 * filesystem with that UUID whose device is present.  Anything else (the
 * drive unplugged, an empty folder of the root filesystem left where the
 * drive used to be mounted, another drive under the same device name) makes
 * the pool offline, and offline pools are never written into.
 */
#include "qpool.h"
#include "internal.h"

#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define DRIVE_PASS_MAX 512
/* How long a positive or negative answer of qp_drive_fs_check is reused. */
#define DRIVE_CACHE_NS (2 * 1000000000LL)

static int (*drive_askpass)(const char *prompt, char *buf, size_t size);

void qp_drive_set_askpass(int (*fn)(const char *prompt, char *buf, size_t size))
{
	drive_askpass = fn;
}

static const char *errstr(int e)
{
	return strerror(e < 0 ? -e : e);
}

/* ---- finding devices ------------------------------------------------------ */

/* Probes @dev's superblock: *uuid and *type owned (NULL when absent).
 * Returns 0, -ENOENT when the device is gone, -ENODATA when it holds no
 * known format, or another negative errno. */
int qp_drive_probe(const char *dev, char **uuid, char **type)
{
	blkid_probe pr;
	const char *v;
	int fd, r;

	*uuid = *type = NULL;
	fd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	pr = blkid_new_probe();
	if (!pr) {
		close(fd);
		return -ENOMEM;
	}
	r = blkid_probe_set_device(pr, fd, 0, 0);
	if (r == 0) {
		blkid_probe_enable_superblocks(pr, 1);
		blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
		r = blkid_do_safeprobe(pr);
	}
	if (r == 0) {
		if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
			*uuid = strdup(v);
		if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
			*type = strdup(v);
	}
	blkid_free_probe(pr);
	close(fd);
	if (r == 1 || r == -2)
		return -ENODATA;
	return r < 0 ? -EIO : 0;
}

static bool spec_is_tag(const char *spec)
{
	static const char *const tags[] = { "UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", NULL };

	for (size_t i = 0; tags[i]; i++)
		if (!strncmp(spec, tags[i], strlen(tags[i])))
			return true;
	return false;
}

int qp_drive_spec_valid(const char *spec)
{
	if (!spec || !*spec)
		return -EINVAL;
	if (spec_is_tag(spec))
		return strchr(spec, '=')[1] ? 0 : -EINVAL;
	return spec[0] == '/' ? 0 : -EINVAL;
}

int qp_drive_opts_check(struct qp_pool *p, struct qp_err *err)
{
	const char *dev = qp_kv_get(&p->config, "device");
	const char *key = qp_kv_get(&p->config, "key_file");

	if (!dev)
		return key ? qp_err_set(err, -EINVAL,
					"option 'key_file' of pool '%s' needs option 'device'",
					p->name)
			   : 0;
	if (qp_drive_spec_valid(dev) < 0)
		return qp_err_set(err, -EINVAL,
				  "invalid device '%s' for pool '%s': expected UUID=, LABEL=, "
				  "PARTUUID=, PARTLABEL= or a /dev path", dev, p->name);
	if (key && key[0] != '/')
		return qp_err_set(err, -EINVAL, "invalid key_file '%s' for pool '%s': not an absolute path",
				  key, p->name);
	return 0;
}

/* Every device whose tag matches: a fresh probe of /proc/partitions (the
 * cache file is /dev/null, so no stale answer from an earlier boot). */
static int find_by_tag(const char *spec, char **out, struct qp_err *err)
{
	char *tag = strdup(spec), *val, *found = NULL;
	blkid_cache cache = NULL;
	blkid_dev_iterate it;
	blkid_dev dev;
	int n = 0, ret;

	if (!tag)
		return qp_err_set(err, -ENOMEM, "out of memory");
	val = strchr(tag, '=');
	*val++ = '\0';
	if (blkid_get_cache(&cache, "/dev/null") < 0) {
		ret = qp_err_set(err, -ENOMEM, "cannot read the block devices");
		goto out;
	}
	blkid_probe_all(cache);
	it = blkid_dev_iterate_begin(cache);
	blkid_dev_set_search(it, tag, val);
	while (blkid_dev_next(it, &dev) == 0) {
		const char *name = blkid_dev_devname(dev);

		if (found && !strcmp(found, name))
			continue;
		n++;
		if (!found)
			found = strdup(name);
	}
	blkid_dev_iterate_end(it);
	ret = 0;
	if (n == 0)
		ret = qp_err_set(err, -ENODEV, "device '%s' is not present", spec);
	else if (n > 1)
		ret = qp_err_set(err, -ENOTUNIQ, "%s '%s' matches %d devices; use device=UUID=...",
				 !strcmp(tag, "LABEL") ? "label" : tag, val, n);
	else if (!found)
		ret = qp_err_set(err, -ENOMEM, "out of memory");
out:
	if (ret == 0)
		*out = found;
	else
		free(found);
	blkid_put_cache(cache);
	free(tag);
	return ret;
}

int qp_drive_find(const char *spec, char **out, struct qp_err *err)
{
	struct stat st;

	*out = NULL;
	if (qp_drive_spec_valid(spec) < 0)
		return qp_err_set(err, -EINVAL,
				  "invalid device '%s': expected UUID=, LABEL=, PARTUUID=, "
				  "PARTLABEL= or a /dev path", spec ? spec : "");
	if (spec_is_tag(spec))
		return find_by_tag(spec, out, err);
	if (stat(spec, &st) < 0 || !S_ISBLK(st.st_mode))
		return qp_err_set(err, -ENODEV, "device '%s' is not present", spec);
	*out = strdup(spec);
	return *out ? 0 : qp_err_set(err, -ENOMEM, "out of memory");
}

/* ---- the filesystem under a folder ------------------------------------------ */

/* Undoes the octal escapes of /proc/self/mountinfo (\040 for a space...). */
static void unescape(char *s)
{
	char *d = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*d++ = *s++;
		}
	}
	*d = '\0';
}

static bool path_under(const char *path, const char *mnt)
{
	size_t n = strlen(mnt);

	if (!strcmp(mnt, "/"))
		return true;
	return !strncmp(path, mnt, n) && (path[n] == '/' || path[n] == '\0');
}

/* The mount that holds @path (absolute, resolved): its mount point and
 * source device, both owned.  Returns 0 or -ENOENT. */
static int mount_of(const char *path, char **mnt, char **src)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *best_mnt = NULL, *best_src = NULL;
	size_t cap = 0, best = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *fields[10] = { 0 }, *tok, *sep;
		int n = 0;

		/* id parent maj:min root mountpoint options [optional...] - type source super */
		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			fields[n++] = tok;
			if (n == 5)
				break;
		}
		if (n < 5)
			continue;
		sep = save ? strstr(save, " - ") : NULL;
		if (!sep)
			continue;
		tok = strtok_r(sep + 3, " \n", &save);	/* type */
		tok = tok ? strtok_r(NULL, " \n", &save) : NULL;	/* source */
		if (!tok)
			continue;
		unescape(fields[4]);
		if (!path_under(path, fields[4]) || strlen(fields[4]) < best)
			continue;
		best = strlen(fields[4]);
		free(best_mnt);
		free(best_src);
		best_mnt = strdup(fields[4]);
		unescape(tok);
		best_src = strdup(tok);
	}
	free(line);
	fclose(f);
	if (!best_mnt || !best_src) {
		free(best_mnt);
		free(best_src);
		return -ENOENT;
	}
	*mnt = best_mnt;
	*src = best_src;
	return 0;
}

/* Whether the block device at sysfs folder @sys and everything under it
 * (dm slaves) is still there with a size: a vanished disk leaves cached
 * superblocks that a probe would still read. */
static bool sys_alive(const char *sys, int depth)
{
	char *p = qp_strdupf("%s/size", sys), buf[32] = "";
	struct dirent *e;
	bool ok = false;
	DIR *dir;
	FILE *f;

	if (!p || depth > 8)
		goto out;
	f = fopen(p, "re");
	if (!f)
		goto out;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	if (strtoull(buf, NULL, 10) == 0)
		goto out;
	free(p);
	p = qp_strdupf("%s/slaves", sys);
	dir = p ? opendir(p) : NULL;
	ok = true;
	while (ok && dir && (e = readdir(dir))) {
		char *s;

		if (e->d_name[0] == '.')
			continue;
		s = qp_strdupf("%s/%s", p, e->d_name);
		ok = s && sys_alive(s, depth + 1);
		free(s);
	}
	if (dir)
		closedir(dir);
out:
	free(p);
	return ok;
}

static bool dev_alive(const char *dev)
{
	struct stat st;
	char *sys;
	bool ok;

	if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
		return false;
	sys = qp_strdupf("/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
	ok = sys && sys_alive(sys, 0);
	free(sys);
	return ok;
}

/* UUID of the filesystem holding @path (which must exist); *uuid owned,
 * NULL when the filesystem has none (tmpfs, overlay...) or its device is
 * gone.  *mnt (optional) gets the mount point. */
int qp_drive_fs_uuid(const char *path, char **uuid, char **mnt)
{
	char *real = realpath(path, NULL), *m = NULL, *src = NULL, *type = NULL;
	int r;

	*uuid = NULL;
	if (mnt)
		*mnt = NULL;
	if (!real)
		return -errno;
	r = mount_of(real, &m, &src);
	free(real);
	if (r < 0)
		return r;
	if (src[0] == '/' && (!dev_alive(src) || qp_drive_probe(src, uuid, &type) < 0))
		*uuid = NULL;
	free(type);
	free(src);
	if (mnt)
		*mnt = m;
	else
		free(m);
	return 0;
}

/* ---- the check at every operation ------------------------------------------ */

struct drive_cache {
	char *dir;
	char *uuid;
	dev_t dev;
	ino_t ino;
	long long when;
	bool ok;
};

static struct drive_cache cache[16];
static size_t cache_next;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cache_find(const char *dir, const char *uuid, const struct stat *st)
{
	long long t = now_ns();

	for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++) {
		struct drive_cache *c = &cache[i];

		if (c->dir && !strcmp(c->dir, dir) && !strcmp(c->uuid, uuid) &&
		    c->dev == st->st_dev && c->ino == st->st_ino && t - c->when < DRIVE_CACHE_NS)
			return c->ok;
	}
	return -1;
}

static void cache_put(const char *dir, const char *uuid, const struct stat *st, bool ok)
{
	struct drive_cache *c = &cache[cache_next++ % (sizeof(cache) / sizeof(cache[0]))];

	free(c->dir);
	free(c->uuid);
	c->dir = strdup(dir);
	c->uuid = strdup(uuid);
	if (!c->dir || !c->uuid) {
		free(c->dir);
		free(c->uuid);
		c->dir = c->uuid = NULL;
		return;
	}
	c->dev = st->st_dev;
	c->ino = st->st_ino;
	c->when = now_ns();
	c->ok = ok;
}

void qp_drive_forget(void)
{
	pthread_mutex_lock(&cache_lock);
	for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++) {
		free(cache[i].dir);
		free(cache[i].uuid);
		cache[i].dir = cache[i].uuid = NULL;
	}
	pthread_mutex_unlock(&cache_lock);
}

/* true when @dir is a folder on a mounted filesystem with UUID @uuid whose
 * device is present.  Answers are reused for two seconds. */
bool qp_drive_fs_check(const char *dir, const char *uuid)
{
	struct stat st;
	char *got = NULL;
	int hit;
	bool ok;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return false;
	pthread_mutex_lock(&cache_lock);
	hit = cache_find(dir, uuid, &st);
	pthread_mutex_unlock(&cache_lock);
	if (hit >= 0)
		return hit;
	ok = qp_drive_fs_uuid(dir, &got, NULL) == 0 && got && !strcasecmp(got, uuid);
	free(got);
	pthread_mutex_lock(&cache_lock);
	cache_put(dir, uuid, &st, ok);
	pthread_mutex_unlock(&cache_lock);
	return ok;
}

char *qp_drive_mapper_name(const struct qp_pool *p)
{
	return qp_strdupf("qpool-%s", p->name);
}

static char *mapper_path(const struct qp_pool *p)
{
	return qp_strdupf("/dev/mapper/qpool-%s", p->name);
}

bool qp_drive_mapped(const struct qp_pool *p)
{
	char *path = mapper_path(p);
	bool ret = path && access(path, F_OK) == 0;

	free(path);
	return ret;
}

/* Whether @dev reads (its first block, with O_DIRECT so that no cached copy
 * hides a device that has gone). */
static bool readable(const char *dev)
{
	void *buf = NULL;
	bool ok = false;
	int fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return false;
	if (posix_memalign(&buf, 4096, 4096) == 0)
		ok = pread(fd, buf, 4096, 0) == 4096;
	free(buf);
	close(fd);
	return ok;
}

bool qp_drive_mapping_dead(const struct qp_pool *p)
{
	char *path = mapper_path(p);
	bool ret = path && access(path, F_OK) == 0 && !readable(path);

	free(path);
	return ret;
}

int qp_drive_state(struct qp_pool *p, const char *dir, enum qp_pool_state *out,
		   struct qp_err *err)
{
	const char *uuid = qp_kv_get(&p->config, "fs_uuid");
	const char *spec = qp_kv_get(&p->config, "device");
	char *dev = NULL, *du = NULL, *type = NULL;
	struct qp_err ignore;

	(void)err;
	*out = QP_POOL_OFFLINE;
	if (uuid && qp_drive_fs_check(dir, uuid)) {
		*out = QP_POOL_ONLINE;
		return 0;
	}
	/* Locked: the drive is here, is LUKS, and its mapping is not open. */
	if (spec && !qp_drive_mapped(p) && qp_drive_find(spec, &dev, &ignore) == 0 &&
	    qp_drive_probe(dev, &du, &type) == 0 && type && !strcmp(type, "crypto_LUKS"))
		*out = QP_POOL_LOCKED;
	free(dev);
	free(du);
	free(type);
	return 0;
}

/* ---- LUKS ---------------------------------------------------------------- */

/* libcryptsetup's messages would go to stderr: library code never prints. */
static void crypt_quiet(int level, const char *msg, void *data)
{
	(void)level;
	(void)msg;
	(void)data;
}

/* Unlocks LUKS device @dev as qpool-<pool> with the key file, else with a
 * passphrase from the askpass hook.  A wrong key is -EPERM. */
static int luks_open(struct qp_pool *p, const char *dev, struct qp_err *err)
{
	const char *key = qp_kv_get(&p->config, "key_file");
	struct crypt_device *cd = NULL;
	char *name = qp_drive_mapper_name(p), *pass = NULL, *prompt = NULL;
	int r, len = 0;

	if (!name)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (key && access(key, R_OK) < 0) {
		r = qp_err_set(err, -errno, "cannot unlock pool '%s': cannot read the key file '%s': %s",
			       p->name, key, errstr(errno));
		goto out;
	}
	crypt_set_log_callback(NULL, crypt_quiet, NULL);
	r = crypt_init(&cd, dev);
	if (r == 0)
		crypt_set_log_callback(cd, crypt_quiet, NULL);
	if (r == 0)
		r = crypt_load(cd, CRYPT_LUKS, NULL);
	if (r < 0) {
		r = qp_err_set(err, r, "cannot read the LUKS header of '%s': %s", dev, errstr(r));
		goto out;
	}
	if (!key) {
		if (!drive_askpass) {
			r = qp_err_set(err, -ENOKEY, "pool '%s' is locked: give -o key_file=FILE",
				       p->name);
			goto out;
		}
		pass = mmap(NULL, DRIVE_PASS_MAX, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (pass == MAP_FAILED) {
			pass = NULL;
			r = qp_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		mlock(pass, DRIVE_PASS_MAX);
		prompt = qp_strdupf("passphrase for pool '%s' (%s): ", p->name, dev);
		len = prompt ? drive_askpass(prompt, pass, DRIVE_PASS_MAX) : -ENOMEM;
		if (len < 0) {
			r = qp_err_set(err, len, "cannot unlock pool '%s': no passphrase: %s",
				       p->name, errstr(len));
			goto out;
		}
	}
	/* First the key alone (no device-mapper needed), so a wrong key is told
	 * apart from a failed activation. */
	r = key ? crypt_activate_by_keyfile_device_offset(cd, NULL, CRYPT_ANY_SLOT, key, 0, 0, 0)
		: crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, pass, (size_t)len, 0);
	if (r == -EPERM) {
		r = qp_err_set(err, -EPERM, "cannot unlock device '%s' of pool '%s': wrong key",
			       dev, p->name);
		goto out;
	}
	if (r < 0) {
		r = qp_err_set(err, r, "cannot unlock device '%s' of pool '%s': %s", dev, p->name,
			       r == -ENOENT && key ? "cannot read the key file" : errstr(r));
		goto out;
	}
	r = key ? crypt_activate_by_keyfile_device_offset(cd, name, CRYPT_ANY_SLOT, key, 0, 0, 0)
		: crypt_activate_by_passphrase(cd, name, CRYPT_ANY_SLOT, pass, (size_t)len, 0);
	if (r < 0)
		r = qp_err_set(err, r, "cannot open device '%s' of pool '%s' as '%s': %s", dev,
			       p->name, name, errstr(r));
	else
		r = 0;
out:
	if (pass) {
		explicit_bzero(pass, DRIVE_PASS_MAX);
		munlock(pass, DRIVE_PASS_MAX);
		munmap(pass, DRIVE_PASS_MAX);
	}
	free(prompt);
	crypt_free(cd);
	free(name);
	return r;
}

int qp_drive_close(struct qp_pool *p, struct qp_err *err)
{
	struct crypt_device *cd = NULL;
	char *name = qp_drive_mapper_name(p);
	int r;

	if (!name)
		return qp_err_set(err, -ENOMEM, "out of memory");
	if (!qp_drive_mapped(p)) {
		free(name);
		return 0;
	}
	crypt_set_log_callback(NULL, crypt_quiet, NULL);
	r = crypt_init_by_name(&cd, name);
	if (r == 0)
		r = crypt_deactivate(cd, name);
	/* Still held (a lazily unmounted filesystem of a vanished drive): gone
	 * when its last user is. */
	if (r == -EBUSY)
		r = crypt_deactivate_by_name(cd, name, CRYPT_DEACTIVATE_DEFERRED);
	crypt_free(cd);
	if (r < 0)
		r = qp_err_set(err, r, "cannot close '%s' of pool '%s': %s", name, p->name,
			       errstr(r));
	free(name);
	return r < 0 ? r : 0;
}

int qp_drive_open(struct qp_pool *p, char **out, char **fs_type, struct qp_err *err)
{
	const char *spec = qp_kv_get(&p->config, "device");
	char *dev = NULL, *uuid = NULL, *type = NULL;
	int r;

	*out = NULL;
	if (fs_type)
		*fs_type = NULL;
	if (!spec)
		return qp_err_set(err, -EINVAL, "pool '%s' names no device", p->name);
	r = qp_drive_find(spec, &dev, err);
	if (r < 0)
		return qp_err_prefix(err, "pool '%s' is offline", p->name);
	r = qp_drive_probe(dev, &uuid, &type);
	if (r < 0 && r != -ENODATA) {
		r = qp_err_set(err, r, "cannot read device '%s': %s", dev, errstr(r));
		goto out;
	}
	if (type && !strcmp(type, "crypto_LUKS")) {
		if (!qp_drive_mapped(p)) {
			r = luks_open(p, dev, err);
			if (r < 0)
				goto out;
		}
		free(dev);
		free(uuid);
		free(type);
		uuid = type = NULL;
		dev = mapper_path(p);
		if (!dev) {
			r = qp_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		r = qp_drive_probe(dev, &uuid, &type);
		if (r < 0 && r != -ENODATA) {
			r = qp_err_set(err, r, "cannot read device '%s': %s", dev, errstr(r));
			goto out;
		}
	}
	r = 0;
	*out = dev;
	dev = NULL;
	if (fs_type) {
		*fs_type = type;
		type = NULL;
	}
out:
	free(dev);
	free(uuid);
	free(type);
	return r;
}

/* ---- mounting ---------------------------------------------------------- */

int qp_drive_mount(struct qp_pool *p, const char *dev, const char *type, const char *mnt,
		   struct qp_err *err)
{
	const char *want = qp_kv_get(&p->config, "fs_uuid");
	char *uuid = NULL, *t = NULL;
	int r;

	r = qp_drive_probe(dev, &uuid, &t);
	if (r < 0 || !uuid || !t) {
		r = qp_err_set(err, -ENODATA, "device '%s' of pool '%s' holds no filesystem", dev,
			       p->name);
		goto out;
	}
	if (want && strcasecmp(want, uuid)) {
		r = qp_err_set(err, -EXDEV,
			       "device '%s' holds filesystem %s, not %s of pool '%s'; not used",
			       dev, uuid, want, p->name);
		goto out;
	}
	if (type && strcmp(type, t)) {
		r = qp_err_set(err, -EINVAL, "device '%s' holds %s, not %s", dev, t, type);
		goto out;
	}
	r = qp_mkdirs(mnt, err);
	if (r < 0)
		goto out;
	if (mount(dev, mnt, t, MS_NOSUID | MS_NODEV, NULL) < 0) {
		r = qp_err_set(err, -errno, "cannot mount '%s' (%s) at '%s': %s", dev, t, mnt,
			       errstr(errno));
		goto out;
	}
	qp_drive_forget();
	r = 0;
out:
	free(uuid);
	free(t);
	return r;
}

int qp_drive_umount(struct qp_pool *p, const char *mnt, struct qp_err *err)
{
	const char *want = qp_kv_get(&p->config, "fs_uuid");
	char *uuid = NULL, *m = NULL, *real = realpath(mnt, NULL);
	int r = 0;

	if (!real)
		return 0;
	/* Only our own filesystem, and only where it is mounted at @mnt. */
	if (qp_drive_fs_uuid(real, &uuid, &m) == 0 && m && !strcmp(m, real) &&
	    (!want || !uuid || !strcasecmp(uuid, want))) {
		if (umount2(real, uuid ? 0 : MNT_DETACH) < 0)
			r = qp_err_set(err, -errno, "cannot unmount '%s' of pool '%s': %s", real,
				       p->name, errstr(errno));
	}
	qp_drive_forget();
	free(uuid);
	free(m);
	free(real);
	return r;
}

/* ---- attach and detach ------------------------------------------------- */

static int pool_busy(struct qp_state *st, struct qp_pool *p, struct qp_err *err)
{
	for (size_t i = 0; i < st->n_doms; i++) {
		struct qp_domain *d = st->doms[i];

		if (!qp_dom_started(d))
			continue;
		for (size_t j = 0; j < d->n_vols; j++)
			if (d->vols[j]->pool == p)
				return qp_err_set(err, -EBUSY,
						  "pool '%s' is in use by running VM '%s'",
						  p->name, d->name);
	}
	return 0;
}

/* The pool @name, if its driver can attach (or, with !attach, detach) it. */
static int pool_for(struct qp_state *st, const char *name, bool attach, struct qp_pool **out,
		    struct qp_err *err)
{
	struct qp_pool *p = qp_pool_find(st, name);

	if (!p)
		return qp_err_set(err, -ENOENT, "pool '%s' does not exist", name);
	if (!p->drv)
		return qp_err_set(err, -ENOTSUP, "pool '%s' has an unknown driver", name);
	if (!(attach ? p->drv->pool_attach : p->drv->pool_detach))
		return qp_err_set(err, -EOPNOTSUPP, "pool '%s' cannot be %s: driver '%s'", name,
				  attach ? "attached" : "detached", p->drv->name);
	*out = p;
	return 0;
}

int qp_pool_attach(struct qp_state *st, const char *name, struct qp_err *err)
{
	struct qp_pool *p;
	int r = pool_for(st, name, true, &p, err);

	if (r < 0)
		return r;
	r = p->drv->pool_attach(p, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot attach pool '%s'", name);
	return 0;
}

int qp_pool_detach(struct qp_state *st, const char *name, struct qp_err *err)
{
	struct qp_pool *p;
	int r = pool_for(st, name, false, &p, err);

	if (r < 0)
		return r;
	r = pool_busy(st, p, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot detach pool '%s'", name);
	r = p->drv->pool_detach(p, err);
	if (r < 0)
		return qp_err_prefix(err, "cannot detach pool '%s'", name);
	return 0;
}
