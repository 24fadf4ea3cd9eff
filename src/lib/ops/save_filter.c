/* SPDX-License-Identifier: MIT */
/* QEMU's sequential migration stream through a thread of ours on its way
 * to the machine state file: QEMU writes into a pipe, the thread reads it
 * in 1 MiB pieces, feeds them to a stream filter (qemu/stream.c) and
 * writes what passes. Used by the differential save (save_diff.c), which
 * leaves out unchanged pages, and by the RAM-file save (save_ramfile.c),
 * which takes guest RAM out of the stream into a file of its own. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ops/save.h"
#include "qemu/stream.h"

#define CHUNK (1 << 20)

struct filter_pump {
	pthread_t thread;
	int in, out;
	struct stream_filter *f;
	struct filter_hooks h;
	/* Raised to stop the thread (it watches it with the pipe: no wait of
	 * it sleeps in steps), and by the thread when it ends. */
	int stop_fd, done_fd;
	/* It failed for a reason of its own (a full disk, a stream it cannot
	 * take apart), which QEMU sees only as a broken pipe. */
	bool ours;
	uint64_t bytes;	   /* read from QEMU so far (atomic) */
	int code;
	char msg[512];
};

/* What the filter's tail adds is written as it comes (stream_filter_drain). */
static int filter_drain(void *data, const uint8_t *p, size_t len, qsnap_error *err)
{
	struct filter_pump *d = data;

	if (write_wait(d->out, p, len, -1, err) < 0)
		return qerr(err, err->code, "cannot write the machine state: %s",
			    strerror(err->code));
	return 0;
}

static void *filter_thread(void *data)
{
	struct filter_pump *d = data;
	uint8_t *buf = xmalloc(CHUNK), *out = NULL;
	size_t out_len = 0, out_cap = 0;
	qsnap_error e = {0};
	int r = 0;

	for (;;) {
		ssize_t n;
		int w = wait_fd(d->in, POLLIN, d->stop_fd, 0);

		if (w < 0) {
			r = qerr(&e, ECANCELED, "the save was cancelled");
			break;
		}
		n = read(d->in, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = qerr(&e, errno, "cannot read QEMU's migration stream: %s",
				 strerror(errno));
			break;
		}
		if (n == 0) {
			r = stream_filter_end(d->f, &e);
			break;
		}
		__atomic_add_fetch(&d->bytes, (uint64_t)n, __ATOMIC_RELAXED);
		if (d->h.before)
			d->h.before(d->h.data, buf, (size_t)n);
		out_len = 0;
		r = stream_filter_feed(d->f, buf, (size_t)n, &out, &out_len, &out_cap, &e);
		if (r == 0 && d->h.after)
			r = d->h.after(d->h.data, &e);
		if (r == 0 && write_wait(d->out, out, out_len, -1, &e) < 0)
			r = qerr(&e, e.code, "cannot write the machine state: %s", strerror(e.code));
		if (r < 0) {
			d->ours = true;
			break;
		}
	}
	d->code = r < 0 ? e.code : 0;
	snprintf(d->msg, sizeof(d->msg), "%s", r < 0 ? e.msg : "");
	/* QEMU sees a broken pipe rather than waiting on a full one. */
	closep(&d->in);
	free(buf);
	free(out);
	cancel_raise(d->done_fd);
	return NULL;
}

static void filter_free(struct filter_pump *d)
{
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	if (d->done_fd >= 0)
		close(d->done_fd);
	stream_filter_free(d->f);
	if (d->h.free)
		d->h.free(d->h.data);
	free(d);
}

int save_filter_start(struct save *sv, struct stream_filter *f, const struct filter_hooks *h,
		      qsnap_error *err)
{
	struct filter_pump *d = xcalloc(1, sizeof(*d));
	int p[2], r;

	d->in = d->out = -1;
	d->f = f;
	stream_filter_drain(f, filter_drain, d);
	d->h = *h;
	d->stop_fd = cancel_new();
	d->done_fd = cancel_new();
	if (d->stop_fd < 0 || d->done_fd < 0) {
		r = qerr(err, errno, "cannot create an eventfd: %s", strerror(errno));
		filter_free(d);
		return r;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = qerr(err, errno, "cannot make a pipe: %s", strerror(errno));
		filter_free(d);
		return r;
	}
	/* Bigger pipes mean fewer context switches between QEMU and us. */
	fcntl(p[0], F_SETPIPE_SZ, CHUNK);
	d->in = p[0];
	d->out = sv->fd;
	r = pthread_create(&d->thread, NULL, filter_thread, d);
	if (r) {
		close(p[0]);
		close(p[1]);
		filter_free(d);
		return qerr(err, r, "cannot start a thread: %s", strerror(r));
	}
	sv->filter = d;
	sv->qemu_fd = p[1];
	return 0;
}

const uint64_t *save_filter_bytes(const struct save *sv)
{
	return sv->filter ? &sv->filter->bytes : NULL;
}

/* Until the thread ended (QEMU closed its end of the pipe and the rest
 * was filtered), deadline passed (-ETIMEDOUT) or cancel_fd was raised
 * (-ECANCELED); then the thread is stopped (its read end closed: QEMU sees
 * a broken pipe, never a full one) and joined. cancel: stop it at once.
 * Frees d. */
static int filter_join(struct filter_pump *d, bool cancel, int64_t deadline, int cancel_fd,
		       struct stream_stats *ret, qsnap_error *err)
{
	int w = cancel ? -ECANCELED : wait_fd(d->done_fd, POLLIN, cancel_fd, deadline);
	int r = 0;

	if (w < 0)
		cancel_raise(d->stop_fd);
	pthread_join(d->thread, NULL);
	if (w == -ETIMEDOUT)
		r = qerr(err, ETIMEDOUT, "filtering the machine state: QEMU neither finished the stream nor let go of it in time");
	else if (w == -ECANCELED && !cancel)
		r = qerr(err, ECANCELED, "cancelled");
	else if (d->code && !cancel)
		r = qerr(err, d->code, "%s", d->msg);
	if (ret)
		*ret = *stream_filter_stats(d->f);
	filter_free(d);
	return r;
}

int save_filter_finish(struct save *sv, qsnap_error *err)
{
	struct stream_stats st;
	int r = filter_join(TAKE_PTR(sv->filter), false, now_ms() + PUMP_END_MS,
			    vm_cancel_fd(sv->vm), &st, err);

	if (r == -ETIMEDOUT)
		sv->wedged = true;
	save_step(sv, "filter");
	if (r == -ETIMEDOUT || r == -ECANCELED)
		return r;
	if (r < 0)
		return qerr_prefix(err, sv->diff     ? "differential save"
					: sv->reread ? "rereading the pages the guest wrote"
						     : "saving RAM into its own file (qsnap config --save-path stream saves without it)");
	/* A differential save that rereads dropped all of QEMU's records:
	 * the pages left to the base are the ones not reread. */
	sv->pages_left_out =
	    sv->diff && sv->reread ? sv->vm->def.memory / 4096 - st.kept : st.dropped;
	sv->pages_kept = st.kept;
	if (sv->reread)
		save_phase(sv, "reread", sv->reread_start, sv->reread_end);
	return 0;
}

void save_filter_cancel(struct save *sv, qsnap_error *err)
{
	struct filter_pump *d = TAKE_PTR(sv->filter);
	qsnap_error e2;

	if (!d)
		return;
	/* QEMU saw only a broken pipe; our side knows why. */
	if (d->ours && err)
		qerr(err, d->code, "%s", d->msg);
	filter_join(d, true, 0, -1, NULL, &e2);
}
