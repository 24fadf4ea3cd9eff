/* SPDX-License-Identifier: MIT */
/* A save's files: the machine state written by QEMU's migration (hashed as
 * it is written, compressed through a pump of ours with --compress), the
 * shared RAM copied by qsnap while the guest is paused, and both made
 * durable once the guest runs again. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <string.h>
#include <sys/vfs.h>

#include "ops/save.h"

#define DEFAULT_SAVE_TIMEOUT 600

int save_open_vmstate(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	const qsnap_save_opts *opts = sv->opts;
	_cleanup_free_ char *path = layout_in(vm->st.pending,
					      opts->compress ? SNAP_VMSTATE_ZST : SNAP_VMSTATE);
	int r;

	r = migrate_setup(sv->q,
			  &(struct mig_setup){.ignore_shared = sv->shared,
					      .background = sv->live,
					      .mapped = sv->mapped,
					      .channels = sv->channels,
					      .direct_io = sv->direct_io,
					      .switchover = sv->precopy},
			  err);
	/* QEMU 7.2 write-protects guest RAM for a background snapshot and
	 * does not undo it when one is cancelled or fails: it then refuses
	 * the capability for good (measured: a cancelled live save, then
	 * "Background-snapshot is not compatible with guest memory
	 * configuration" on anonymous RAM; 10.0.2 does not). */
	if (r < 0 && sv->live && strstr(err->msg, "not compatible with guest memory configuration"))
		qerr_prefix(err, "this QEMU refuses another live save, as QEMU 7.2 does after a live save was cancelled or failed; save without --live, or restart the VM (qsnap stop, then qsnap start --from a snapshot) to save live again");
	else if (r < 0 && sv->live)
		qerr_prefix(err, "live save needs QEMU's background-snapshot (QEMU >= 6.0, userfaultfd write-protection in the kernel); save without --live");
	if (r < 0)
		return r;
	sv->fd = openat(vm->dirfd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (sv->fd < 0)
		return qerr(err, errno, "cannot create %s/%s: %s", vm->dir, path, strerror(errno));
	/* Compressed: QEMU writes into a pipe, our threads compress (and hash
	 * what they write). Plain: QEMU writes the file itself (measured:
	 * faster than any pump of ours, see docs/design.md) and a thread
	 * hashes it as it grows. */
	if (opts->compress)
		return pump_start(PUMP_COMPRESS, sv->fd, opts->compress, path, &sv->pump,
				  &sv->qemu_fd, err);
	/* A differential save: QEMU writes into a pipe, our thread filters
	 * the stream into the file and hashes it at the end. */
	if (sv->diff) {
		r = save_diff_link(sv, err);
		return r < 0 ? r : save_diff_start(sv, err);
	}
	/* A stream save that rereads the pages the guest wrote: the same
	 * thread adds them at the end. */
	if (sv->reread)
		return save_reread_start(sv, err);
	/* A RAM-file save: the same, and the thread writes RAM into its own
	 * file. */
	if (sv->ramfile)
		return save_ramfile_start(sv, err);
	/* A mapped-ram file is written at random offsets: it is hashed once it
	 * is complete. */
	if (!sv->mapped)
		sv->sum = checksum_follow_start(sv->fd);
	/* QEMU's own handle (file: wants it O_WRONLY); its offset is the
	 * save's progress. */
	sv->qemu_fd = openat(vm->dirfd, path, O_WRONLY | O_CLOEXEC);
	if (sv->qemu_fd < 0)
		return qerr(err, errno, "cannot open %s/%s: %s", vm->dir, path, strerror(errno));
	save_step(sv, "setup");
	return 0;
}

