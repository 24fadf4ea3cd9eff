/* SPDX-License-Identifier: MIT */
/* Saving a snapshot (stream mode): every writable drive switched to a new
 * layer in one transaction while the vCPUs are stopped, then RAM and device
 * state through QEMU's migration into a file. A snapshot exists only once
 * state.json names it; until then its files live in a partial directory
 * that an interrupted save leaves for the next command to remove. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "ops/ops.h"

#define DEFAULT_SAVE_TIMEOUT 600
#define MIGRATE_FD_NAME "qsnap-migrate"

/* One writable drive in a save: the layer it leaves and the one it gets. */
struct cut {
	const qsnap_drive_def *d;
	char *old_layer;
	char *new_layer;
	bool node_added;
};

static void cuts_free(struct cut *cuts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(cuts[i].old_layer);
		free(cuts[i].new_layer);
	}
	free(cuts);
}

/* New layers and their QEMU nodes, made while the guest still runs. */
static int prepare_layers(qsnap_vm *vm, struct qmp *q, struct cut *cuts, size_t n,
			  qsnap_error *err)
{
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *node = NULL;
		int r;

		r = chain_new_layer(vm, cuts[i].d, cuts[i].old_layer, &cuts[i].new_layer, err);
		if (r < 0)
			return r;
		node = qemu_layer_node(cuts[i].new_layer);
		r = qmp_execute(
			q, "blockdev-add",
			jbuild("driver", json_object_new_string("qcow2"), "node-name",
			       json_object_new_string(node), "file",
			       jbuild("driver", json_object_new_string("file"), "filename",
				      json_object_new_string(cuts[i].new_layer), NULL),
			       /* the backing is attached by blockdev-snapshot */
			       "backing", NULL, NULL),
			NULL, 0, err);
		if (r < 0)
			return r;
		cuts[i].node_added = true;
	}
	return 0;
}

/* Undo prepare_layers for a save that did not switch the drives. */
static void drop_layers(qsnap_vm *vm, struct qmp *q, struct cut *cuts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		qsnap_error e2;

		if (cuts[i].node_added) {
			_cleanup_free_ char *node = qemu_layer_node(cuts[i].new_layer);
			qmp_execute(q, "blockdev-del",
				    jbuild("node-name", json_object_new_string(node), NULL), NULL, 0,
				    &e2);
		}
		if (cuts[i].new_layer)
			state_set_active(&vm->st, cuts[i].d->id, cuts[i].old_layer);
	}
}

static int switch_layers(struct qmp *q, struct cut *cuts, size_t n, qsnap_error *err)
{
	json_object *actions = json_object_new_array();

	/* All drives in one transaction: they are cut at the same instant. */
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *old = qemu_layer_node(cuts[i].old_layer);
		_cleanup_free_ char *new = qemu_layer_node(cuts[i].new_layer);

		json_object_array_add(
			actions,
			jbuild("type", json_object_new_string("blockdev-snapshot"), "data",
			       jbuild("node", json_object_new_string(old), "overlay",
				      json_object_new_string(new), NULL),
			       NULL));
	}
	return qmp_execute(q, "transaction", jbuild("actions", actions, NULL), NULL, 0, err);
}

static int write_meta(qsnap_vm *vm, const char *dir, const struct snapshot *s, qsnap_error *err)
{
	_cleanup_free_ char *path = xasprintf("%s/meta.json", dir);
	_cleanup_free_ char *text = meta_text(s);

	return write_file_atomic(vm->dirfd, path, text, strlen(text), err);
}

/* Where the committed snapshot's files go: snapshots/<name>, or, while a
 * snapshot being replaced still holds that, a unique name beside it. */
static char *final_dir(qsnap_vm *vm, const char *name)
{
	char *dir = xasprintf("snapshots/%s", name);

	for (size_t i = 0; i < vm->st.n_snapshots; i++)
		if (!strcmp(vm->st.snapshots[i].dir, dir)) {
			free(dir);
			return xasprintf("snapshots/%s@%lu", name, ++vm->st.seq);
		}
	/* A stray directory of that name is what a crash left: not a snapshot. */
	rm_rf(vm->dirfd, dir);
	return dir;
}

/* Make the snapshot whose files are in the partial directory real: its
 * meta.json, its final directory, and one atomic write of state.json.
 * s (name, mode, run state, machine state and drives filled in) is taken. */
