/* SPDX-License-Identifier: MIT */
/* A pump between QEMU and a zstd-compressed file: QEMU writes its migration
 * stream (or a memory dump) into a pipe and a thread of ours compresses it
 * into the file with zstd's worker threads; or the thread decompresses the
 * file into a pipe that QEMU reads. QEMU itself stays single-threaded on
 * its side of the pipe.
 *
 * Every wait of the thread on the pipe also watches a wake-up eventfd, so
 * that the caller can make it drain (read and drop what QEMU still writes
 * until QEMU lets go: a cancelled migration must not block QEMU on a full
 * pipe) or stop at once (QEMU neither reads nor writes nor closes). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <zstd.h>

#include "base/base.h"

enum { RUN, DRAIN, STOP };

struct pump {
	pthread_t thread;
	enum pump_kind kind;
	int pipe_fd;	/* our end of the pipe (non-blocking) */
	int wake_fd;	/* raised after mode changed */
	int done_fd;	/* raised by the thread when it ends */
	atomic_int mode;
	atomic_bool let_go; /* the other end closed the pipe */
	int file_fd;	/* the compressed file */
	int level;
	atomic_uint_fast64_t raw; /* uncompressed bytes through the pump */
	int error;		  /* errno, read after join */
	struct hasher hash;	  /* of the bytes written to the file */
	char what[256];		  /* for messages: the file */
};

/* Wait until the pipe is ready (0), or the caller wants the thread to stop
 * (ECANCELED) or drain (EINTR: look at the mode). The wake-up is cleared
 * before the mode is read: a change made after that raises it again. */
static int wait_pipe(struct pump *p, short events)
{
	int r = wait_fd(p->pipe_fd, events, p->wake_fd, 0);

	if (r == 0)
		return 0;
	if (r != -ECANCELED)
		return -r;
	cancel_clear(p->wake_fd);
	return atomic_load(&p->mode) == STOP ? ECANCELED : EINTR;
}

static int write_all(struct pump *p, int fd, const void *buf, size_t len)
{
	const char *b = buf;

	/* Towards QEMU, a drain or a stop ends the stream. */
	if (fd == p->pipe_fd && atomic_load(&p->mode) != RUN)
		return ECANCELED;
	while (len > 0) {
		ssize_t n = write(fd, b, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && fd == p->pipe_fd) {
				int e = wait_pipe(p, POLLOUT);

				/* Draining towards QEMU: the rest is not wanted. */
				if (e == EINTR && atomic_load(&p->mode) == DRAIN)
					return ECANCELED;
				if (e && e != EINTR)
					return e;
				continue;
			}
			return errno;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static int run_compress(struct pump *p)
{
	size_t in_cap = ZSTD_CStreamInSize() * 4, out_cap = ZSTD_CStreamOutSize() * 4;
	_cleanup_free_ char *in = xmalloc(in_cap), *out = xmalloc(out_cap);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	unsigned ncpu = host_cores(UINT_MAX);
	int e = 0;

	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, p->level);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	/* zstd's own workers compress while this thread keeps reading. */
	ZSTD_CCtx_setParameter(cc, ZSTD_c_nbWorkers, ncpu > 1 ? (int)ncpu : 0);
	/* Small jobs: a pump told to stop waits for the jobs under way. At
	 * level 19 zstd's jobs are at least its 8 MiB window (overlapLog 9):
	 * a stop waited 22 s under TCG load. A shorter overlap lets a job be
	 * 1 MiB. */
	ZSTD_CCtx_setParameter(cc, ZSTD_c_overlapLog, 4);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_jobSize, 1 << 20);
	for (;;) {
		if (atomic_load(&p->mode) == STOP) {
			e = ECANCELED;
			break;
		}
		ssize_t n = read(p->pipe_fd, in, in_cap);
		ZSTD_EndDirective mode = n == 0 ? ZSTD_e_end : ZSTD_e_continue;
		ZSTD_inBuffer ib = {in, n > 0 ? (size_t)n : 0, 0};
		size_t left;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				e = wait_pipe(p, POLLIN);
				if (e == EINTR)
					e = 0;
				if (e)
					break;
				continue;
			}
			e = errno;
			break;
		}
		if (n == 0)
			atomic_store(&p->let_go, true);
		/* Draining: QEMU's bytes are dropped until it lets go. */
		if (atomic_load(&p->mode) == DRAIN) {
			if (n == 0)
				break;
			continue;
		}
		atomic_fetch_add(&p->raw, (uint64_t)ib.size);
		do {
			ZSTD_outBuffer ob = {out, out_cap, 0};

			left = ZSTD_compressStream2(cc, &ob, &ib, mode);
			if (ZSTD_isError(left)) {
				e = EIO;
				break;
			}
			hasher_update(&p->hash, out, ob.pos);
			if ((e = write_all(p, p->file_fd, out, ob.pos)))
				break;
		} while (mode == ZSTD_e_end ? left != 0 : ib.pos < ib.size);
		if (e || n == 0)
			break;
	}
	ZSTD_freeCCtx(cc);
	return e;
}

