/* SPDX-License-Identifier: MIT */
/* Saving a snapshot, as a transaction (save.h): every writable drive
 * switched to a new layer in one transaction while the vCPUs are stopped
 * (save_disks.c), then RAM and device state through QEMU's migration into
 * a file (save_files.c), then the commit (save_commit.c). A snapshot exists
 * only once state.json names it; until then its files live in a partial
 * directory that state.json records first, so that an interrupted save is
 * undone by the next command (save_recover). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "base/pagemap.h"
#include "ops/save.h"

/* What save-path auto means where QEMU can write mapped-ram, and its
 * channels (docs/design.md, "Where a QEMU 10 save's time goes; choosing
 * the save path"). */
#define SAVE_AUTO_MAPPED true
#define SAVE_AUTO_CHANNELS migrate_channels()

/* The checks that need no QEMU. */
static int check_save(qsnap_vm *vm, const char *name, bool replace, qsnap_error *err)
{
	if (!qsnap_name_valid(name))
		return qerr(err, EINVAL, "snapshot name '%s' is not valid: use letters, digits, '-', '_' and '.', not starting with '.' (at most 64)",
			    name);
	if (state_snapshot(&vm->st, name) && !replace)
		return qerr(err, EEXIST, "snapshot '%s' exists in %s: choose another name, or pass --replace",
			    name, vm->dir);
	if (!vm_qemu_alive(vm))
		return qerr(err, ESRCH, "the VM in %s is not running: start it (or restore a snapshot) before saving",
			    vm->dir);
	if (vm->st.inspect)
		return qerr(err, EINVAL, "the VM in %s runs a memory dump for inspection (read-only disks): stop it and restore or start it to save",
			    vm->dir);
	return 0;
}

/* How a plain stream save writes RAM (qsnap config's save settings, the
 * environment's QSNAP_NO_PRECOPY, QSNAP_MULTIFD_CHANNELS, QSNAP_DIRECT_IO
 * above them; docs/design.md has the measurements behind auto). */
static int save_choose_path(struct save *sv, qsnap_error *err)
{
	const qsnap_def *def = &sv->vm->def;
	bool can_map = migrate_can_map(sv->q);
	/* Not live: with background-snapshot QEMU 10.0.2 wrote a mapped-ram
	 * file that does not load ("error while loading state for instance
	 * 0x0 of device 'kvm-tpr-opt'"); not with x-ignore-shared: that
	 * fails ("Bad address"); a compressed stream goes through a pipe. */
	bool plain = !sv->opts->compress && !sv->live && !sv->shared && !sv->diff;

	if (plain && def->save_path == SAVE_PATH_MAPPED && !can_map)
		return qerr(err, ENOTSUP, "save-path is mapped-ram, which this QEMU (%s) cannot write (QEMU >= 9.0 can): set qsnap config --save-path auto or stream",
			    caps_version(sv->q));
	sv->mapped = plain && can_map &&
		     (def->save_path == SAVE_PATH_MAPPED ||
		      (def->save_path == SAVE_PATH_AUTO && SAVE_AUTO_MAPPED));
	sv->ramfile = plain && def->save_path == SAVE_PATH_RAMFILE;
	sv->channels = migrate_channels_env(def->multifd_channels ? def->multifd_channels
								   : SAVE_AUTO_CHANNELS);
	sv->direct_io = sv->mapped && caps_migrate_param(sv->q, "direct-io") &&
			migrate_direct_io_env(false, def->direct_io == SETTING_ON);
	/* A running guest's RAM in the stream is written while it runs
	 * (precopy), and the guest is stopped only for the last pages, the
	 * device state and the disks' cut (pause-before-switchover). Shared
	 * RAM is copied by qsnap while the guest is paused; a live save
	 * pauses it only for the device state anyway. auto leaves it out
	 * where QEMU would lose guest writes doing it (TCG before 9.0);
	 * "on" is the user's word that theirs does not. */
	bool sound = caps_tcg_dirty_log_sound(sv->q);
	/* RAM mapped copy-on-write from a snapshot's RAM file (a lazy
	 * restore) need not trust that log: the save can reread the pages
	 * the guest wrote itself, once the guest is stopped (pagemap names
	 * them), where it may read QEMU's memory: a differential save, or a
	 * plain stream save through the same filter. */
	bool cow = sv->vm->st.ram_file && !sv->vm->st.ram_shared;
	bool reread = cow && !sound && (sv->diff || (plain && !sv->mapped && !sv->ramfile)) &&
		      pagemap_readable(sv->vm->st.qemu_pid);

	sv->precopy = sv->running && !sv->live && !sv->shared && migrate_can_pause_switchover(sv->q) &&
		      (def->precopy == SETTING_ON ||
		       (def->precopy == SETTING_AUTO && (sound || reread))) &&
		      !getenv("QSNAP_NO_PRECOPY");
	sv->reread = sv->precopy && reread;
	return 0;
}