static int commit(qsnap_vm *vm, struct snapshot s, qsnap_error *err)
{
	_cleanup_free_ char *old_dir = NULL, *name = xstrdup(s.name);
	struct snapshot *old = state_snapshot(&vm->st, name);
	int r;

	/* Replacing the current snapshot: the new one takes its place in the tree. */
	s.parent = xstrdup_or_null(old && vm->st.current && !strcmp(vm->st.current, name)
					   ? old->parent
					   : vm->st.current);
	s.created = (int64_t)time(NULL);
	s.memory = vm->def.memory;
	r = write_meta(vm, vm->st.pending, &s, err);
	if (r < 0)
		goto fail;
	s.dir = final_dir(vm, name);
	if (renameat(vm->dirfd, vm->st.pending, vm->dirfd, s.dir) < 0) {
		r = qerr(err, errno, "cannot rename %s to %s: %s", vm->st.pending, s.dir,
			 strerror(errno));
		goto fail;
	}
	r = fsync_dir(vm->dirfd, "snapshots", err);
	if (r < 0)
		goto fail;
	if (old) {
		old_dir = TAKE_PTR(old->dir);
		/* Children of the replaced snapshot keep their own state. */
		state_remove_snapshot(&vm->st, name);
	}
	free(TAKE_PTR(vm->st.pending));
	vm->st.snapshots =
		xrealloc(vm->st.snapshots, (vm->st.n_snapshots + 1) * sizeof(*vm->st.snapshots));
	vm->st.snapshots[vm->st.n_snapshots++] = s;
	free(vm->st.current);
	vm->st.current = xstrdup(name);
	/* A paused VM is left in QEMU's postmigrate state, which refuses
	 * another migration; its next save reuses this one's files. */
	free(vm->st.postmigrate);
	vm->st.postmigrate = s.was_running ? NULL : xstrdup(name);
	r = vm_write_state(vm, err);
	if (r < 0)
		return r;
	if (old_dir)
		rm_rf(vm->dirfd, old_dir);
	return chain_gc(vm, err);
fail:
	snapshot_free(&s);
	return r;
}

/* Shared RAM: copy the guest's RAM file into the snapshot while the guest
 * is paused; the copy's size on disk is checked before anything starts. */
