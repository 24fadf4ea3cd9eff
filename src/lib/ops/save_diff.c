/* SPDX-License-Identifier: MIT */
/* A differential save (docs/design.md, "Differential snapshots"): the VM's
 * RAM is a copy-on-write mapping of a snapshot's RAM file (a lazy restore).
 * QEMU migrates as for a stream snapshot, into a pipe; a thread of ours
 * reads it, and leaves out every page record of the RAM block whose page
 * has not changed since the parent: the snapshot the VM was restored from
 * or last saved as differentially (vm->st.ram_parent). A page the
 * parent's chain of deltas writes is left out when its content hashes the
 * same as the chain's (ram_chain.c); any other page when QEMU's mapping
 * still has it from the file, i.e. the guest never wrote it. That is asked
 * of /proc/PID/pagemap after the record was read: a page still from the
 * file then held the file's content when QEMU read it, and one written
 * after QEMU read it is dirty and sent again. A page kept once is kept
 * every time QEMU sends it again, so the last record of every page that
 * changed is in the stream. The snapshot hard-links the RAM file and the
 * chain's deltas, so deleting any other snapshot keeps what it needs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/pagemap.h"
#include "ops/save.h"
#include "qemu/stream.h"

#define CHUNK (1 << 20)

/* What the filter asks about each page of ram0. */
struct diff_keep {
	struct pagemap *pm;
	const struct ram_index *ix; /* NULL: no chain below */
	uint64_t pages, *kept;	    /* a bit per page kept once */
};

struct diff_pump {
	pthread_t thread;
	int in, out;
	struct diff_keep k;
	struct stream_filter *f;
	/* Raised to stop the thread (it watches it with the pipe: no wait of
	 * it sleeps in steps), and by the thread when it ends. */
	int stop_fd, done_fd;
	bool write_failed; /* our side's fault (a full disk), not QEMU's */
	int code;
	char msg[512];
};

static bool keep_changed(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct diff_keep *k = data;
	uint64_t pg = offset / 4096;
	bool keep, known = false, same = false;

	if (pg < k->pages && (k->kept[pg / 64] >> (pg % 64) & 1))
		return true;
	if (k->ix)
		same = ram_index_same(k->ix, offset, page, len, &known);
	keep = known ? !same : pagemap_written(k->pm, offset);
	if (keep && pg < k->pages)
		k->kept[pg / 64] |= 1ULL << (pg % 64);
	return keep;
}

