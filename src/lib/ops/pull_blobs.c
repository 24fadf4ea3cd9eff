/* SPDX-License-Identifier: MIT */
/* The downloads of a pull: the files of the staging directory and the
 * blobs that go into them, a few at a time, each checked against its
 * sha256 as it comes and written with its all-zero blocks left as holes;
 * a chunk that an earlier pull into the same VM left in one of its files
 * is copied from there instead (and checked), and a chunk never stored
 * (all zeros) is not fetched at all. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/falloc.h>

#include "ops/pull.h"

#define THREADS 4
#define BLOCK 4096

void pull_record_chunks(json_object *rec, int dirfd, const char *path,
			const struct oci_pchunks *ch)
{
	const char **d = xcalloc(ch->n, sizeof(char *));

	for (size_t i = 0; i < ch->n; i++)
		d[i] = ch->chunks[i].digest[0] ? ch->chunks[i].digest : NULL;
	oci_record_set_chunks(rec, dirfd, path, ch->chunk_size, d, ch->n);
	free(d);
}

size_t pull_add_dst(struct pull *p, const char *rel, uint64_t size)
{
	p->dsts = xrealloc(p->dsts, (p->n_dsts + 1) * sizeof(*p->dsts));
	p->dsts[p->n_dsts] = (struct dst){.rel = xstrdup(rel), .fd = -1, .size = size};
	return p->n_dsts++;
}

void pull_add_job(struct pull *p, const struct oci_item *it, size_t dst, uint64_t off,
		  const char *title)
{
	p->jobs = xrealloc(p->jobs, (p->n_jobs + 1) * sizeof(*p->jobs));
	p->jobs[p->n_jobs++] = (struct job){.item = *it, .dst = dst, .off = off,
					    .title = xstrdup(title)};
	p->total += it->size;
}

void pull_add_chunk_jobs(struct pull *p, const struct oci_pchunks *ch, const char *rel,
			 const char *what)
{
	size_t d = pull_add_dst(p, rel, ch->size);

	for (size_t i = 0; i < ch->n; i++) {
		_cleanup_free_ char *title = xasprintf("%s chunk %zu", what, i);

		const char *local = NULL;
		uint64_t loff = 0;

		if (!ch->chunks[i].digest[0])
			continue;
		if (p->vmdirfd >= 0)
			local = oci_record_find_chunk(p->record, p->vmdirfd, ch->chunks[i].digest, &loff);
		pull_add_job(p, &ch->chunks[i], d, (uint64_t)i * ch->chunk_size, title);
		if (local) {
			p->jobs[p->n_jobs - 1].local = xstrdup(local);
			p->jobs[p->n_jobs - 1].local_off = loff;
			p->total -= ch->chunks[i].size;
		}
	}
}

struct sinkctx {
	struct pull *p;
	int fd;
	uint64_t pos;
	char *buf;
	size_t fill;
};

static bool zero_block(const char *b, size_t n)
{
	return b[0] == 0 && !memcmp(b, b + 1, n - 1);
}

/* Write what is buffered; all-zero blocks stay holes. */
static int sink_flush(struct sinkctx *k, qsnap_error *err)
{
	for (size_t o = 0; o < k->fill; o += BLOCK) {
		size_t n = k->fill - o < BLOCK ? k->fill - o : BLOCK;

		if (zero_block(k->buf + o, n))
			continue;
		for (size_t w = 0; w < n;) {
			ssize_t r = pwrite(k->fd, k->buf + o + w, n - w, (off_t)(k->pos + o + w));

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return qerr(err, errno, "cannot write the download: %s", strerror(errno));
			w += (size_t)r;
		}
	}
	k->pos += k->fill;
	k->fill = 0;
	return 0;
}

static int sink(const void *data, size_t len, void *ud, qsnap_error *err)
{
	struct sinkctx *k = ud;
	const char *d = data;

	__atomic_fetch_add(&k->p->got, len, __ATOMIC_RELAXED);
	while (len) {
		size_t n = SINK_BUF - k->fill < len ? SINK_BUF - k->fill : len;

		memcpy(k->buf + k->fill, d, n);
		k->fill += n;
		d += n;
		len -= n;
		if (k->fill == SINK_BUF && sink_flush(k, err) < 0)
			return -err->code;
	}
	return 0;
}