/* What kind of save this is, and the drives it cuts. 1: a VM that stayed
 * paused since its last save (save_again). */
static int save_begin(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_free_ char *status = NULL;
	int r;

	r = check_save(vm, sv->name, sv->opts->replace, err);
	if (r < 0)
		return r;
	r = vm_query_status(vm, &status, &sv->running, err);
	if (r < 0)
		return r;
	if (!strcmp(status, "inmigrate") || !strcmp(status, "internal-error") ||
	    !strcmp(status, "guest-panicked") || !strcmp(status, "shutdown"))
		return qerr(err, EINVAL, "the VM in %s is in state '%s' and cannot be saved", vm->dir,
			    status);
	if (!strcmp(status, "postmigrate"))
		return 1;
	sv->q = vm->qmp;
	/* RAM that QEMU maps shared from our file stays out of the stream and
	 * is copied by qsnap; otherwise (stream mode, or RAM mapped
	 * copy-on-write after a lazy restore) it goes in the stream. */
	sv->shared = vm->st.ram_file && vm->st.ram_shared;
	/* A live save writes RAM while the guest runs: only QEMU can keep that
	 * consistent, so RAM goes in the stream. A paused VM is saved the
	 * ordinary way (QEMU would resume it), and so is RAM mapped
	 * copy-on-write from a snapshot after a lazy restore: QEMU 7.2 cannot
	 * write-protect a private file mapping ("Background-snapshot is not
	 * compatible with guest memory configuration"). stats.live tells. */
	sv->live = sv->opts->live && sv->running && !(vm->st.ram_file && !vm->st.ram_shared);
	if (sv->live)
		sv->shared = false;
	/* A differential save: the stream of a lazily restored VM, without
	 * the pages it never wrote (save_diff.c). */
	sv->diff = sv->opts->diff;
	if (sv->diff) {
		r = save_diff_check(vm, err);
		if (r < 0)
			return r;
		sv->live = sv->shared = false;
	}
	r = save_choose_path(sv, err);
	if (r < 0)
		return r;
	if (sv->shared) {
		_cleanup_free_ char *snapdir = vm_path(vm, VMDIR_SNAPSHOTS);

		r = ramfile_check_space(AT_FDCWD, snapdir, ramfile_allocated(vm->dirfd, vm->st.ram_file),
					"saving the guest's RAM", err);
		if (r < 0)
			return r;
	}
	sv->cuts = xcalloc(vm->def.n_drives + 1, sizeof(*sv->cuts));
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		struct active *a = d->readonly ? NULL : state_active(&vm->st, d->id);

		if (d->readonly)
			continue;
		if (!a)
			return qerr(err, EINVAL, "state.json has no active layer for drive '%s'", d->id);
		sv->cuts[sv->n_cuts].d = d;
		sv->cuts[sv->n_cuts++].old_layer = xstrdup(a->layer);
	}
	return 0;
}

/* The save is under way: state.json says so before anything is made for it. */
static int save_mark_pending(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;

	vm->st.pending = layout_partial(++vm->st.seq);
	vm->st.pending_resume = sv->running;
	rm_rf(vm->dirfd, vm->st.pending);
	if (mkdirat(vm->dirfd, vm->st.pending, 0755) < 0)
		return qerr(err, errno, "cannot create %s/%s: %s", vm->dir, vm->st.pending,
			    strerror(errno));
	return vm_write_state(vm, err);
}

