/* qpool backup: writing a backup of VMs (format version 4).
 *
 * bk_backup_run picks the VMs, opens the committed content of their
 * save_on_stop volumes while it briefly holds the state lock (so running
 * VMs are backed up as of their last commit and are never blocked for the
 * length of the backup), prepares the qubes.xml copy with the backup-content,
 * backup-path and backup-size features, and runs the writer pipeline
 * (bk_writer.h) into a new archive file.  See backup/FORMAT.md.
 */
#ifndef QPOOL_BACKUP_BK_BACKUP_H
#define QPOOL_BACKUP_BK_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bk_scrypt.h"

/* 1 GiB: Qubes' own restore takes chunks of any size; fewer chunks mean
 * fewer key derivations. */
#define BK_CHUNK_DEFAULT (1ULL << 30)

struct bk_backup_opts {
	const char *dest;	   /* a file to create, or a folder */
	char *const *vms;	   /* names; none: every VM included in backups */
	size_t n_vms;
	char *const *exclude;
	size_t n_exclude;
	bool compress;
	const char *filter;	   /* "gzip" (NULL), "zstd"; also with !compress */
	int level;		   /* <= 0: gzip 1, zstd 3 */
	struct bk_scrypt_params kdf;
	uint64_t chunk_size;	   /* 0: BK_CHUNK_DEFAULT */
	const void *pass;	   /* the user's passphrase, borrowed */
	size_t passlen;
	unsigned sparse_flags;	   /* bk_inner_write_sparse flags */
	int workers;		   /* 0: one per CPU */
	void (*progress)(void *ctx, uint64_t in, uint64_t total, uint64_t out);
	void *progress_ctx;
};

struct bk_backup_result {
	char *path;		/* the archive written (owned) */
	unsigned n_vms;
	uint64_t total;		/* bytes of the volumes (their sizes) */
	uint64_t in_bytes;	/* inner streams */
	uint64_t out_bytes;	/* archive */
	unsigned chunks;
	unsigned kdf_wasted;
	const struct bk_backup_opts *opts_; /* internal */
};

/* Writes a backup of the state at @root.  On failure nothing is left at the
 * destination.  @res is filled on success; release it with
 * bk_backup_result_release. */
int bk_backup_run(const char *root, const struct bk_backup_opts *o, struct bk_backup_result *res,
		  struct qp_err *err);
void bk_backup_result_release(struct bk_backup_result *res);

#endif
