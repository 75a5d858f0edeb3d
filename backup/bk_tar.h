/* qpool backup: the two tar layers of a backup (see backup/FORMAT.md).
 *
 * Outer archive: one POSIX (pax) tar archive per member, written back to
 * back, each ending with its own end-of-archive blocks (read it with
 * `tar -i`).  Inner stream: one tar entry per backed-up file; a volume image
 * is a pax sparse 1.0 entry whose holes stay holes.
 *
 * The reader handles both layers and is hardened against hostile input:
 * every header checksum is checked and unsafe names, member types, sizes and
 * sparse maps are refused with -EBADMSG.
 *
 * Every function returns 0 (or a count) or a negative errno with a message in
 * the caller's struct qp_err.
 */
#ifndef QPOOL_BACKUP_BK_TAR_H
#define QPOOL_BACKUP_BK_TAR_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "bk_compress.h"

#define BK_TAR_BLOCK 512
/* Each outer archive is padded to GNU tar's default record (20 blocks). */
#define BK_TAR_RECORD (20 * BK_TAR_BLOCK)
/* Longest member name accepted or written. */
#define BK_TAR_NAME_MAX 4096
/* Most sparse map entries accepted by the reader. */
#define BK_TAR_MAX_EXTENTS (1U << 22)

/* ---- outer archive writer ------------------------------------------------ */

/* Starts one outer archive holding the regular file @name (relative, no
 * `..`) of @size bytes: writes a pax extended header and the ustar header.
 * The caller then writes exactly @size bytes to @out. */
int bk_tar_member_begin(struct bk_out *out, const char *name, uint64_t size, time_t mtime,
			struct qp_err *err);
/* Ends the archive begun with @size: pads the data to a block, writes the
 * two zero blocks and pads to BK_TAR_RECORD. */
int bk_tar_member_end(struct bk_out *out, uint64_t size, struct qp_err *err);

/* ---- inner stream writer ------------------------------------------------- */

struct bk_extent {
	uint64_t off;
	uint64_t len;
};

/* A sparse map: data extents in order, then an entry reaching @realsize
 * (zero-length when the file ends in a hole). */
struct bk_sparse_map {
	uint64_t realsize;
	size_t n;
	struct bk_extent *ext;
};

void bk_sparse_map_release(struct bk_sparse_map *m);

/* Also leave 512-byte-aligned blocks of zeros inside data extents as holes
 * (reads the data twice). */
#define BK_SPARSE_SCAN_ZEROS 0x1u

/* Finds the data extents of @fd (a file or block device) with SEEK_DATA and
 * SEEK_HOLE (the whole size is data where they are not supported). */
int bk_sparse_scan(int fd, unsigned flags, struct bk_sparse_map *out, struct qp_err *err);

/* Writes a whole inner tar stream for the image @fd stored as @name: one
 * pax sparse 1.0 entry and the two end blocks.  Streams through @out in
 * pieces of at most 1 MiB; the image is read with pread. */
int bk_inner_write_sparse(struct bk_out *out, int fd, const char *name, time_t mtime,
			  unsigned flags, struct qp_err *err);
/* The same with the sparse map @m of @fd found already (bk_sparse_scan). */
int bk_inner_write_sparse_map(struct bk_out *out, int fd, const char *name, time_t mtime,
			      const struct bk_sparse_map *m, struct qp_err *err);
/* Writes a whole inner tar stream holding the regular file @name with
 * @len bytes of @data (qubes.xml is stored as "qubes.xml"). */
int bk_inner_write_file(struct bk_out *out, const char *name, const void *data, size_t len,
			time_t mtime, struct qp_err *err);

/* ---- reader --------------------------------------------------------------- */

enum bk_tar_mode {
	/* Concatenated archives of regular files; zero blocks are skipped and
	 * only the end of input ends the listing. */
	BK_TAR_OUTER,
	/* One archive (ends at its first zero block) of regular files and
	 * sparse files: pax 1.0, pax 0.0/0.1 and old GNU ('S'), with GNU long
	 * names ('L'). */
	BK_TAR_INNER,
};

struct bk_tar_entry {
	const char *name;  /* owned by the reader, valid until the next call */
	uint64_t size;	   /* bytes stored in the archive */
	uint64_t realsize; /* size of the file once expanded */
	time_t mtime;
	int sparse; /* 1 for sparse entries */
};

struct bk_tar_reader;

/* A reader of @in (which it borrows).  Inner entries whose realsize exceeds
 * @limit are refused with -EFBIG.  *@out is the caller's to free. */
int bk_tar_reader_new(struct bk_in *in, enum bk_tar_mode mode, uint64_t limit,
		      struct bk_tar_reader **out, struct qp_err *err);
void bk_tar_reader_free(struct bk_tar_reader *r);

/* Moves to the next entry (skipping what is left of the current one):
 * returns 1 with @ent filled, 0 at the end of the archive(s), or a negative
 * errno (-EBADMSG for malformed or unsafe input). */
int bk_tar_next(struct bk_tar_reader *r, struct bk_tar_entry *ent, struct qp_err *err);

/* Reads up to @len bytes of the current regular entry's data; returns the
 * count, 0 at its end, or a negative errno (-EINVAL for sparse entries). */
ssize_t bk_tar_read(struct bk_tar_reader *r, void *buf, size_t len, struct qp_err *err);

/* Writes the current entry's expanded content into @dest with pwrite at
 * file offsets: data extents are written, holes are skipped (so @dest must
 * read as zeros there, e.g. a new file); a regular @dest is then truncated
 * to the entry's realsize. */
int bk_tar_extract(struct bk_tar_reader *r, int dest, struct qp_err *err);

/* The current entry's sparse map (NULL for a regular entry). */
const struct bk_sparse_map *bk_tar_sparse_map(const struct bk_tar_reader *r);

#endif