/* Everything the snapshot holds is written: the guest runs on while it is
 * made durable and committed. */
static int save_resume(struct save *sv, qsnap_error *err)
{
	int r;

	if (!sv->paused_here)
		return 0;
	/* Rereading, the guest's pages are read as the stream ends: it runs
	 * again once the filter is through. */
	if (sv->reread && (r = save_filter_finish(sv, err)) < 0)
		return r;
	r = vm_cont(sv->vm, err);
	if (r == 0)
		sv->paused_here = false;
	save_step(sv, "cont");
	return r;
}

/* The snapshot entry: its drives' frozen layers and its machine state. */
static int save_finish(struct save *sv, qsnap_error *err)
{
	const char *version = caps_version(sv->q);
	struct snapshot s = {
		.name = xstrdup(sv->name),
		.mode = sv->shared || sv->diff || sv->ramfile ? QSNAP_RAM_SHARED : QSNAP_RAM_STREAM,
		/* A RAM file of its own that the stream's RAM does not go
		 * in: loaded as a folded chain is. */
		.ram_base = sv->ramfile ? xstrdup(sv->name) : TAKE_PTR(sv->ram_base),
		.ram_chain = TAKE_PTR(sv->ram_chain),
		.n_ram_chain = sv->n_ram_chain,
		.was_running = sv->running,
		.vmstate_size = (uint64_t)sv->vmstate.st_size,
		.compressed = sv->opts->compress > 0,
		.vmstate_checksum = TAKE_PTR(sv->checksum),
		.ram_checksum = TAKE_PTR(sv->ram_checksum),
		.qemu_version = *version ? xstrdup(version) : NULL,
		.machine = xstrdup_or_null(sv->vm->st.qemu_machine),
		.format = sv->mapped ? VMSTATE_MAPPED_RAM : VMSTATE_STREAM,
		.drives = xcalloc(sv->n_cuts + 1, sizeof(struct snap_drive)),
	};
	int r;

	for (size_t i = 0; i < sv->n_cuts; i++) {
		s.drives[s.n_drives].drive = xstrdup(sv->cuts[i].d->id);
		s.drives[s.n_drives++].layer = xstrdup(sv->cuts[i].old_layer);
	}
	/* The VM's pages are known since this one now: the next differential
	 * save builds on it. */
	if (sv->diff) {
		free(sv->vm->st.ram_parent);
		sv->vm->st.ram_parent = xstrdup_or_null(s.vmstate_checksum);
		if (sv->flat_why)
			vm_set_notice(sv->vm, "'%s' holds every page written since the RAM file of '%s': %s",
				      sv->name, s.ram_base, sv->flat_why);
	}
	r = save_commit(sv->vm, s, err);
	save_step(sv, "commit");
	return r;
}

/* QEMU stopped answering, or holds the pump's pipe and neither writes
 * nor closes it: it is killed, so that nothing of the save stays behind
 * (a migration QEMU would go on with later, a file it holds). */
static void end_wedged(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	pid_t pid = vm->st.qemu_pid;
	bool stalled = qmp_stalled(sv->q);
	_cleanup_free_ char *msg = xstrdup(err->msg);
	qsnap_error e2;

	/* One that does not answer is not asked to quit. */
	if (stalled && proc_signal(pid, vm->st.qemu_start, SIGKILL) == 0)
		proc_wait_gone(pid, vm->st.qemu_start, 10000, -1);
	vm_kill_qemu(vm, 1, &e2);
	if (stalled)
		qerr(err, err->code, "%s; QEMU (pid %d) does not answer and was killed: the VM is stopped (restore a snapshot, or start it)",
		     msg, (int)pid);
	else
		qerr(err, err->code, "%s; QEMU (pid %d) did not let go of the machine state's pipe within %d s, so it was killed: the VM is stopped (restore a snapshot, or start it)",
		     msg, (int)pid, UNDO_GRACE_MS / 1000);
}

