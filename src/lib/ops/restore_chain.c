/* SPDX-License-Identifier: MIT */
/* The restore of a differential snapshot with older deltas below it
 * (docs/design.md, "Differential snapshots"): QEMU loads one stream, which
 * a thread of ours writes into a pipe: the snapshot's own stream up to the
 * end of its first RAM section, then one RAM section per older delta with
 * that delta's page records, oldest first, then the rest of its own. QEMU
 * writes each page the stream holds, in order, so every page ends with
 * the newest content of the chain; the pages no delta holds keep the RAM
 * file's. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ops/restore.h"

#define CHUNK (1 << 20)
/* The first RAM section (the list of RAM blocks) is near the start. */
#define HEAD_MAX (64 << 20)

struct chain_feed {
	pthread_t thread;
	int dirfd;
	int own;  /* the snapshot's own stream (pread) */
	int out;  /* the pipe to QEMU, non-blocking */
	int stop_fd, done_fd;
	const struct snapshot *s;
	int code;
	char msg[512];
};

static bool keep_all(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	return true;
}

/* Copy own[from, to) into the pipe. */
static int copy_own(struct chain_feed *c, uint64_t from, uint64_t to, uint8_t *buf,
		    qsnap_error *err)
{
	while (from < to) {
		size_t want = to - from < CHUNK ? (size_t)(to - from) : CHUNK;
		ssize_t n = pread(c->own, buf, want, (off_t)from);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return qerr(err, n < 0 ? errno : EIO, "cannot read the machine state: %s",
				    n < 0 ? strerror(errno) : "it is shorter than it was");
		if (write_wait(c->out, buf, (size_t)n, c->stop_fd, err) < 0)
			return -1;
		from += (uint64_t)n;
	}
	return 0;
}

/* Where the snapshot's first RAM section ends, its id and footers. */
static int find_ram_start(struct chain_feed *c, uint8_t *buf, uint64_t *end, uint32_t *id,
			  bool *footers, qsnap_error *err)
{
	struct stream_filter *f = stream_filter_new("ram0", keep_all, NULL);
	uint8_t *out = NULL;
	size_t out_len = 0, out_cap = 0;
	uint64_t at = 0;
	int r = 0;

	*end = 0;
	while (*end == 0 && at < HEAD_MAX) {
		ssize_t n = pread(c->own, buf, CHUNK, (off_t)at);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		at += (uint64_t)n;
		out_len = 0;
		r = stream_filter_feed(f, buf, (size_t)n, &out, &out_len, &out_cap, err);
		if (r < 0)
			break;
		*end = stream_filter_ram_start_end(f, id, footers);
	}
	stream_filter_free(f);
	free(out);
	if (r == 0 && *end == 0)
		r = qerr(err, EPROTO, "the machine state has no RAM section to add the older deltas to");
	return r;
}

static int feed(struct chain_feed *c, qsnap_error *err)
{
	_cleanup_free_ uint8_t *buf = xmalloc(CHUNK);
	uint8_t head[5], tail[13];
	uint64_t end;
	uint32_t id;
	bool footers;
	struct stat st;
	int r = find_ram_start(c, buf, &end, &id, &footers, err);

	if (r < 0 || (r = copy_own(c, 0, end, buf, err)) < 0)
		return r;
	for (size_t k = 1; k <= c->s->n_ram_chain; k++) {
		_cleanup_free_ char *path = snapshot_delta(c->s, k);

		r = write_wait(c->out, head, stream_part_head(head, id), c->stop_fd, err);
		if (r == 0)
			r = delta_read(c->dirfd, path, &c->s->ram_chain[k - 1], keep_all, NULL,
				       c->out, c->stop_fd, err);
		if (r == 0)
			r = write_wait(c->out, tail, stream_part_tail(tail, id, footers),
				       c->stop_fd, err);
		if (r < 0)
			return r;
	}
	if (fstat(c->own, &st) < 0)
		return qerr(err, errno, "cannot stat the machine state: %s", strerror(errno));
	return copy_own(c, end, (uint64_t)st.st_size, buf, err);
}

static void *feed_thread(void *data)
{
	struct chain_feed *c = data;
	qsnap_error e = {0};
	sigset_t pipe_only;

	/* QEMU gone is EPIPE here, not a SIGPIPE for the process. */
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_only, NULL);
	c->code = feed(c, &e) < 0 ? e.code : 0;
	snprintf(c->msg, sizeof(c->msg), "%s", c->code ? e.msg : "");
	/* QEMU reads the end of the stream. */
	closep(&c->out);
	cancel_raise(c->done_fd);
	return NULL;
}

static void feed_free(struct chain_feed *c)
{
	closep(&c->out);
	closep(&c->stop_fd);
	closep(&c->done_fd);
	free(c);
}

int restore_chain_start(struct restore *rs, int *ret_qemu_fd, qsnap_error *err)
{
	struct chain_feed *c = xcalloc(1, sizeof(*c));
	int p[2], r;

	c->dirfd = rs->vm->dirfd;
	c->own = rs->fd;
	c->s = rs->s;
	c->out = -1;
	c->stop_fd = cancel_new();
	c->done_fd = cancel_new();
	if (c->stop_fd < 0 || c->done_fd < 0 || pipe2(p, O_CLOEXEC) < 0) {
		r = qerr(err, errno, "cannot make a pipe: %s", strerror(errno));
		feed_free(c);
		return r;
	}
	fcntl(p[1], F_SETPIPE_SZ, CHUNK);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	c->out = p[1];
	r = pthread_create(&c->thread, NULL, feed_thread, c);
	if (r) {
		close(p[0]);
		feed_free(c);
		return qerr(err, r, "cannot start a thread: %s", strerror(r));
	}
	rs->feed = c;
	*ret_qemu_fd = p[0];
	return 0;
}

int restore_chain_finish(struct restore *rs, bool cancel, int64_t deadline, qsnap_error *err)
{
	struct chain_feed *c = TAKE_PTR(rs->feed);
	int w, r = 0;

	if (!c)
		return 0;
	w = cancel ? -ECANCELED : wait_fd(c->done_fd, POLLIN, vm_cancel_fd(rs->vm), deadline);
	if (w < 0)
		cancel_raise(c->stop_fd);
	pthread_join(c->thread, NULL);
	if (!cancel && w == -ETIMEDOUT)
		r = qerr(err, ETIMEDOUT, "QEMU did not read the rest of the machine state in time");
	else if (!cancel && w == -ECANCELED)
		r = qerr(err, ECANCELED, "cancelled");
	/* QEMU stops reading at the stream's end and lets go of the pipe: the
	 * device description QEMU wrote after it may then meet a broken pipe. */
	else if (!cancel && c->code && c->code != EPIPE)
		r = qerr(err, c->code, "%s", c->msg);
	feed_free(c);
	return r;
}