static bool on_tmpfs(int dirfd, const char *path)
{
	struct statfs sf;
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	return fd >= 0 && fstatfs(fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

/* The staging file of a save in the RAM directory. */
static char *stage_path(qsnap_vm *vm)
{
	_cleanup_free_ char *dir = NULL;
	qsnap_error e2;

	return vm_ram_dir(vm, &dir, &e2) < 0 ? NULL : xasprintf("%s/stage", dir);
}

/* While the guest is paused, the RAM copy should go as fast as memory does:
 * where the snapshot lives on a disk and the RAM directory (tmpfs) has room
 * for a second copy, stage it there (*ret_stage) and persist it after the
 * guest resumes; otherwise copy straight into the snapshot. */
static int save_ram(qsnap_vm *vm, const qsnap_save_opts *opts, char **ret_stage,
		    qsnap_error *err)
{
	_cleanup_free_ char *dst = xasprintf("%s/ram", vm->st.pending), *stage = stage_path(vm);
	uint64_t need = ramfile_allocated(vm->dirfd, vm->st.ram_file);
	qsnap_error e2;
	int r;

	*ret_stage = NULL;
	if (stage && !on_tmpfs(vm->dirfd, "snapshots")) {
		_cleanup_free_ char *dir = xstrdup(stage);

		*strrchr(dir, '/') = '\0';
		if (on_tmpfs(AT_FDCWD, dir) &&
		    ramfile_check_space(AT_FDCWD, dir, need, "staging", &e2) == 0) {
			r = ramfile_copy(vm->dirfd, vm->st.ram_file, AT_FDCWD, stage, vm->def.memory,
					 "save RAM", opts->progress, opts->userdata, err);
			if (r == 0)
				*ret_stage = TAKE_PTR(stage);
			return r;
		}
	}
	return ramfile_copy(vm->dirfd, vm->st.ram_file, vm->dirfd, dst, vm->def.memory, "save RAM",
			    opts->progress, opts->userdata, err);
}

/* The guest runs again: the staged RAM goes to the snapshot. */
static int persist_ram(qsnap_vm *vm, const char *stage, const qsnap_save_opts *opts,
		       qsnap_error *err)
{
	_cleanup_free_ char *dst = xasprintf("%s/ram", vm->st.pending);
	int r = ramfile_copy(AT_FDCWD, stage, vm->dirfd, dst, vm->def.memory, "persist RAM",
			     opts->progress, opts->userdata, err);

	unlink(stage);
	return r;
}

static double event_time(json_object *ev)
{
	json_object *ts = jobj(ev, "timestamp");

	return (double)jint(ts, "seconds", 0) + (double)jint(ts, "microseconds", 0) / 1e6;
}

/* How long the guest was paused: QEMU's STOP to RESUME events. */
static double pause_seconds(struct qmp *q)
{
	_cleanup_json_ json_object *stop = NULL, *resume = NULL;
	qsnap_error e2;

	if (qmp_wait_event(q, "STOP", &stop, 0, &e2) < 0 ||
	    qmp_wait_event(q, "RESUME", &resume, 1000, &e2) < 0)
		return 0;
	return event_time(resume) - event_time(stop);
}

/* A save of a VM that has stayed paused since its last save, which QEMU
 * (in postmigrate state) would refuse: nothing in it changed, so the new
 * snapshot shares that one's frozen layers and machine state files. */
static int save_again(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts,
		      qsnap_error *err)
{
	struct snapshot *src = vm->st.postmigrate ? state_snapshot(&vm->st, vm->st.postmigrate) : NULL;
	_cleanup_free_ char *vmstate = NULL;
	struct snapshot s = {0};
	int64_t t0 = now_ms();
	int r;

	if (!src)
		return qerr(err, EBUSY, "the VM in %s is paused after a migration, and QEMU refuses another until the guest runs: continue it (qsnap qmp %s cont) or restore a snapshot first",
			    vm->dir, vm->dir);
	vmstate = snapshot_vmstate(src);
	vm->st.pending = xasprintf("snapshots/.partial-%lu", ++vm->st.seq);
	vm->st.pending_resume = false;
	if (mkdirat(vm->dirfd, vm->st.pending, 0755) < 0) {
		r = qerr(err, errno, "cannot create %s/%s: %s", vm->dir, vm->st.pending, strerror(errno));
		goto fail;
	}
	r = vm_write_state(vm, err);
	if (r < 0)
		goto fail;
	const char *files[] = {strrchr(vmstate, '/') + 1, strcmp(src->mode, "shared") ? NULL : "ram"};
	for (size_t i = 0; i < ARRAY_SIZE(files) && files[i]; i++) {
		_cleanup_free_ char *from = xasprintf("%s/%s", src->dir, files[i]);
		_cleanup_free_ char *to = xasprintf("%s/%s", vm->st.pending, files[i]);

		if (linkat(vm->dirfd, from, vm->dirfd, to, 0) < 0) {
			r = qerr(err, errno, "cannot link %s to %s: %s", from, to, strerror(errno));
			goto fail;
		}
	}
	s = (struct snapshot){
		.name = xstrdup(name),
		.mode = xstrdup(src->mode),
		.was_running = false,
		.vmstate_size = src->vmstate_size,
		.compressed = src->compressed,
		.vmstate_checksum = xstrdup_or_null(src->vmstate_checksum),
		.qemu_version = xstrdup_or_null(src->qemu_version),
		.machine = xstrdup_or_null(src->machine),
		.format = xstrdup_or_null(src->format),
		.drives = xcalloc(src->n_drives, sizeof(struct snap_drive)),
	};
	for (size_t i = 0; i < src->n_drives; i++) {
		s.drives[s.n_drives].drive = xstrdup(src->drives[i].drive);
		s.drives[s.n_drives++].layer = xstrdup(src->drives[i].layer);
	}
	r = commit(vm, s, err);
	if (r < 0)
		goto fail;
	if (opts->stats)
		*opts->stats = (qsnap_save_stats){
			.total = (double)(now_ms() - t0) / 1000.0,
			.mode = snapshot_ram_mode(state_snapshot(&vm->st, name)),
		};
	return 0;
fail:
	{
		qsnap_error e2;

		rm_rf(vm->dirfd, vm->st.pending);
		free(TAKE_PTR(vm->st.pending));
		vm_write_state(vm, &e2);
	}
	return qerr_prefix(err, "saving snapshot '%s' of %s failed; nothing was saved", name, vm->dir);
}

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

int qsnap_vm_save(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts, qsnap_error *err)
{
	static const qsnap_save_opts dflt = {0};
	_cleanup_free_ char *status = NULL;
	_cleanup_close_ int fd = -1, qemu_fd = -1;
	_cleanup_free_ char *stage = NULL, *checksum = NULL;
	struct pump *pump = NULL;
	struct checksum_follow *sum = NULL;
	struct mig_target tgt = {.fdset = -1};
	bool fd_passed = false;
	struct cut *cuts = NULL;
	size_t n = 0;
	bool running = false, paused_here = false, switched = false, shared, live, mapped;
	int64_t t0 = now_ms();
	uint64_t ram_bytes = 0;
	struct qmp *q;
	struct stat stt;
	int r;

	if (!opts)
		opts = &dflt;
	r = check_save(vm, name, opts->replace, err);
	if (r < 0)
		return r;
	r = vm_query_status(vm, &status, &running, err);
	if (r < 0)
		return r;
	if (!strcmp(status, "inmigrate") || !strcmp(status, "internal-error") ||
	    !strcmp(status, "guest-panicked") || !strcmp(status, "shutdown"))
		return qerr(err, EINVAL, "the VM in %s is in state '%s' and cannot be saved", vm->dir,
			    status);
	if (!strcmp(status, "postmigrate"))
		return save_again(vm, name, opts, err);
	q = vm->qmp;
	/* RAM that QEMU maps shared from our file stays out of the stream and
	 * is copied by qsnap; otherwise (stream mode, or RAM mapped
	 * copy-on-write after a lazy restore) it goes in the stream. */
	shared = vm->st.ram_file && vm->st.ram_shared;
	/* A live save writes RAM while the guest runs: only QEMU can keep that
	 * consistent, so RAM goes in the stream. A paused VM is saved the
	 * ordinary way (QEMU would resume it), and so is RAM mapped
	 * copy-on-write from a snapshot after a lazy restore: QEMU 7.2 cannot
	 * write-protect a private file mapping ("Background-snapshot is not
	 * compatible with guest memory configuration"). stats.live tells. */
	live = opts->live && running && !(vm->st.ram_file && !vm->st.ram_shared);
	if (live)
		shared = false;
	if (shared) {
		_cleanup_free_ char *snapdir = vm_path(vm, "snapshots");

		r = ramfile_check_space(AT_FDCWD, snapdir, ramfile_allocated(vm->dirfd, vm->st.ram_file),
					"saving the guest's RAM", err);
		if (r < 0)
			return r;
	}

	cuts = xcalloc(vm->def.n_drives, sizeof(*cuts));
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		struct active *a = d->readonly ? NULL : state_active(&vm->st, d->id);

		if (d->readonly)
			continue;
		if (!a) {
			r = qerr(err, EINVAL, "state.json has no active layer for drive '%s'", d->id);
			goto out;
		}
		cuts[n].d = d;
		cuts[n++].old_layer = xstrdup(a->layer);
	}

	/* Mark the save as under way before anything is made for it. */
	vm->st.pending = xasprintf("snapshots/.partial-%lu", ++vm->st.seq);
	vm->st.pending_resume = running;
	rm_rf(vm->dirfd, vm->st.pending);
	if (mkdirat(vm->dirfd, vm->st.pending, 0755) < 0) {
		r = qerr(err, errno, "cannot create %s/%s: %s", vm->dir, vm->st.pending,
			 strerror(errno));
		goto undo;
	}
	r = vm_write_state(vm, err);
	if (r < 0)
		goto undo;
	r = prepare_layers(vm, q, cuts, n, err);
	if (r < 0)
		goto undo;
	/* Uncompressed, non-live stream saves go in parallel where QEMU can
	 * (mapped-ram + multifd). Not live: with background-snapshot QEMU
	 * 10.0.2 wrote a mapped-ram file that does not load ("error while
	 * loading state for instance 0x0 of device 'kvm-tpr-opt'"); not with
	 * x-ignore-shared: that fails ("Bad address"). */
	mapped = !opts->compress && !live && !shared && migrate_can_map(q);
	r = migrate_setup(q, false, shared, live, mapped, err);
	if (r < 0 && live)
		qerr_prefix(err, "live save needs QEMU's background-snapshot (QEMU >= 6.0, userfaultfd write-protection in the kernel); save without --live");
	if (r < 0)
		goto undo;
	{
		_cleanup_free_ char *path = xasprintf("%s/%s", vm->st.pending,
						      opts->compress ? "vmstate.zst" : "vmstate");
		fd = openat(vm->dirfd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = qerr(err, errno, "cannot create %s/%s: %s", vm->dir, path,
				 strerror(errno));
			goto undo;
		}
		/* Compressed: QEMU writes into a pipe, our threads compress (and
		 * hash what they write). Plain: QEMU writes the file itself
		 * (measured: faster than any pump of ours, see README) and a
		 * thread hashes it as it grows. */
		if (opts->compress) {
			r = pump_start(PUMP_COMPRESS, fd, opts->compress, path, &pump, &qemu_fd, err);
			if (r < 0)
				goto undo;
		} else {
			/* A mapped-ram file is written at random offsets: it is
			 * hashed once it is complete. */
			if (!mapped)
				sum = checksum_follow_start(fd);
			/* QEMU's own handle (file: wants it O_WRONLY); its offset
			 * is the save's progress. */
			qemu_fd = openat(vm->dirfd, path, O_WRONLY | O_CLOEXEC);
			if (qemu_fd < 0) {
				r = qerr(err, errno, "cannot open %s/%s: %s", vm->dir, path,
					 strerror(errno));
				goto undo;
			}
		}
	}
	/* The new layers become active in state.json before QEMU switches to
	 * them: each is an empty overlay on the old one, so it is the right
	 * chain whether or not the switch below happens. */
	for (size_t i = 0; i < n; i++)
		state_set_active(&vm->st, cuts[i].d->id, cuts[i].new_layer);
	r = vm_write_state(vm, err);
	if (r < 0)
		goto undo;

	qmp_drop_events(q, "STOP");
	qmp_drop_events(q, "RESUME");
	if (running) {
		r = qmp_execute(q, "stop", NULL, NULL, 0, err);
		if (r < 0)
			goto undo;
		/* A live save's QEMU resumes the guest by itself. */
		paused_here = !live;
	}
	r = switch_layers(q, cuts, n, err);
	if (r < 0)
		goto undo;
	switched = true;
	r = migrate_pass(q, MIGRATE_FD_NAME, qemu_fd, !pump, &tgt, err);
	if (r < 0)
		goto undo;
	fd_passed = true;
	/* QEMU holds the pipe's write end now; ours would keep it open. */
	if (pump)
		closep(&qemu_fd);
	r = migrate_run(q, &tgt,
			 &(struct mig_wait){
				 .timeout_s = opts->timeout > 0 ? opts->timeout : DEFAULT_SAVE_TIMEOUT,
				 .phase = "save",
				 .progress = opts->progress,
				 .userdata = opts->userdata,
				 .fd = pump ? fd : qemu_fd,
				 .pump = pump,
				 .live = live,
			 },
			 err);
	if (r < 0) {
		qsnap_error e2;

		/* QEMU saw only a broken pipe; our side knows why (a full disk).
		 * A migration that never started leaves QEMU holding the pipe. */
		if (pump && vm_qemu_alive(vm))
			migrate_release(q, &tgt);
		if (pump && pump_finish(TAKE_PTR(pump), &e2) < 0)
			qerr(err, e2.code, "%s", e2.msg);
		goto undo;
	}
	migrate_release(q, &tgt);
	fd_passed = false;
	closep(&qemu_fd);
	if (pump)
		r = pump_finish_checksum(TAKE_PTR(pump), &checksum, err);
	else if (sum)
		r = checksum_follow_finish(TAKE_PTR(sum), "the machine state", &checksum, err);
	if (r < 0)
		goto undo;
	if (shared) {
		r = save_ram(vm, opts, &stage, err);
		if (r < 0)
			goto undo;
	}
	/* Everything the snapshot holds is written: the guest runs on while
	 * it is made durable and committed. */
	if (paused_here) {
		r = vm_cont(vm, err);
		if (r < 0)
			goto undo;
		paused_here = false;
	}
	if (fsync(fd) < 0 || fstat(fd, &stt) < 0) {
		r = qerr(err, errno, "cannot sync the machine state: %s", strerror(errno));
		goto undo;
	}
	if (mapped) {
		r = checksum_fd(fd, "the machine state", &checksum, err);
		if (r < 0)
			goto undo;
	}
	if (stage) {
		r = persist_ram(vm, stage, opts, err);
		free(TAKE_PTR(stage));
		if (r < 0)
			goto undo;
	}
	if (shared) {
		_cleanup_free_ char *ram = xasprintf("%s/ram", vm->st.pending);
		r = fsync_file(vm->dirfd, ram, err);
		if (r < 0)
			goto undo;
		ram_bytes = ramfile_allocated(vm->dirfd, ram);
	}
	{
		struct snapshot s = {
			.name = xstrdup(name),
			.mode = xstrdup(shared ? "shared" : "stream"),
			.was_running = running,
			.vmstate_size = (uint64_t)stt.st_size,
			.compressed = opts->compress > 0,
			.vmstate_checksum = TAKE_PTR(checksum),
			.qemu_version = *caps_version(q) ? xstrdup(caps_version(q)) : NULL,
			.machine = xstrdup_or_null(vm->st.qemu_machine),
			.format = mapped ? xstrdup("mapped-ram") : NULL,
			.drives = xcalloc(n, sizeof(struct snap_drive)),
		};
		for (size_t i = 0; i < n; i++) {
			s.drives[s.n_drives].drive = xstrdup(cuts[i].d->id);
			s.drives[s.n_drives++].layer = xstrdup(cuts[i].old_layer);
		}
		r = commit(vm, s, err);
	}
	if (r < 0)
		goto undo;
	/* Chain upkeep while the guest runs on (docs/design.md: reads through long
	 * chains slow the guest). */
	{
		unsigned limit = vm->def.max_chain ? vm->def.max_chain : QSNAP_DEFAULT_MAX_CHAIN;
		struct active *a = n ? state_active(&vm->st, cuts[0].d->id) : NULL;

		if (a && chain_length(&vm->st, a->layer) > limit && (r = qsnap_vm_compact(vm, limit, NULL, err)) < 0) {
			r = qerr_prefix(err, "snapshot '%s' is saved, but compacting the disks failed", name);
			goto out;
		}
	}
	if (opts->stats) {
		*opts->stats = (qsnap_save_stats){
			.paused = running ? pause_seconds(q) : 0,
			.total = (double)(now_ms() - t0) / 1000.0,
			.bytes = (uint64_t)stt.st_size + ram_bytes,
			.live = live,
			.mode = shared ? QSNAP_RAM_SHARED : QSNAP_RAM_STREAM,
		};
	}
	goto out;

undo:
	/* Nothing partial stays: the partial directory goes, the VM runs on.
	 * Layers that were switched stay in the chain (they hold what the
	 * guest writes now); ones that were not are dropped. */
	{
		qsnap_error e2;
		bool alive = vm_qemu_alive(vm);

		/* QEMU lets go of the fd it was given: then the pump ends. */
		closep(&qemu_fd);
		if (alive && fd_passed)
			migrate_release(q, &tgt);
		pump_finish(TAKE_PTR(pump), &e2);
		checksum_follow_cancel(TAKE_PTR(sum));
		if (stage)
			unlink(stage);
		if (!switched && alive)
			drop_layers(vm, q, cuts, n);
		if (vm->st.pending)
			rm_rf(vm->dirfd, vm->st.pending);
		free(TAKE_PTR(vm->st.pending));
		if (!alive) {
			vm_forget_qemu(vm);
			vm_err_qemu_log(vm, err);
		}
		vm_write_state(vm, &e2);
		chain_gc(vm, &e2);
		if (paused_here && alive)
			vm_cont(vm, &e2);
		r = qerr_prefix(err, "saving snapshot '%s' of %s failed; nothing was saved", name,
				vm->dir);
	}
out:
	cuts_free(cuts, n);
	return r;
}

int save_recover(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_json_ json_object *blocks = NULL;
	struct qmp *q;
	int r;

	rm_rf(vm->dirfd, vm->st.pending);
	free(TAKE_PTR(vm->st.pending));
	if (vm->def.ram_mode == QSNAP_RAM_SHARED) {
		_cleanup_free_ char *stage = stage_path(vm);
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
	/* Make state.json name the layers QEMU really writes to: the crash may
	 * have come before or after the switch. */
	r = qmp_execute(q, "query-block", NULL, &blocks, 0, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < json_object_array_length(blocks); i++) {
		json_object *b = json_object_array_get_idx(blocks, i);
		const char *node = jstr(jobj(b, "inserted"), "node-name");

		if (!node)
			continue;
		for (size_t j = 0; j < vm->st.n_layers; j++) {
			_cleanup_free_ char *ln = qemu_layer_node(vm->st.layers[j].path);
			const qsnap_drive_def *d = def_drive(&vm->def, vm->st.layers[j].drive);

			/* Node names are unique per layer (qemu_layer_node). */
			if (strcmp(ln, node) || !d)
				continue;
			state_set_active(&vm->st, d->id, vm->st.layers[j].path);
		}
	}
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