/* A chunk the VM has in an earlier pulled snapshot's file, copied and
 * checked against its digest; -1 when that copy cannot be used. */
static int copy_local(struct pull *p, struct job *j, struct sinkctx *k)
{
	_cleanup_close_ int fd = openat(p->vmdirfd, j->local, O_RDONLY | O_CLOEXEC);
	char got[DIGEST_LEN + 1];
	struct sha256 h;
	uint64_t pos = 0;
	qsnap_error e;

	if (fd < 0)
		return -1;
	sha256_init(&h);
	while (pos < j->item.size) {
		size_t want = j->item.size - pos < SINK_BUF - k->fill ? (size_t)(j->item.size - pos)
								   : SINK_BUF - k->fill;
		ssize_t n = pread(fd, k->buf + k->fill, want, (off_t)(j->local_off + pos));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sha256_free(&h);
			return -1;
		}
		sha256_update(&h, k->buf + k->fill, (size_t)n);
		k->fill += (size_t)n;
		pos += (uint64_t)n;
		if (k->fill == SINK_BUF && sink_flush(k, &e) < 0) {
			sha256_free(&h);
			return -1;
		}
	}
	sha256_final(&h, got);
	if (strcmp(got, j->item.digest) || sink_flush(k, &e) < 0)
		return -1;
	return 0;
}

static int download_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct pull *p = ud;
	struct job *j = &p->jobs[i];
	struct sinkctx k = {.p = p, .fd = p->dsts[j->dst].fd, .pos = j->off,
			    .buf = xmalloc(SINK_BUF)};
	int ret;

	if (j->local && copy_local(p, j, &k) == 0) {
		free(k.buf);
		return 0;
	}
	/* Nothing of a failed local copy may stay where zero blocks are not
	 * written. */
	if (j->local && fallocate(k.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)j->off,
				  (off_t)j->item.size) < 0) {
		free(k.buf);
		return qerr(err, errno, "cannot clear %s/%s: %s", p->stage, p->dsts[j->dst].rel,
			    strerror(errno));
	}
	k.pos = j->off;
	k.fill = 0;
	ret = reg_blob_get(r, c, j->item.digest, j->item.size, sink, &k, err);
	if (ret >= 0)
		ret = sink_flush(&k, err);
	/* Downloaded after all: the local copy did not match. */
	free(TAKE_PTR(j->local));
	free(k.buf);
	if (ret < 0)
		return qerr_prefix(err, "%s of snapshot '%s'", j->title, p->snap.name);
	return 0;
}

static void report(struct pull *p, const char *phase, bool finished)
{
	struct progress pr = {.phase = phase, .fn = p->opts->progress,
			      .userdata = p->opts->userdata, .total = p->total, .t0 = p->t0};

	progress_report(&pr, __atomic_load_n(&p->got, __ATOMIC_RELAXED), finished);
}

static void tick(void *ud)
{
	report(ud, "download", false);
}

int pull_download(struct pull *p, qsnap_error *err)
{
	int r;

	for (size_t i = 0; i < p->n_dsts; i++) {
		p->dsts[i].fd = openat(p->stagefd, p->dsts[i].rel,
				       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (p->dsts[i].fd < 0)
			return qerr(err, errno, "cannot create %s/%s: %s", p->stage, p->dsts[i].rel,
				    strerror(errno));
	}
	p->t0 = now_ms();
	r = reg_parallel(p->reg, p->n_jobs, THREADS, download_job, p, tick, err);
	if (r < 0)
		return r;
	report(p, "download", true);
	for (size_t i = 0; i < p->n_dsts; i++) {
		if (ftruncate(p->dsts[i].fd, (off_t)p->dsts[i].size) < 0 || fsync(p->dsts[i].fd) < 0)
			return qerr(err, errno, "cannot write %s/%s: %s", p->stage, p->dsts[i].rel,
				    strerror(errno));
		closep(&p->dsts[i].fd);
		p->dsts[i].fd = -1;
	}
	for (size_t i = 0; i < p->n_jobs; i++) {
		if (p->jobs[i].local) {
			p->st.reused++;
			p->st.reused_bytes += p->jobs[i].item.size;
		} else {
			p->st.downloaded++;
			p->st.downloaded_bytes += p->jobs[i].item.size;
		}
	}
	return 0;
}
