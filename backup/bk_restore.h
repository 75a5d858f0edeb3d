/* qpool backup: restoring and verifying a backup (format version 4).
 *
 * The archive is hostile until proven otherwise.  bk_restore_run checks
 * the backup-header against backup-header.hmac before parsing it (a wrong
 * passphrase fails there, before anything is created), reads qubes.xml,
 * then streams every member: names, order and chunk numbers are checked,
 * each chunk is decrypted into a temporary file and only handed on once its
 * MAC verified, decompressed, and its inner tar entry extracted into the
 * import staging of the new volume.  Staging is committed only when the
 * whole archive was read and every expected file verified; on any failure
 * every staging is dropped and the VMs created for the restore removed.
 * With verify_only nothing is created and the state is not locked.
 */
#ifndef QPOOL_BACKUP_BK_RESTORE_H
#define QPOOL_BACKUP_BK_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bk_scrypt.h"

enum bk_conflict {
	BK_CONFLICT_FAIL,   /* a VM of the same name exists: refuse */
	BK_CONFLICT_RENAME, /* restore it under a free name: NAME1, NAME2... */
	BK_CONFLICT_SKIP,   /* leave it out */
};

struct bk_restore_opts {
	const char *path;
	char *const *vms; /* none: every VM in the backup */
	size_t n_vms;
	char *const *exclude;
	size_t n_exclude;
	const void *pass;
	size_t passlen;
	bool verify_only;
	const char *pool; /* NULL: the default pool */
	enum bk_conflict conflict;
	struct bk_scrypt_limits limits;
	/* Bytes of the archive read so far, of its size. */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *progress_ctx;
	/* Things the user should know (VMs skipped and why). */
	void (*note)(void *ctx, const char *msg);
	void *note_ctx;
};

struct bk_restore_result {
	unsigned n_vms;	      /* restored (or verified) */
	uint64_t vol_bytes;   /* size of the volumes restored or verified */
	uint64_t archive_bytes;
	unsigned chunks;
	unsigned missing;     /* files the qubes.xml promises that the archive lacks */
};

int bk_restore_run(const char *root, const struct bk_restore_opts *o,
		   struct bk_restore_result *res, struct qp_err *err);

#endif