int save_migrate(struct save *sv, qsnap_error *err)
{
	const qsnap_save_opts *opts = sv->opts;
	double completed = 0;
	int r;

	r = migrate_pass(sv->q, MIGRATE_FD_NAME, sv->qemu_fd, !sv->pump && !sv->filter, &sv->tgt,
			 err);
	if (r < 0)
		return r;
	if (sv->precopy) {
		/* The pause is QEMU's own STOP (or ours, for a guest that does
		 * not converge) to the RESUME of our cont; a guest stopped by
		 * either is let run again by the undo too. */
		qmp_drop_events(sv->q, "STOP");
		qmp_drop_events(sv->q, "RESUME");
		sv->paused_here = true;
	}
	sv->fd_passed = true;
	/* QEMU holds the pipe's write end now; ours would keep it open. */
	if (sv->pump || sv->filter)
		closep(&sv->qemu_fd);
	r = migrate_run(sv->q, &sv->tgt,
			&(struct mig_wait){
				.timeout_s = opts->timeout > 0 ? opts->timeout : DEFAULT_SAVE_TIMEOUT,
				.phase = "save",
				.progress = opts->progress,
				.userdata = opts->userdata,
				.fd = sv->pump || sv->filter ? sv->fd : sv->qemu_fd,
				.pump = sv->pump,
				.counter = save_filter_bytes(sv),
				.live = sv->live,
				.switchover = sv->precopy ? save_switch_at_switchover : NULL,
				.switchover_data = sv,
				.completed_at = &completed,
			},
			err);
	if (r < 0 && (sv->pump || sv->filter)) {
		qsnap_error e2;
		int p;

		/* QEMU saw only a broken pipe; our side knows why (a full disk).
		 * A migration that never started leaves QEMU holding the pipe;
		 * one that does not let go in time is killed by the undo. */
		bool stalled = qmp_stalled(sv->q);

		vm_cancel_hold(sv->vm, UNDO_GRACE_MS);
		if (vm_qemu_alive(sv->vm) && !stalled)
			migrate_release(sv->q, &sv->tgt);
		/* A QEMU that does not answer does not let go either. */
		p = pump_discard(TAKE_PTR(sv->pump), stalled ? now_ms() : now_ms() + UNDO_GRACE_MS,
				 &e2);
		if (p == -ETIMEDOUT)
			sv->wedged = true;
		else if (p < 0 && r != -ECANCELED && r != -ETIMEDOUT)
			qerr(err, e2.code, "%s", e2.msg);
	}
	if (r < 0)
		return r;
	/* Precopy: the last pages and the device state after the cut. */
	save_phase(sv, sv->precopy ? "switchover" : "migration", sv->last, completed);
	if (completed)
		sv->last = completed;
	migrate_release(sv->q, &sv->tgt);
	sv->fd_passed = false;
	save_step(sv, "settle");
	/* The rest waits until the guest runs again (save_make_durable): the
	 * pump's or the hashing thread's last bytes, and closing our QEMU
	 * handle: QEMU ftruncate()s a file: target, and on ext4
	 * (auto_da_alloc) the last close of a file truncated that way starts
	 * writeback of all of it (measured: 1.3 s of a 2 GiB save's pause). */
	return 0;
}

/* Shared RAM: copy the guest's RAM file into the snapshot while the guest
 * is paused; the copy's size on disk is checked before anything starts. */
