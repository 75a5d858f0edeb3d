/* qpool storage core: pools, volumes, domains, state and the driver interface.
 *
 * Every function below the CLI returns 0 or a negative errno and puts a
 * one-line message into a caller-owned struct qp_err.  Library code never
 * prints.
 */
#ifndef QPOOL_STORAGE_QPOOL_H
#define QPOOL_STORAGE_QPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define QP_NAME_MAX 31
#define QP_GiB (1024ULL * 1024 * 1024)
#define QP_DEFAULT_ROOT_SIZE (10 * QP_GiB)
#define QP_DEFAULT_PRIVATE_SIZE (2 * QP_GiB)
#define QP_DEFAULT_VOLATILE_SIZE (10 * QP_GiB)
#define QP_DEFAULT_ROOT "/var/lib/qpool"

/* ---- errors ---------------------------------------------------------- */

struct qp_err {
	int code;	/* negative errno, 0 when unset */
	char msg[1024];
};

/* Sets the message and returns @code, so callers can `return qp_err_set(...)`. */
int qp_err_set(struct qp_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prepends "PREFIX: " to the message already set; returns err->code. */
int qp_err_prefix(struct qp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- key/value lists (pool options, properties, features) ------------ */

struct qp_kv {
	char *key;
	char *val;	/* may be "" but never NULL */
};

struct qp_kvlist {
	struct qp_kv *v;
	size_t n;
};

const char *qp_kv_get(const struct qp_kvlist *l, const char *key);
/* Sets or replaces; val NULL removes.  Returns 0 or -ENOMEM. */
int qp_kv_set(struct qp_kvlist *l, const char *key, const char *val);
void qp_kv_release(struct qp_kvlist *l);
/* Parses "True"/"False" (and 1/0/yes/no, case-insensitive).  Returns 0 or -EINVAL. */
int qp_parse_bool(const char *s, bool *out);
/* Parses sizes with K/M/G/T (powers of 1000) or Ki/Mi/Gi/Ti (powers of 1024), B optional. */
int qp_parse_size(const char *s, uint64_t *out);
int qp_parse_int(const char *s, long long min, long long max, long long *out);

/* ---- names ------------------------------------------------------------ */

/* Letters, digits, '_', '.', '-'; not starting with '-' or '.'; 1..31 chars. */
bool qp_name_valid(const char *name);

/* ---- pools ------------------------------------------------------------ */

enum qp_pool_state {
	QP_POOL_ONLINE = 0,
	QP_POOL_OFFLINE,	/* its drive is absent */
	QP_POOL_LOCKED,		/* its drive is present but encrypted and locked */
};

struct qp_driver;

struct qp_pool {
	char *name;
	const struct qp_driver *drv;
	struct qp_kvlist config;	/* options as stored in qubes.xml, without name/driver */
	int revisions_to_keep;
	bool ephemeral_volatile;
	struct qp_state *st;		/* back pointer, borrowed */
};

/* ---- volumes ---------------------------------------------------------- */

struct qp_domain;

struct qp_volume {
	char *name;		/* root, private, volatile, kernel */
	char *pool_name;
	struct qp_pool *pool;	/* NULL when pool_name names no pool */
	char *vid;
	char *source;		/* vid of the source volume, snap_on_start only */
	struct qp_volume *src;	/* resolved source (first volume with no source), or NULL */
	bool rw;
	bool snap_on_start;
	bool save_on_stop;
	bool rtk_set;		/* revisions_to_keep given for this volume */
	int rtk;		/* its value when rtk_set */
	int ephemeral;		/* -1 default, 0 false, 1 true */
	uint64_t size;
	struct qp_domain *vm;	/* owner, borrowed */
};

/* Effective revisions_to_keep: the volume's own value, else the pool's. */
int qp_vol_rtk(const struct qp_volume *v);
/* Effective ephemeral flag (reference A.1). */
bool qp_vol_ephemeral(const struct qp_volume *v);
/* "origin", "snapshot", "volatile" or "origin_snapshot". */
const char *qp_vol_kind(const struct qp_volume *v);

struct qp_revision {
	char *id;	/* driver-specific, e.g. "3" or "1700000000-back" */
	char *time;	/* ISO-8601 UTC without offset, e.g. 2026-11-22T06:00:00 */
};
void qp_revisions_free(struct qp_revision *r, size_t n);

/* ---- domains ---------------------------------------------------------- */

enum qp_class {
	QP_ADMINVM = 0,
	QP_TEMPLATEVM,
	QP_STANDALONEVM,
	QP_APPVM,
	QP_DISPVM,
};
const char *qp_class_name(enum qp_class c);
int qp_class_parse(const char *s, enum qp_class *out);

struct qp_domain {
	char *name;
	enum qp_class cls;
	int qid;
	struct qp_kvlist props;		/* every <property> but name and qid: label, template, uuid... */
	struct qp_kvlist features;
	struct qp_kvlist tags;		/* keys only */
	struct qp_volume **vols;
	size_t n_vols;
	char *started;			/* boot id of the start, NULL when stopped */
	struct qp_state *st;
};

const char *qp_dom_prop(const struct qp_domain *d, const char *key);
/* Template domain by the "template" property, or NULL. */
struct qp_domain *qp_dom_template(const struct qp_domain *d);
struct qp_volume *qp_dom_volume(const struct qp_domain *d, const char *name);
bool qp_dom_started(const struct qp_domain *d);
/* The kernel version of @d: its property "kernel" when present (empty means
 * none), else its template's, else the global default_kernel.  NULL or ""
 * when it has none.  Borrowed. */
const char *qp_dom_kernel(const struct qp_domain *d);

/* ---- state (qubes.xml) ------------------------------------------------ */

struct qp_label {
	int id;
	char *color;
	char *name;
};

struct qp_state {
	char *root;		/* state folder */
	int lock_fd;		/* -1 when not locked */
	bool writable;
	struct qp_label *labels;
	size_t n_labels;
	struct qp_kvlist props;	/* global <properties> */
	struct qp_pool **pools;
	size_t n_pools;
	struct qp_domain **doms;
	size_t n_doms;
};

enum {
	QP_STATE_WRITE = 1 << 0,	/* take the exclusive lock, allow qp_state_save */
};

/* The state folder: --root, else $QPOOL_ROOT, else QP_DEFAULT_ROOT.  Borrowed. */
const char *qp_default_root(const char *opt_root);

/* Loads <root>/qubes.xml (creating it with the embedded default pool on first
 * use).  With QP_STATE_WRITE the exclusive lock is held until qp_state_free,
 * and domains left started by an earlier boot are recovered.  *out is owned
 * by the caller. */
int qp_state_open(const char *root, unsigned flags, struct qp_state **out, struct qp_err *err);
/* Atomically replaces qubes.xml (temp file, fsync, rename, fsync of the folder). */
int qp_state_save(struct qp_state *st, struct qp_err *err);
void qp_state_free(struct qp_state *st);

/* Parses a qubes.xml document held in memory into a state with no root and no
 * lock (used by restore).  Pools with unknown drivers are kept with drv NULL. */
int qp_state_parse(const char *buf, size_t len, struct qp_state **out, struct qp_err *err);
/* Serialises the state into a malloc'd NUL-terminated buffer owned by the caller. */
int qp_state_format(const struct qp_state *st, char **out, size_t *len, struct qp_err *err);

struct qp_pool *qp_pool_find(const struct qp_state *st, const char *name);
struct qp_domain *qp_dom_find(const struct qp_state *st, const char *name);
/* The pool new volumes go to: property default_pool, else "default". */
struct qp_pool *qp_default_pool(const struct qp_state *st);
/* Resolves every volume's pool and source after load or change. */
void qp_state_link(struct qp_state *st);

/* Allocation and linking (storage/objects.c).  Objects added to a state are
 * owned by it and freed by qp_state_free. */
/* Builds a pool of @driver from @config (options without name/driver; copied)
 * and runs the driver's pool_init.  Not added to st. */
int qp_pool_new(struct qp_state *st, const char *name, const char *driver,
		const struct qp_kvlist *config, struct qp_pool **out, struct qp_err *err);
void qp_pool_free(struct qp_pool *p);
int qp_state_add_pool(struct qp_state *st, struct qp_pool *p);
/* Removes from st and frees. */
void qp_state_del_pool(struct qp_state *st, struct qp_pool *p);
struct qp_domain *qp_dom_new(const char *name, enum qp_class cls);
void qp_dom_free(struct qp_domain *d);
int qp_state_add_dom(struct qp_state *st, struct qp_domain *d);
void qp_state_del_dom(struct qp_state *st, struct qp_domain *d);
struct qp_volume *qp_vol_new(const char *name);
void qp_vol_free(struct qp_volume *v);
int qp_dom_add_volume(struct qp_domain *d, struct qp_volume *v);
/* Smallest qid not in use (dom0 is 0). */
int qp_state_next_qid(const struct qp_state *st);
const struct qp_label *qp_label_find(const struct qp_state *st, const char *name);

/* ---- operations (storage/ops.c) --------------------------------------- */

int qp_pool_add(struct qp_state *st, const char *name, const char *driver,
		const struct qp_kvlist *opts, struct qp_err *err);
int qp_pool_remove(struct qp_state *st, const char *name, struct qp_err *err);
int qp_pool_set(struct qp_state *st, const char *name, const char *key, const char *val,
		struct qp_err *err);
/* Sorted key=value rows: the config plus size and usage.  *out owned by caller. */
int qp_pool_info(struct qp_pool *p, struct qp_kvlist *out, struct qp_err *err);

struct qp_vm_spec {
	const char *name;
	enum qp_class cls;
	const char *template_name;	/* AppVM, DispVM */
	const char *label;		/* NULL: red for AppVM/DispVM, black for templates */
	const char *pool;		/* NULL: the default pool */
	const char *owner;		/* "UID[:GID]" (see qp_owner_parse), or NULL */
	const char *kernel;		/* kernel version (property "kernel"), or NULL */
};
int qp_vm_create(struct qp_state *st, const struct qp_vm_spec *spec, struct qp_err *err);
/* Refused while started, or while other VMs use it as template. */
int qp_vm_remove(struct qp_state *st, const char *name, struct qp_err *err);

/* The pool of kernel volumes: the one named by the global property
 * default_pool_kernel, else the only pool of driver linux-kernel.  *out is
 * NULL (and 0 returned) when there is none; several without
 * default_pool_kernel is an error. */
int qp_kernel_pool(const struct qp_state *st, struct qp_pool **out, struct qp_err *err);
/* Sets the kernel of halted VM @name (@version "" for none): the property
 * "kernel" and the vid of its kernel volume, which is added when the VM has
 * none and a kernel pool exists.  The kernel must be installed in that pool.
 * With @name NULL, sets the global default_kernel instead.  Saves. */
int qp_vm_set_kernel(struct qp_state *st, const char *name, const char *version,
		     struct qp_err *err);

struct qp_attach {
	char *volume;
	char *path;
	bool rw;
};
void qp_attach_free(struct qp_attach *a, size_t n);
/* Starts every volume; on failure, undoes the ones already started. */
int qp_vm_start(struct qp_state *st, const char *name, struct qp_attach **out, size_t *n,
		struct qp_err *err);
enum { QP_STOP_FORCE = 1 << 0 };
int qp_vm_stop(struct qp_state *st, const char *name, unsigned flags, struct qp_err *err);

/* "VM:VOLUME" lookup with a clear error. */
int qp_vol_lookup(struct qp_state *st, const char *spec, struct qp_volume **out,
		  struct qp_err *err);
int qp_vol_is_dirty(struct qp_volume *v, bool *out, struct qp_err *err);
int qp_vol_is_outdated(struct qp_volume *v, bool *out, struct qp_err *err);
int qp_vol_usage(struct qp_volume *v, uint64_t *size, uint64_t *usage, struct qp_err *err);
int qp_vol_verify(struct qp_volume *v, struct qp_err *err);
int qp_vol_revisions(struct qp_volume *v, struct qp_revision **out, size_t *n,
		     struct qp_err *err);
/* rev NULL: the newest revision. */
int qp_vol_revert(struct qp_state *st, struct qp_volume *v, const char *rev, struct qp_err *err);
enum { QP_RESIZE_FORCE = 1 << 0 };
int qp_vol_resize(struct qp_state *st, struct qp_volume *v, uint64_t size, unsigned flags,
		  struct qp_err *err);
/* Imports @size bytes read from @fd (a file or a pipe) and commits them.
 * With QP_IMPORT_RESIZE the volume takes @size as its new size; otherwise
 * @size must equal the volume's size. */
enum { QP_IMPORT_RESIZE = 1 << 0 };
int qp_vol_import(struct qp_state *st, struct qp_volume *v, int fd, uint64_t size,
		  unsigned flags, struct qp_err *err);
int qp_vol_clone(struct qp_state *st, struct qp_volume *src, struct qp_volume *dst,
		 struct qp_err *err);
int qp_vol_clear(struct qp_state *st, struct qp_volume *v, struct qp_err *err);
/* PROP is rw, revisions_to_keep or ephemeral. */
int qp_vol_config(struct qp_state *st, struct qp_volume *v, const char *prop, const char *val,
		  struct qp_err *err);
/* Path of the committed content for readers (backup, qpoold); NULL-free.
 * *path owned by the caller.  Not available for volatile volumes. */
int qp_vol_export(struct qp_volume *v, char **path, struct qp_err *err);

/* ---- pools on external drives (storage/drive.c) ------------------------ */

/* Makes a pool on an external drive usable: finds its device, unlocks LUKS,
 * mounts the filesystem or activates the volume group.  An online pool is
 * left as it is. */
int qp_pool_attach(struct qp_state *st, const char *name, struct qp_err *err);
/* The reverse; refused while a VM with a volume in the pool is started. */
int qp_pool_detach(struct qp_state *st, const char *name, struct qp_err *err);
/* The function that asks for a LUKS passphrase when a pool has no key_file:
 * it writes a NUL-terminated passphrase into @buf (@size bytes, locked
 * memory, zeroed after use) and returns its length or a negative errno.
 * Without one, unlocking without a key file fails with -ENOKEY. */
void qp_drive_set_askpass(int (*fn)(const char *prompt, char *buf, size_t size));

/* ---- VM owners (storage/owner.c) --------------------------------------- */

/* The owner of a VM's files under qpoold is kept as the domain feature
 * QP_FEATURE_OWNER = "UID:GID"; without it, the files belong to root. */
#define QP_FEATURE_OWNER "qpool-owner"
/* Parses "UID[:GID]"; without GID, the primary group of UID in the passwd
 * database, else GID = UID.  Returns 0 or -EINVAL. */
int qp_owner_parse(const char *s, uid_t *uid, gid_t *gid, struct qp_err *err);
/* Reads the owner feature of @d: *has is false when the VM has none.
 * Returns 0, or -EINVAL when the stored value is malformed. */
int qp_dom_owner(const struct qp_domain *d, bool *has, uid_t *uid, gid_t *gid,
		 struct qp_err *err);
/* Sets the owner feature of @d from "UID[:GID]" (stored as "UID:GID"), or
 * removes it when @owner is NULL or "none".  Does not save. */
int qp_dom_set_owner(struct qp_domain *d, const char *owner, struct qp_err *err);
/* qp_dom_set_owner on VM @name, then saves the state. */
int qp_vm_set_owner(struct qp_state *st, const char *name, const char *owner,
		    struct qp_err *err);

/* ---- in-use markers (storage/inuse.c) ---------------------------------- */

/* A process that holds a volume open (qpoold) keeps the marker file
 * <root>/QP_INUSE_DIR/<vm>/<volume> holding its pid while it does. */
#define QP_INUSE_DIR "run/inuse"
/* *out is true when a live process marks @v as in use.  Markers whose
 * process is gone are stale: they are ignored and removed. */
int qp_vol_in_use(struct qp_volume *v, bool *out, struct qp_err *err);
/* For a forced stop of @v while it is in use: makes the marking process
 * (qpoold) refuse new writes to @v and waits (up to 10 s) for the writes
 * under way to end.  *lockfd: -1 when @v is not marked, else a descriptor
 * to hand to qp_vol_quiesce_end once @v is committed or discarded (or the
 * process dies: the locks go with it).  Returns 0 or a negative errno. */
int qp_vol_quiesce(struct qp_volume *v, int *lockfd, struct qp_err *err);
void qp_vol_quiesce_end(int lockfd);

/* ---- driver interface (storage/driver.h has the table) ---------------- */

#include "driver.h"

/* ---- test hook -------------------------------------------------------- */

/* Marks the end of one step of a state-changing operation.  When the
 * environment variable QPOOL_CRASH_AFTER=K is set (tests only), the process
 * dies with _exit(99) right after the K-th step, as a crash would leave it;
 * QPOOL_STEP_TRACE=1 prints each step's name to stderr. */
void qp_step(const char *what);

/* ---- boot id ---------------------------------------------------------- */

/* The running kernel's boot id (or $QPOOL_BOOT_ID, for tests). Borrowed. */
const char *qp_boot_id(void);

#endif