static int run_decompress(struct pump *p)
{
	size_t in_cap = ZSTD_DStreamInSize() * 4, out_cap = ZSTD_DStreamOutSize() * 4;
	_cleanup_free_ char *in = xmalloc(in_cap), *out = xmalloc(out_cap);
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	size_t last = 0;
	bool sink = false; /* QEMU stopped reading: only check the rest */
	int e = 0;

	for (;;) {
		ssize_t n = read(p->file_fd, in, in_cap);
		ZSTD_inBuffer ib = {in, n > 0 ? (size_t)n : 0, 0};

		if (n < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			break;
		}
		if (n == 0) {
			/* A frame cut short is a damaged file. */
			if (last != 0)
				e = EBADMSG;
			break;
		}
		while (ib.pos < ib.size) {
			ZSTD_outBuffer ob = {out, out_cap, 0};

			last = ZSTD_decompressStream(dc, &ob, &ib);
			if (ZSTD_isError(last)) {
				e = EBADMSG;
				break;
			}
			/* QEMU stops reading when it has what it needs, or when
			 * what it read made no sense: decoding the rest tells
			 * whether the file itself is damaged (zstd checksums). */
			if (!sink && (e = write_all(p, p->pipe_fd, out, ob.pos)) == EPIPE) {
				atomic_store(&p->let_go, true);
				sink = true;
				e = 0;
			}
			if (e)
				break;
			atomic_fetch_add(&p->raw, (uint64_t)ob.pos);
		}
		if (e)
			break;
	}
	ZSTD_freeDCtx(dc);
	return e;
}

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	sigset_t pipe_only;

	/* A reader that went away is EPIPE here, not a SIGPIPE for the process. */
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_only, NULL);

	switch (p->kind) {
	case PUMP_COMPRESS:
		p->error = run_compress(p);
		break;
	case PUMP_DECOMPRESS:
		p->error = run_decompress(p);
		break;
	}
	/* The other end learns that we are done. */
	close(p->pipe_fd);
	p->pipe_fd = -1;
	cancel_raise(p->done_fd);
	return NULL;
}

static void pump_close_fds(struct pump *p)
{
	if (p->wake_fd >= 0)
		close(p->wake_fd);
	if (p->done_fd >= 0)
		close(p->done_fd);
}