static void *diff_thread(void *data)
{
	struct diff_pump *d = data;
	uint8_t *buf = xmalloc(CHUNK), *out = NULL;
	size_t out_len = 0, out_cap = 0;
	qsnap_error e = {0};
	int r = 0;

	for (;;) {
		ssize_t n;
		int w = wait_fd(d->in, POLLIN, d->stop_fd, 0);

		if (w < 0) {
			r = qerr(&e, ECANCELED, "the differential save was cancelled");
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
		/* The pages' state now, after their records arrived. */
		pagemap_forget(d->k.pm);
		out_len = 0;
		r = stream_filter_feed(d->f, buf, (size_t)n, &out, &out_len, &out_cap, &e);
		if (r == 0 && write_wait(d->out, out, out_len, -1, &e) < 0) {
			r = qerr(&e, e.code, "cannot write the machine state: %s", strerror(e.code));
			d->write_failed = true;
		}
		if (r < 0)
			break;
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

static void diff_free_fds(struct diff_pump *d)
{
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	if (d->done_fd >= 0)
		close(d->done_fd);
}

int save_diff_start(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_close_ int ram = openat(vm->dirfd, vm->st.ram_file, O_RDONLY | O_CLOEXEC);
	struct diff_pump *d;
	int p[2], r;

	if (ram < 0)
		return qerr(err, errno, "cannot open the RAM file %s/%s: %s", vm->dir,
			    vm->st.ram_file, strerror(errno));
	d = xcalloc(1, sizeof(*d));
	d->in = d->out = -1;
	d->stop_fd = cancel_new();
	d->done_fd = cancel_new();
	if (d->stop_fd < 0 || d->done_fd < 0) {
		r = qerr(err, errno, "cannot create an eventfd: %s", strerror(errno));
		diff_free_fds(d);
		free(d);
		return r;
	}
	r = pagemap_open(vm->st.qemu_pid, ram, &d->k.pm, err);
	if (r < 0) {
		diff_free_fds(d);
		free(d);
		return qerr_prefix(err, "differential save");
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = qerr(err, errno, "cannot make a pipe: %s", strerror(errno));
		pagemap_close(d->k.pm);
		diff_free_fds(d);
		free(d);
		return r;
	}
	/* Bigger pipes mean fewer context switches between QEMU and us. */
	fcntl(p[0], F_SETPIPE_SZ, CHUNK);
	d->in = p[0];
	d->out = sv->fd;
	d->k.ix = sv->diff_index;
	d->k.pages = vm->def.memory / 4096;
	d->k.kept = xcalloc(d->k.pages / 64 + 1, sizeof(*d->k.kept));
	d->f = stream_filter_new("ram0", keep_changed, &d->k);
	r = pthread_create(&d->thread, NULL, diff_thread, d);
	if (r) {
		close(p[0]);
		close(p[1]);
		stream_filter_free(d->f);
		pagemap_close(d->k.pm);
		free(d->k.kept);
		diff_free_fds(d);
		free(d);
		return qerr(err, r, "cannot start a thread: %s", strerror(r));
	}
	sv->diff_pump = d;
	sv->qemu_fd = p[1];
	return 0;
}

/* Until the thread ended (QEMU closed its end of the pipe and the rest
 * was filtered), deadline passed (-ETIMEDOUT) or cancel_fd was raised
 * (-ECANCELED); then the thread is stopped (its read end closed: QEMU sees
 * a broken pipe, never a full one) and joined. cancel: stop it at once.
 * Frees d. */
static int diff_join(struct diff_pump *d, bool cancel, int64_t deadline, int cancel_fd,
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
	stream_filter_free(d->f);
	pagemap_close(d->k.pm);
	free(d->k.kept);
	diff_free_fds(d);
	free(d);
	return r;
}

int save_diff_finish(struct save *sv, int64_t deadline, int cancel_fd, qsnap_error *err)
{
	struct stream_stats st;
	int r = diff_join(TAKE_PTR(sv->diff_pump), false, deadline, cancel_fd, &st, err);

	if (r == -ETIMEDOUT || r == -ECANCELED)
		return r;
	if (r < 0)
		return qerr_prefix(err, "differential save");
	sv->diff_dropped = st.dropped;
	sv->diff_kept = st.kept;
	return 0;
}

void save_diff_cancel(struct save *sv, qsnap_error *err)
{
	struct diff_pump *d = TAKE_PTR(sv->diff_pump);
	qsnap_error e2;

	if (!d)
		return;
	/* QEMU saw only a broken pipe; our side knows why (a full disk). */
	if (d->write_failed && err)
		qerr(err, d->code, "%s", d->msg);
	diff_join(d, true, 0, -1, NULL, &e2);
}

/* The snapshot whose RAM file the VM maps: the base the new one records. */
static const struct snapshot *mapped_snapshot(qsnap_vm *vm)
{
	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];
		_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

		if (s->mode == QSNAP_RAM_SHARED && !strcmp(ram, vm->st.ram_file))
			return s;
	}
	return NULL;
}

int save_diff_check(qsnap_vm *vm, qsnap_error *err)
{
	if (!vm->st.ram_file || vm->st.ram_shared)
		return qerr(
		    err, EINVAL,
		    "a differential save needs the VM's RAM mapped copy-on-write from a snapshot's "
		    "RAM file: restore a shared-RAM snapshot with --lazy first (the VM in %s %s)",
		    vm->dir, vm->st.ram_file ? "has its own shared RAM file" : "has anonymous RAM");
	if (!mapped_snapshot(vm))
		return qerr(err, ENOENT,
			    "the RAM file the VM maps (%s/%s) belongs to no snapshot any more: "
			    "save without --diff",
			    vm->dir, vm->st.ram_file);
	return 0;
}

/* Which chain the new delta builds on: the parent's (ram_chain_of_child)
 * when the VM's pages are known since it and the chain stays within
 * RAM_CHAIN_MAX; else none, and the delta holds every page written since
 * the RAM file. A chain that cannot be read is not built on either.
 * Returns the chain's files (NULL: none). */
static char **diff_choose_chain(struct save *sv)
{
	qsnap_vm *vm = sv->vm;
	const struct snapshot *p = ram_chain_parent(vm);
	char **paths = NULL;
	qsnap_error e;

	if (!p) {
		sv->flat_why = "the snapshot the VM's RAM was last restored from or saved as is gone";
		return NULL;
	}
	sv->n_ram_chain = ram_chain_of_child(p, &sv->ram_chain, &paths);
	if (sv->n_ram_chain + 1 > RAM_CHAIN_MAX)
		sv->flat_why = "its chain of deltas is as long as a chain may be";
	else if (sv->n_ram_chain &&
		 ram_index_build(vm, sv->ram_chain, paths, sv->n_ram_chain, &sv->diff_index, &e) < 0)
		sv->flat_why = "the chain it would build on cannot be read";
	if (!sv->flat_why)
		return paths;
	ram_chain_free(TAKE_PTR(sv->ram_chain), sv->n_ram_chain);
	sv->n_ram_chain = 0;
	strv_free(paths);
	return NULL;
}

int save_diff_link(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	const struct snapshot *base = mapped_snapshot(vm);
	_cleanup_free_ char *to = layout_in(vm->st.pending, SNAP_RAM);
	_cleanup_strv_ char **paths = NULL;

	if (!base)
		return qerr(err, ENOENT,
			    "the RAM file the VM maps belongs to no snapshot any more");
	if (linkat(vm->dirfd, vm->st.ram_file, vm->dirfd, to, 0) < 0)
		return qerr(err, errno, "cannot link %s to %s: %s", vm->st.ram_file, to,
			    strerror(errno));
	sv->ram_base = xstrdup(base->ram_base ? base->ram_base : base->name);
	sv->ram_checksum = xstrdup_or_null(base->ram_checksum);
	paths = diff_choose_chain(sv);
	/* The chain's files, beside the RAM file. */
	for (size_t k = 1; k <= sv->n_ram_chain; k++) {
		_cleanup_free_ char *dst = xasprintf("%s/" SNAP_DELTA ".%zu", vm->st.pending, k);

		if (linkat(vm->dirfd, paths[k - 1], vm->dirfd, dst, 0) < 0)
			return qerr(err, errno, "cannot link %s to %s: %s", paths[k - 1], dst,
				    strerror(errno));
	}
	return 0;
}