static bool on_tmpfs(int dirfd, const char *path)
{
	struct statfs sf;
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	return fd >= 0 && fstatfs(fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

char *save_stage_path(qsnap_vm *vm)
{
	_cleanup_free_ char *dir = NULL;
	qsnap_error e2;

	return vm_ram_dir(vm, &dir, &e2) < 0 ? NULL : xasprintf("%s/stage", dir);
}

/* While the guest is paused, the RAM copy should go as fast as memory does:
 * where the snapshot lives on a disk and the RAM directory (tmpfs) has room
 * for a second copy, stage it there (sv->stage) and persist it after the
 * guest resumes; otherwise copy straight into the snapshot. */
int save_copy_ram(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_free_ char *dst = layout_in(vm->st.pending, SNAP_RAM);
	_cleanup_free_ char *stage = save_stage_path(vm);
	uint64_t need = ramfile_allocated(vm->dirfd, vm->st.ram_file);
	qsnap_error e2;
	int r;

	if (stage && !on_tmpfs(vm->dirfd, VMDIR_SNAPSHOTS)) {
		_cleanup_free_ char *dir = xstrdup(stage);

		*strrchr(dir, '/') = '\0';
		if (on_tmpfs(AT_FDCWD, dir) &&
		    ramfile_check_space(AT_FDCWD, dir, need, "staging", &e2) == 0) {
			/* The persist copy hashes it, after the guest runs again. */
			r = ramfile_copy(vm->dirfd, vm->st.ram_file, AT_FDCWD, stage, vm->def.memory,
					 "save RAM", sv->opts->progress, sv->opts->userdata, NULL,
					 err);
			if (r == 0)
				sv->stage = TAKE_PTR(stage);
			return r;
		}
	}
	return ramfile_copy(vm->dirfd, vm->st.ram_file, vm->dirfd, dst, vm->def.memory, "save RAM",
			    sv->opts->progress, sv->opts->userdata, &sv->ram_checksum, err);
}

/* The machine state's fsync, in a thread while the checksum is finished:
 * both only read what QEMU wrote, and each took about as long as the other
 * (docs/design.md, "Where a QEMU 10 save's time goes"). */
struct durable {
	int fd;
	int *close_fd; /* closed first: QEMU's handle (see save_migrate) */
	int err;
	double start, end;
};

static void *durable_thread(void *data)
{
	struct durable *d = data;

	d->start = now_wall();
	if (d->close_fd)
		closep(d->close_fd);
	d->err = fsync(d->fd) < 0 ? errno : 0;
	d->end = now_wall();
	return NULL;
}

int save_make_durable(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_free_ char *ram = layout_in(vm->st.pending, SNAP_RAM);
	struct durable d = {.fd = sv->fd, .close_fd = &sv->qemu_fd};
	struct durable dr = {.fd = sv->ram_fd};
	double c0 = now_wall();
	pthread_t thread, ram_thread;
	bool threaded = false, ram_threaded = false;
	int r;

	/* A pump still writes its last compressed bytes, a filter its last
	 * records: fsync after it. */
	if (sv->pump) {
		r = pump_finish_checksum(TAKE_PTR(sv->pump), now_ms() + PUMP_END_MS,
					 vm_cancel_fd(vm), &sv->checksum, err);
		if (r == -ETIMEDOUT)
			sv->wedged = true;
		save_step(sv, "compress, checksum");
		if (r < 0)
			return r;
	} else if (sv->filter) {
		r = save_filter_finish(sv, err);
		if (r < 0)
			return r;
		c0 = now_wall();
		threaded = pthread_create(&thread, NULL, durable_thread, &d) == 0;
	} else {
		threaded = pthread_create(&thread, NULL, durable_thread, &d) == 0;
	}
	/* A RAM file written by the filter: synced while it is hashed. */
	if (dr.fd >= 0)
		ram_threaded = pthread_create(&ram_thread, NULL, durable_thread, &dr) == 0;
	/* QEMU is done with the file: what it wrote last is hashed now, while
	 * the guest runs; a mapped-ram file, written at random offsets, is
	 * hashed whole (its holes are not read). */
	if (sv->sum)
		r = checksum_follow_finish(TAKE_PTR(sv->sum), "the machine state", &sv->checksum,
					   err);
	else if (sv->mapped || sv->diff || sv->ramfile || sv->reread)
		r = checksum_fd(sv->fd, "the machine state", &sv->checksum, err);
	else
		r = 0;
	if (r == 0 && dr.fd >= 0)
		r = checksum_fd(dr.fd, "the RAM file", &sv->ram_checksum, err);
	if (!sv->opts->compress)
		save_phase(sv, "checksum", c0, now_wall());
	if (threaded)
		pthread_join(thread, NULL);
	else
		durable_thread(&d);
	if (ram_threaded)
		pthread_join(ram_thread, NULL);
	else if (dr.fd >= 0)
		durable_thread(&dr);
	save_phase(sv, "fsync", d.start, dr.fd >= 0 && dr.end > d.end ? dr.end : d.end);
	sv->last = now_wall();
	if (r < 0)
		return r;
	if (d.err || fstat(sv->fd, &sv->vmstate) < 0)
		return qerr(err, d.err ? d.err : errno, "cannot sync the machine state: %s",
			    strerror(d.err ? d.err : errno));
	if (dr.err)
		return qerr(err, dr.err, "cannot sync the RAM file %s/%s: %s", vm->dir, ram,
			    strerror(dr.err));
	if (dr.fd >= 0)
		sv->ram_bytes = ramfile_allocated(vm->dirfd, ram);
	/* The guest runs again: the staged RAM goes to the snapshot. */
	if (sv->stage) {
		r = ramfile_copy(AT_FDCWD, sv->stage, vm->dirfd, ram, vm->def.memory, "persist RAM",
				 sv->opts->progress, sv->opts->userdata, &sv->ram_checksum, err);
		unlink(sv->stage);
		free(TAKE_PTR(sv->stage));
		if (r < 0)
			return r;
	}
	if (!sv->shared)
		return 0;
	r = fsync_file(vm->dirfd, ram, err);
	if (r < 0)
		return r;
	sv->ram_bytes = ramfile_allocated(vm->dirfd, ram);
	save_step(sv, "RAM file");
	return 0;
}