int pump_start(enum pump_kind kind, int file_fd, int level, const char *what, struct pump **ret,
	       int *ret_qemu_fd, qsnap_error *err)
{
	struct pump *p;
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	/* Bigger pipes mean fewer context switches between QEMU and us. */
	fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
	p = xcalloc(1, sizeof(*p));
	bool to_file = kind == PUMP_COMPRESS;

	p->wake_fd = cancel_new();
	p->done_fd = cancel_new();
	if (p->wake_fd < 0 || p->done_fd < 0) {
		int e = errno;

		pump_close_fds(p);
		close(fds[0]);
		close(fds[1]);
		free(p);
		return qerr(err, e, "cannot create an eventfd: %s", strerror(e));
	}

	p->kind = kind;
	hasher_init(&p->hash);
	p->file_fd = file_fd;
	p->level = level > 0 ? level : 3;
	snprintf(p->what, sizeof(p->what), "%s", what);
	/* To the file: QEMU writes [1], we read [0]. From the file: the reverse. */
	p->pipe_fd = to_file ? fds[0] : fds[1];
	*ret_qemu_fd = to_file ? fds[1] : fds[0];
	/* Only our end: the pipe's two ends are two open file descriptions. */
	fcntl(p->pipe_fd, F_SETFL, O_NONBLOCK);
	if (pthread_create(&p->thread, NULL, pump_main, p) != 0) {
		close(fds[0]);
		close(fds[1]);
		pump_close_fds(p);
		free(p);
		return qerr(err, EAGAIN, "cannot start a thread");
	}
	*ret = p;
	return 0;
}

uint64_t pump_bytes(struct pump *p)
{
	return atomic_load(&p->raw);
}

static void set_mode(struct pump *p, int mode)
{
	atomic_store(&p->mode, mode);
	cancel_raise(p->wake_fd);
}

/* Until the thread is done (0), deadline passed while the other end still
 * held the pipe (-ETIMEDOUT), or cancel_fd was raised (-ECANCELED). Once
 * the other end let go, what is left is the thread's own work on bytes
 * already read: that is waited for whatever the deadline. */
static int wait_done(struct pump *p, int64_t deadline, int cancel_fd)
{
	for (;;) {
		int w = wait_fd(p->done_fd, POLLIN, cancel_fd,
				atomic_load(&p->let_go) ? 0 : deadline);

		if (w == -ETIMEDOUT && atomic_load(&p->let_go))
			continue;
		return w;
	}
}

static const char *verb(const struct pump *p)
{
	return p->kind == PUMP_COMPRESS ? "compressing into" : "decompressing";
}

static int end(struct pump *p, int w, char **ret_checksum, qsnap_error *err)
{
	int e;

	if (w < 0)
		set_mode(p, STOP);
	pthread_join(p->thread, NULL);
	e = w < 0 ? -w : p->error;
	if (!e && ret_checksum)
		*ret_checksum = hasher_final(&p->hash);
	hasher_free(&p->hash);
	pump_close_fds(p);
	if (w == -ETIMEDOUT)
		qerr(err, ETIMEDOUT, "%s %s: the other end of the pipe neither finished nor let go in time",
		     verb(p), p->what);
	else if (w == -ECANCELED)
		qerr(err, ECANCELED, "cancelled");
	else if (e)
		qerr(err, e, "%s %s: %s", verb(p), p->what,
		     e == EBADMSG ? "the file is damaged (zstd)" : strerror(e));
	free(p);
	return e ? -e : 0;
}

int pump_finish(struct pump *p, int64_t deadline, int cancel_fd, qsnap_error *err)
{
	return pump_finish_checksum(p, deadline, cancel_fd, NULL, err);
}

int pump_finish_checksum(struct pump *p, int64_t deadline, int cancel_fd, char **ret_checksum,
			 qsnap_error *err)
{
	if (!p)
		return 0;
	return end(p, wait_done(p, deadline, cancel_fd), ret_checksum, err);
}

void pump_drain(struct pump *p)
{
	if (p)
		set_mode(p, DRAIN);
}

int pump_discard(struct pump *p, int64_t deadline, qsnap_error *err)
{
	int r;

	if (!p)
		return 0;
	set_mode(p, DRAIN);
	r = end(p, wait_done(p, deadline, -1), NULL, err);
	/* What the drain itself ended is no failure. */
	return r == -ECANCELED ? 0 : r;
}