/* Nothing partial stays: the partial directory goes, the VM runs on.
 * Layers that were switched stay in the chain (they hold what the guest
 * writes now); ones that were not are dropped. The undo is not cancelled
 * and ends within UNDO_GRACE_MS of QMP and pipe waits: a QEMU that does not
 * answer or let go in that time is killed. */
static int save_undo(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	bool alive = vm_qemu_alive(vm);
	qsnap_error e2;
	int p;

	vm_cancel_hold(vm, UNDO_GRACE_MS);
	/* QEMU lets go of the fd it was given: then the pump ends. */
	closep(&sv->qemu_fd);
	if (alive && sv->fd_passed && !sv->wedged && !qmp_stalled(sv->q))
		migrate_release(sv->q, &sv->tgt);
	p = pump_discard(TAKE_PTR(sv->pump), qmp_stalled(sv->q) ? now_ms() : now_ms() + UNDO_GRACE_MS,
			 &e2);
	if (p == -ETIMEDOUT)
		sv->wedged = true;
	save_filter_cancel(sv, err);
	checksum_follow_cancel(TAKE_PTR(sv->sum));
	/* Does QEMU still answer? (QEMU 7.2 hung after a cancelled live
	 * save, seen once.) A VM left running must be one that works. */
	if (alive && !sv->wedged && !qmp_stalled(sv->q)) {
		vm_cancel_hold(vm, UNDO_GRACE_MS);
		qmp_execute(sv->q, "query-status", NULL, NULL, 5000, &e2);
	}
	if (alive && (sv->wedged || qmp_stalled(sv->q))) {
		end_wedged(sv, err);
		alive = false;
	}
	if (sv->stage)
		unlink(sv->stage);
	if (!sv->switched && alive)
		save_drop_layers(sv);
	if (vm->st.pending)
		rm_rf(vm->dirfd, vm->st.pending);
	free(TAKE_PTR(vm->st.pending));
	if (!alive && vm->st.qemu_pid) {
		vm_forget_qemu(vm);
		vm_err_qemu_log(vm, err);
	}
	vm_write_state(vm, &e2);
	chain_gc(vm, &e2);
	if (sv->paused_here && alive)
		vm_cont(vm, &e2);
	return qerr_prefix(err, "saving snapshot '%s' of %s failed; nothing was saved", sv->name,
			   vm->dir);
}

static void save_free(struct save *sv)
{
	for (size_t i = 0; i < sv->n_cuts; i++) {
		free(sv->cuts[i].old_layer);
		free(sv->cuts[i].new_layer);
	}
	free(sv->cuts);
	closep(&sv->fd);
	closep(&sv->qemu_fd);
	free(sv->checksum);
	free(sv->ram_checksum);
	free(sv->stage);
	save_filter_cancel(sv, NULL);
	save_ramfile_free(sv);
	free(sv->ram_base);
	ram_chain_free(sv->ram_chain, sv->n_ram_chain);
	ram_index_free(sv->diff_index);
}

/* The save's stats (stats.phases in order of their start, from the start
 * of the save). */
static void save_stats(struct save *sv)
{
	qsnap_save_stats st = {
		.size = sizeof(qsnap_save_stats),
		.paused = sv->running ? save_pause_seconds(sv) : 0,
		.total = (double)(now_ms() - sv->t0) / 1000.0,
		.bytes = (uint64_t)sv->vmstate.st_size + sv->ram_bytes,
		.live = sv->live,
		.mode = sv->shared || sv->diff || sv->ramfile ? QSNAP_RAM_SHARED : QSNAP_RAM_STREAM,
		.path = sv->mapped ? "mapped-ram" : sv->ramfile ? "ram-file" : "stream",
		.channels = sv->mapped ? sv->channels : 0,
		.direct_io = sv->direct_io,
		.precopy = sv->precopy,
		.diff = sv->diff,
		.pages_written = sv->diff ? sv->pages_kept : 0,
		.pages_left_out = sv->diff ? sv->pages_left_out : 0,
	};

	for (size_t i = 0; i < sv->n_phases; i++) {
		struct qsnap_save_phase p = sv->phases[i];
		size_t j = st.n_phases++;

		p.start -= sv->wall0;
		for (; j > 0 && st.phases[j - 1].start > p.start; j--)
			st.phases[j] = st.phases[j - 1];
		st.phases[j] = p;
	}
	sized_out(sv->opts->stats, &st, sizeof(st));
}

