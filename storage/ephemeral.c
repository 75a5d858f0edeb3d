/* Ephemeral volatile volumes (declared at the end of storage/driver.h).
 *
 * A volatile volume marked ephemeral is served to its VM through a plain
 * dm-crypt mapping whose key is read from /dev/urandom by cryptsetup and
 * never stored anywhere: once the mapping is closed, what the VM wrote to
 * the backing LV or file is ciphertext under a lost key.
 *
 * A regular file gets a loop device first, configured with autoclear: the
 * kernel detaches it when its last user lets go, so the loop device goes
 * with the mapping, and with our own descriptor when cryptsetup fails.
 *
 * The first 64 KiB of the mapping are zeroed after opening: the rest of a
 * fresh mapping reads as random bytes, and the start of the volume must not
 * look like a stale file system or partition table to the VM.
 */
#include "qpool.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define EPH_ZERO (64 * 1024)
#define EPH_MAX_LOOPS 8

static const char *errstr(int e, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
	if (buf[0] && isupper((unsigned char)buf[0]) && !(buf[1] && isupper((unsigned char)buf[1])))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

#define ERRSTR(e) errstr((e), (char[128]){ 0 }, 128)

/* First line of a sysfs file into @buf, without its newline. */
static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ret = -ENOENT;

	if (!f)
		return -errno;
	if (fgets(buf, (int)len, f)) {
		buf[strcspn(buf, "\n")] = '\0';
		ret = 0;
	}
	fclose(f);
	return ret;
}

/* The kernel name ("dm-3") of device-mapper device @name into @out (64
 * bytes), or -ENOENT. */
static int dm_find(const char *name, char *out, size_t len)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	int ret = -ENOENT;

	if (!d)
		return -ENOENT;
	while ((e = readdir(d))) {
		char path[320], buf[256];

		if (strncmp(e->d_name, "dm-", 3))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/dm/name", e->d_name);
		if (read_line(path, buf, sizeof(buf)) == 0 && !strcmp(buf, name)) {
			snprintf(out, len, "%.63s", e->d_name);
			ret = 0;
			break;
		}
	}
	closedir(d);
	return ret;
}

bool qp_ephemeral_active(const char *name)
{
	char dm[64], path[300];

	if (dm_find(name, dm, sizeof(dm)) == 0)
		return true;
	snprintf(path, sizeof(path), "/dev/mapper/%s", name);
	return access(path, F_OK) == 0;
}

char *qp_ephemeral_path(const char *name)
{
	return qp_strdupf("/dev/mapper/%s", name);
}

/* ---- loop devices ------------------------------------------------------- */

static int loop_configure(int lfd, int fd, const char *file)
{
	struct loop_config cfg;
	struct loop_info64 info;

	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (unsigned)fd;
	cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
	snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", file);
	if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOTTY)
		return -errno;
	/* kernels before 5.8 */
	if (ioctl(lfd, LOOP_SET_FD, fd) < 0)
		return -errno;
	info = cfg.info;
	if (ioctl(lfd, LOOP_SET_STATUS64, &info) < 0) {
		int e = -errno;

		ioctl(lfd, LOOP_CLR_FD, 0);
		return e;
	}
	return 0;
}

/* Attaches @file to a free loop device (autoclear); *lfd stays open, so the
 * device lives until it is closed and no one else holds it. */
