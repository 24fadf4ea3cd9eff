/* SPDX-License-Identifier: MIT */
/* A push's blobs, a few at a time: digested (sha256; a chunk of a sparse
 * file with no data is zero without reading, and registry.json recalls
 * the digests of files that have not changed), looked for at the registry,
 * and uploaded where it lacks them, each phase with its progress. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ops/push.h"

#define HASH_BUF (1 << 20)
#define THREADS 4

static void report(struct push *p, bool finished)
{
	bool up = !strcmp(p->phase, "upload");
	struct progress pr = {.phase = p->phase, .fn = p->opts->progress,
			      .userdata = p->opts->userdata, .total = up ? p->to_send : p->total,
			      .t0 = p->t0};
	uint64_t done = __atomic_load_n(up ? &p->sent : &p->hashed, __ATOMIC_RELAXED);

	progress_report(&pr, done < pr.total ? done : pr.total, finished);
}

static void tick(void *ud)
{
	report(ud, false);
}

static bool all_zero(const char *buf, size_t n)
{
	return n == 0 || (buf[0] == 0 && !memcmp(buf, buf + 1, n - 1));
}

static int hash_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];
	struct pfile *f = &p->files[b->file];
	_cleanup_free_ char *buf = NULL;
	struct sha256 h;
	bool zero = b->chunk;
	uint64_t pos = 0;

	(void)r, (void)c;
	if (b->known) {
		__atomic_fetch_add(&p->hashed, b->size, __ATOMIC_RELAXED);
		return 0;
	}
	/* A chunk of a sparse file with no data in it is zero without reading. */
	if (b->chunk) {
		off_t d = lseek(f->fd, (off_t)b->off, SEEK_DATA);

		if ((d < 0 && errno == ENXIO) || (d >= 0 && (uint64_t)d >= b->off + b->size)) {
			b->zero = true;
			__atomic_fetch_add(&p->hashed, b->size, __ATOMIC_RELAXED);
			return 0;
		}
	}
	buf = xmalloc(HASH_BUF);
	sha256_init(&h);
	while (pos < b->size) {
		size_t want = b->size - pos < HASH_BUF ? (size_t)(b->size - pos) : HASH_BUF;
		ssize_t n = pread(f->fd, buf, want, (off_t)(b->off + pos));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sha256_free(&h);
			return n < 0 ? qerr(err, errno, "cannot read %s: %s", f->path, strerror(errno))
				     : qerr(err, EIO, "%s became shorter while it was pushed", f->path);
		}
		if (zero)
			zero = all_zero(buf, (size_t)n);
		sha256_update(&h, buf, (size_t)n);
		pos += (uint64_t)n;
		__atomic_fetch_add(&p->hashed, (uint64_t)n, __ATOMIC_RELAXED);
	}
	sha256_final(&h, b->digest);
	b->zero = zero;
	return 0;
}

static int head_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];

	if (b->zero || b->dup)
		return 0;
	return reg_blob_exists(r, c, b->digest, &b->present, err);
}

static void count_sent(uint64_t n, void *ud)
{
	struct push *p = ud;

	__atomic_fetch_add(&p->sent, n, __ATOMIC_RELAXED);
}

static int upload_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];
	int ret;

	if (b->zero || b->dup || b->present)
		return 0;
	ret = reg_blob_upload_fd(r, c, p->files[b->file].fd, b->off, b->size, b->digest, count_sent,
				 p, err);
	if (ret < 0)
		return qerr_prefix(err, "%s (%s)", b->title, p->files[b->file].path);
	b->uploaded = true;
	return 0;
}

static int run_phase(struct push *p, struct registry *reg, const char *phase, reg_job fn,
		     qsnap_error *err)
{
	int r;

	p->phase = phase;
	p->t0 = now_ms();
	r = reg_parallel(reg, p->n_blobs, THREADS, fn, p, tick, err);
	if (r >= 0)
		report(p, true);
	return r;
}

int push_blobs(struct push *p, struct registry *reg, qsnap_error *err)
{
	int r;

	p->t0 = now_ms();
	r = run_phase(p, reg, "digest", hash_job, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->n_blobs; i++)
		for (size_t j = 0; !p->blobs[i].zero && j < i; j++)
			if (!p->blobs[j].zero && !strcmp(p->blobs[i].digest, p->blobs[j].digest)) {
				p->blobs[i].dup = true;
				break;
			}
	r = run_phase(p, reg, "check", head_job, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->n_blobs; i++)
		if (!p->blobs[i].zero && !p->blobs[i].dup && !p->blobs[i].present)
			p->to_send += p->blobs[i].size;
	return run_phase(p, reg, "upload", upload_job, err);
}

void push_recall(struct push *p, json_object *rec)
{
	for (size_t i = 0; i < p->n_files; i++) {
		struct pfile *f = &p->files[i];

		if (f->chunked) {
			char (*d)[DIGEST_LEN + 1] = xcalloc(f->n ? f->n : 1, sizeof(*d));

			if (oci_record_chunks(rec, p->vm->dirfd, f->key, OCI_CHUNK_SIZE, f->n, d))
				for (size_t j = 0; j < f->n; j++) {
					struct oci_blob *b = &p->blobs[f->first + j];

					b->known = true;
					b->zero = !d[j][0];
					memcpy(b->digest, d[j], sizeof(b->digest));
				}
			free(d);
		} else if (f->n == 1) {
			const char *d = oci_record_digest(rec, p->vm->dirfd, f->key);

			if (d) {
				p->blobs[f->first].known = true;
				snprintf(p->blobs[f->first].digest, sizeof(p->blobs[f->first].digest),
					 "%s", d);
			}
		}
	}
}

void push_remember(struct push *p, json_object *rec)
{
	qsnap_error e;

	for (size_t i = 0; i < p->n_files; i++) {
		struct pfile *f = &p->files[i];

		if (f->chunked) {
			const char **d = xcalloc(f->n ? f->n : 1, sizeof(char *));

			for (size_t j = 0; j < f->n; j++)
				d[j] = p->blobs[f->first + j].zero ? NULL : p->blobs[f->first + j].digest;
			oci_record_set_chunks(rec, p->vm->dirfd, f->key, OCI_CHUNK_SIZE, d, f->n);
			free(d);
		} else if (f->n == 1) {
			oci_record_set(rec, p->vm->dirfd, f->key, p->blobs[f->first].digest);
		}
	}
	oci_record_save(rec, p->vm->dirfd, &e);
}
