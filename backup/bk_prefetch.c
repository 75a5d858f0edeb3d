/* Key prefetch for restores (see bk_prefetch.h). */
#include "bk_prefetch.h"
#include "bk_job.h"

#include "bk_compress.h"
#include "bk_header.h"
#include "bk_secure.h"
#include "bk_tar.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Members queued ahead of the reader at the most, and worker threads. */
#define PF_AHEAD 3
#define PF_WORKERS 2

enum pf_state { PF_PENDING, PF_RUNNING, PF_DONE };

struct pf_job {
	struct pf_job *next;
	char *name;
	uint8_t hdr[BK_SCRYPT_HDR_LEN];
	enum pf_state state;
	bool orphan; /* taken off the list while running: the worker frees it */
	struct bk_scrypt_key *key;
};

struct bk_prefetch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t scanner, workers[PF_WORKERS];
	size_t n_workers;
	struct pf_job *head, *tail;
	size_t n_jobs;
	bool scanned, stop;
	int fd;
	char *backup_id;
	const void *pass;
	size_t passlen;
	const struct bk_scrypt_limits *limits;
};

static void job_free(struct pf_job *j)
{
	if (!j)
		return;
	bk_scrypt_key_free(j->key);
	free(j->name);
	free(j);
}

/* Takes the head job off the list (the caller holds the lock). */
static struct pf_job *pop(struct bk_prefetch *pf)
{
	struct pf_job *j = pf->head;

	pf->head = j->next;
	if (!pf->head)
		pf->tail = NULL;
	pf->n_jobs--;
	j->next = NULL;
	if (j->state == PF_RUNNING) {
		j->orphan = true;
		return NULL;
	}
	return j;
}