/* Chain upkeep while the guest runs on (docs/design.md: reads through
 * long chains slow the guest). */
static int save_upkeep(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	unsigned limit = vm->def.max_chain ? vm->def.max_chain : QSNAP_DEFAULT_MAX_CHAIN;
	struct active *a = sv->n_cuts ? state_active(&vm->st, sv->cuts[0].d->id) : NULL;

	if (!a || chain_length(&vm->st, a->layer) <= limit)
		return 0;
	if (vm_compact_disks(vm, limit, err) == 0) {
		save_step(sv, "compact");
		return 0;
	}
	return qerr_prefix(err, "snapshot '%s' is saved, but compacting the disks failed", sv->name);
}

static int save(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts, qsnap_error *err)
{
	qsnap_save_opts o;
	struct save sv = {.vm = vm, .name = name, .opts = &o, .t0 = now_ms(), .wall0 = now_wall(),
			  .fd = -1, .qemu_fd = -1, .ram_fd = -1, .tgt = {.fdset = -1}};
	int r;

	sv.last = sv.wall0;
	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_save_opts", err)) < 0 ||
	    (r = sized_check(o.stats, "qsnap_save_stats", err)) < 0)
		return r;
	if (o.compress == QSNAP_COMPRESS_OFF)
		o.compress = 0;
	if (o.compress < 0 || o.compress > 19)
		return qerr(err, EINVAL, "compression level %d: use 1 to 19, or QSNAP_COMPRESS_OFF",
			    o.compress);
	r = save_begin(&sv, err);
	if (r == 1) {
		save_free(&sv);
		return save_again(vm, name, sv.opts, err);
	}
	if (r < 0) {
		save_free(&sv);
		return r;
	}
	if ((r = save_mark_pending(&sv, err)) < 0 || (r = save_prepare_layers(&sv, err)) < 0 ||
	    (r = save_open_vmstate(&sv, err)) < 0 ||
	    (!sv.precopy && (r = save_switch_layers(&sv, err)) < 0) ||
	    (r = save_migrate(&sv, err)) < 0 || (sv.shared && (r = save_copy_ram(&sv, err)) < 0) ||
	    (r = save_resume(&sv, err)) < 0 || (r = save_make_durable(&sv, err)) < 0 ||
	    (r = save_finish(&sv, err)) < 0) {
		r = save_undo(&sv, err);
		save_free(&sv);
		return r;
	}
	r = save_upkeep(&sv, err);
	if (r == 0)
		save_stats(&sv);
	save_free(&sv);
	return r;
}

int qsnap_vm_save(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts, qsnap_error *err)
{
	int r;

	vm_cancel_arm(vm);
	r = save(vm, name, opts, err);
	vm_cancel_end(vm);
	return r;
}

int save_recover(qsnap_vm *vm, qsnap_error *err)
{
	struct qmp *q;
	int r;

	rm_rf(vm->dirfd, vm->st.pending);
	free(TAKE_PTR(vm->st.pending));
	if (vm->def.ram_mode == QSNAP_RAM_SHARED) {
		_cleanup_free_ char *stage = save_stage_path(vm);
		if (stage)
			unlink(stage);
	}
	if (!vm_qemu_alive(vm) || vm_qmp(vm, &q, err) < 0) {
		vm_forget_qemu(vm);
		return vm_write_state(vm, err);
	}
	/* A migration may still write into the removed file: end it, and
	 * let QEMU close that file. */
	migrate_end(q);
	migrate_release_name(q, MIGRATE_FD_NAME);
	/* state.json names the layers QEMU really writes to. */
	r = save_find_active(vm, q, err);
	if (r < 0)
		return r;
	r = vm_write_state(vm, err);
	if (r < 0)
		return r;
	if (vm->st.pending_resume) {
		_cleanup_free_ char *status = NULL;
		bool running;

		if (vm_query_status(vm, &status, &running, err) == 0 && !running)
			vm_cont(vm, err);
	}
	return chain_gc(vm, err);
}
