/* qpool backup: scrypt key derivations on their own threads. */
#include "bk_job.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_secure.h"

struct bk_kdf_job {
	pthread_t thread;
	bool joined;
	char *pass; /* secure memory */
	size_t len;
	struct bk_scrypt_params pr;
	bool has_salt;
	uint8_t salt[BK_SCRYPT_SALT_LEN];
	struct bk_scrypt_key *key;
	int ret;
	struct qp_err err;
};

static void *kdf_main(void *arg)
{
	struct bk_kdf_job *j = arg;

	j->ret = bk_scrypt_derive(j->pass, j->len, &j->pr, j->has_salt ? j->salt : NULL, &j->key,
				  &j->err);
	return NULL;
}

int bk_kdf_job_start(const void *pass, size_t len, const struct bk_scrypt_params *pr,
		     const uint8_t *salt, struct bk_kdf_job **out, struct qp_err *err)
{
	struct bk_kdf_job *j;
	int r;

	*out = NULL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return qp_err_set(err, -ENOMEM, "out of memory");
	j->pass = bk_secure_dup(pass, len);
	if (!j->pass) {
		free(j);
		return qp_err_set(err, -ENOMEM, "out of memory for a passphrase");
	}
	j->len = len;
	j->pr = pr ? *pr : bk_scrypt_params_default();
	if (salt) {
		j->has_salt = true;
		memcpy(j->salt, salt, BK_SCRYPT_SALT_LEN);
	}
	r = pthread_create(&j->thread, NULL, kdf_main, j);
	if (r != 0) {
		bk_secure_free(j->pass);
		free(j);
		return qp_err_set(err, -r, "cannot start a key derivation thread: %s", strerror(r));
	}
	*out = j;
	return 0;
}

static void kdf_join(struct bk_kdf_job *j)
{
	if (!j->joined) {
		pthread_join(j->thread, NULL);
		j->joined = true;
		bk_secure_free(j->pass);
		j->pass = NULL;
	}
}

int bk_kdf_job_wait(struct bk_kdf_job *j, struct bk_scrypt_key **key, struct qp_err *err)
{
	*key = NULL;
	kdf_join(j);
	if (j->ret < 0) {
		if (err)
			*err = j->err;
		return j->ret;
	}
	if (!j->key)
		return qp_err_set(err, -EINVAL, "key already taken");
	*key = j->key;
	j->key = NULL;
	return 0;
}

void bk_kdf_job_free(struct bk_kdf_job *j)
{
	if (!j)
		return;
	kdf_join(j);
	bk_scrypt_key_free(j->key);
	free(j);
}

unsigned bk_kdf_parallel_for(uint64_t avail, uint64_t each, unsigned want)
{
	uint64_t n;

	if (want < 1)
		want = 1;
	if (each == 0)
		return want;
	n = avail > BK_KDF_RESERVE ? (avail - BK_KDF_RESERVE) / each : 0;
	return n < 1 ? 1 : n < want ? (unsigned)n : want;
}

unsigned bk_kdf_parallel(uint64_t each, unsigned want)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	uint64_t kb = 0;
	bool found = false;

	while (f && !found && fgets(line, sizeof(line), f))
		found = sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1;
	if (f)
		fclose(f);
	/* Unknown: as if memory were no bound. */
	return bk_kdf_parallel_for(found ? kb * 1024 : UINT64_MAX, each, want);
}