static void *scan_main(void *arg)
{
	struct bk_prefetch *pf = arg;
	struct bk_tar_reader *tr = NULL;
	struct bk_tar_entry ent;
	struct qp_err err = { 0 };
	struct bk_in in;

	bk_in_init_fd(&in, pf->fd);
	if (bk_tar_reader_new(&in, BK_TAR_OUTER, UINT64_MAX, &tr, &err) < 0)
		goto out;
	while (bk_tar_next(tr, &ent, &err) == 1) {
		size_t len = strlen(ent.name), got = 0;
		struct pf_job *j;

		if (len < 5 || strcmp(ent.name + len - 4, ".enc") || ent.size < BK_SCRYPT_OVERHEAD)
			continue;
		j = calloc(1, sizeof(*j));
		if (!j || !(j->name = strdup(ent.name))) {
			free(j);
			break;
		}
		while (got < sizeof(j->hdr)) {
			ssize_t n = bk_tar_read(tr, j->hdr + got, sizeof(j->hdr) - got, &err);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (got < sizeof(j->hdr)) {
			job_free(j);
			break;
		}
		pthread_mutex_lock(&pf->lock);
		while (!pf->stop && pf->n_jobs >= PF_AHEAD)
			pthread_cond_wait(&pf->cond, &pf->lock);
		if (pf->stop) {
			pthread_mutex_unlock(&pf->lock);
			job_free(j);
			break;
		}
		if (pf->tail)
			pf->tail->next = j;
		else
			pf->head = j;
		pf->tail = j;
		pf->n_jobs++;
		pthread_cond_broadcast(&pf->cond);
		pthread_mutex_unlock(&pf->lock);
	}
out:
	bk_tar_reader_free(tr);
	pthread_mutex_lock(&pf->lock);
	pf->scanned = true;
	pthread_cond_broadcast(&pf->cond);
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

/* The oldest job not yet started, or NULL (the caller holds the lock). */
static struct pf_job *pending(struct bk_prefetch *pf)
{
	for (struct pf_job *j = pf->head; j; j = j->next)
		if (j->state == PF_PENDING)
			return j;
	return NULL;
}

static void *work_main(void *arg)
{
	struct bk_prefetch *pf = arg;

	pthread_mutex_lock(&pf->lock);
	for (;;) {
		struct bk_scrypt_key *key = NULL;
		struct qp_err err = { 0 };
		char *fpass = NULL, rel[BK_TAR_NAME_MAX];
		size_t flen = 0, len;
		struct pf_job *j = NULL;

		while (!pf->stop && !(j = pending(pf)) && !pf->scanned)
			pthread_cond_wait(&pf->cond, &pf->lock);
		if (pf->stop || !j)
			break;
		j->state = PF_RUNNING;
		pthread_mutex_unlock(&pf->lock);
		len = strlen(j->name) - 4;
		if (len < sizeof(rel)) {
			memcpy(rel, j->name, len);
			rel[len] = '\0';
			if (bk_header_pass_for_file(pf->backup_id, rel, pf->pass, pf->passlen, &fpass,
						    &flen, &err) == 0)
				bk_scrypt_dec_header(j->hdr, fpass, flen, pf->limits, &key, &err);
			bk_secure_free(fpass);
		}
		pthread_mutex_lock(&pf->lock);
		j->key = key;
		j->state = PF_DONE;
		if (j->orphan)
			job_free(j);
		pthread_cond_broadcast(&pf->cond);
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

void bk_prefetch_start(const char *path, const char *backup_id, const void *pass,
		       size_t passlen, const struct bk_scrypt_limits *limits,
		       struct bk_prefetch **out)
{
	struct bk_scrypt_params def = bk_scrypt_params_default();
	struct bk_prefetch *pf;
	struct stat st;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN), fit;

	*out = NULL;
	pf = calloc(1, sizeof(*pf));
	if (!pf)
		return;
	pf->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (pf->fd < 0 || fstat(pf->fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    !(pf->backup_id = strdup(backup_id))) {
		if (pf->fd >= 0)
			close(pf->fd);
		free(pf);
		return;
	}
	pf->pass = pass;
	pf->passlen = passlen;
	pf->limits = limits;
	pthread_mutex_init(&pf->lock, NULL);
	pthread_cond_init(&pf->cond, NULL);
	if (pthread_create(&pf->scanner, NULL, scan_main, pf)) {
		pthread_mutex_destroy(&pf->lock);
		pthread_cond_destroy(&pf->cond);
		close(pf->fd);
		free(pf->backup_id);
		free(pf);
		return;
	}
	/* The reader derives too (the header's key, keys not prefetched):
	 * workers for what memory holds beyond one derivation. */
	fit = (long)bk_kdf_parallel(bk_scrypt_params_memory(&def), PF_WORKERS + 1) - 1;
	for (long i = 0; i < PF_WORKERS && i < fit && (i == 0 || i < ncpu); i++) {
		if (pthread_create(&pf->workers[pf->n_workers], NULL, work_main, pf))
			break;
		pf->n_workers++;
	}
	*out = pf;
}

struct bk_scrypt_key *bk_prefetch_take(struct bk_prefetch *pf, const char *name,
				       const uint8_t hdr[BK_SCRYPT_HDR_LEN])
{
	struct bk_scrypt_key *key = NULL;
	struct pf_job *j;

	if (!pf || !pf->n_workers)
		return NULL;
	pthread_mutex_lock(&pf->lock);
	for (;;) {
		/* Members before @name are behind the reader. */
		while (pf->head && strcmp(pf->head->name, name)) {
			job_free(pop(pf));
			pthread_cond_broadcast(&pf->cond);
		}
		j = pf->head;
		if (!j && pf->scanned)
			break;
		if (j && memcmp(j->hdr, hdr, BK_SCRYPT_HDR_LEN)) {
			job_free(pop(pf));
			pthread_cond_broadcast(&pf->cond);
			break;
		}
		if (j && j->state == PF_DONE) {
			key = j->key;
			j->key = NULL;
			job_free(pop(pf));
			pthread_cond_broadcast(&pf->cond);
			break;
		}
		pthread_cond_wait(&pf->cond, &pf->lock);
	}
	pthread_mutex_unlock(&pf->lock);
	return key;
}

void bk_prefetch_stop(struct bk_prefetch *pf)
{
	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	pf->stop = true;
	pthread_cond_broadcast(&pf->cond);
	pthread_mutex_unlock(&pf->lock);
	pthread_join(pf->scanner, NULL);
	for (size_t i = 0; i < pf->n_workers; i++)
		pthread_join(pf->workers[i], NULL);
	while (pf->head)
		job_free(pop(pf));
	pthread_mutex_destroy(&pf->lock);
	pthread_cond_destroy(&pf->cond);
	close(pf->fd);
	free(pf->backup_id);
	free(pf);
}