static int loop_attach(const char *file, int *lfd, char *dev, size_t len, struct qp_err *err)
{
	int fd, ctl = -1, ret;

	*lfd = -1;
	fd = open(file, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return qp_err_set(err, -errno, "cannot open '%s': %s", file, ERRSTR(errno));
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		ret = qp_err_set(err, -errno, "cannot open '/dev/loop-control': %s", ERRSTR(errno));
		goto out;
	}
	for (int tries = 0;; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (n < 0) {
			ret = qp_err_set(err, -errno, "cannot find a free loop device: %s",
					 ERRSTR(errno));
			goto out;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		*lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (*lfd < 0) {
			ret = qp_err_set(err, -errno, "cannot open '%s': %s", dev, ERRSTR(errno));
			goto out;
		}
		ret = loop_configure(*lfd, fd, file);
		if (ret == 0)
			break;
		close(*lfd);
		*lfd = -1;
		/* another process took it between the two calls */
		if (ret != -EBUSY || tries == 16) {
			qp_err_set(err, ret, "cannot attach '%s' to '%s': %s", file, dev,
				   ERRSTR(ret));
			goto out;
		}
	}
	qp_step("ephemeral-loop");
out:
	if (ctl >= 0)
		close(ctl);
	close(fd);
	return ret;
}

/* Detaches loop device @loop if it still serves @backing (autoclear has
 * normally done it already; a device reused since then is left alone). */
static void loop_detach(const char *loop, const char *backing)
{
	char path[320], buf[4096], dev[300];
	int fd;

	snprintf(path, sizeof(path), "/sys/block/%.63s/loop/backing_file", loop);
	if (read_line(path, buf, sizeof(buf)) < 0 || strcmp(buf, backing))
		return;
	snprintf(dev, sizeof(dev), "/dev/%.63s", loop);
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (ioctl(fd, LOOP_CLR_FD, 0) == 0)
		qp_step("ephemeral-detach");
	close(fd);
}

/* ---- mappings ----------------------------------------------------------- */

static int zero_start(const char *path, struct qp_err *err)
{
	static const char zeros[EPH_ZERO];
	uint64_t size = 0;
	size_t n;
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return qp_err_set(err, -errno, "cannot open '%s': %s", path, ERRSTR(errno));
	if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
		ret = qp_err_set(err, -errno, "cannot get the size of '%s': %s", path,
				 ERRSTR(errno));
		goto out;
	}
	n = size < EPH_ZERO ? (size_t)size : EPH_ZERO;
	if (pwrite(fd, zeros, n, 0) != (ssize_t)n || fsync(fd) < 0)
		ret = qp_err_set(err, -(errno ? errno : EIO), "cannot zero the start of '%s': %s",
				 path, ERRSTR(errno ? errno : EIO));
out:
	close(fd);
	return ret;
}

int qp_ephemeral_open(const char *backing, const char *name, char **mapper_path, struct qp_err *err)
{
	char loop[64] = "", *path = NULL;
	const char *dev = backing;
	struct stat st;
	int lfd = -1, ret;

	*mapper_path = NULL;
	/* a mapping left by an earlier run holds the old content's key */
	ret = qp_ephemeral_close(name, err);
	if (ret < 0)
		return ret;
	if (stat(backing, &st) < 0)
		return qp_err_set(err, -errno, "cannot stat '%s': %s", backing, ERRSTR(errno));
	if (S_ISREG(st.st_mode)) {
		ret = loop_attach(backing, &lfd, loop, sizeof(loop), err);
		if (ret < 0)
			return ret;
		dev = loop;
	} else if (!S_ISBLK(st.st_mode)) {
		return qp_err_set(err, -EINVAL, "'%s' is neither a file nor a block device",
				  backing);
	}
	path = qp_ephemeral_path(name);
	if (!path) {
		ret = qp_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = qp_run((char *[]){ "cryptsetup", "open", "--type=plain", "--cipher=aes-xts-plain64",
				 "--key-size=512", "--key-file=/dev/urandom", (char *)dev,
				 (char *)name, NULL },
		     NULL, err);
	if (ret < 0)
		goto out;
	qp_step("ephemeral-open");
	ret = zero_start(path, err);
	if (ret < 0) {
		qp_ephemeral_close(name, &(struct qp_err){ 0 });
		goto out;
	}
	qp_step("ephemeral-zero");
	*mapper_path = path;
	path = NULL;
out:
	/* the mapping now holds the loop device; without one, autoclear frees it */
	if (lfd >= 0)
		close(lfd);
	free(path);
	return ret;
}

int qp_ephemeral_close(const char *name, struct qp_err *err)
{
	char dm[64], loops[EPH_MAX_LOOPS][256], backing[EPH_MAX_LOOPS][4096];
	size_t n = 0;
	int ret;

	if (!qp_ephemeral_active(name))
		return 0;
	if (dm_find(name, dm, sizeof(dm)) == 0) {
		char path[320];
		struct dirent *e;
		DIR *d;

		snprintf(path, sizeof(path), "/sys/block/%s/slaves", dm);
		d = opendir(path);
		while (d && (e = readdir(d)) && n < EPH_MAX_LOOPS) {
			if (strncmp(e->d_name, "loop", 4))
				continue;
			snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", e->d_name);
			if (read_line(path, backing[n], sizeof(backing[n])) == 0)
				snprintf(loops[n++], sizeof(loops[0]), "%s", e->d_name);
		}
		if (d)
			closedir(d);
	}
	ret = qp_run((char *[]){ "cryptsetup", "close", (char *)name, NULL }, NULL, err);
	if (ret < 0)
		return qp_err_prefix(err, "cannot close mapping '%s'", name);
	qp_step("ephemeral-close");
	for (size_t i = 0; i < n; i++)
		loop_detach(loops[i], backing[i]);
	return 0;
}
