/* SPDX-License-Identifier: MIT */
/* Restoring a snapshot: a new QEMU with the same devices, fresh empty
 * layers on the snapshot's frozen ones, started with -incoming defer and fed
 * the saved state, so no device ever loads state on top of stale state. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define DEFAULT_RESTORE_TIMEOUT 600
#define INCOMING_FD_NAME "qsnap-incoming"

/* Everything the snapshot needs is there and looks right: checked before
 * the running VM is touched. Returns the opened machine state. */
static int check_files(qsnap_vm *vm, const struct snapshot *s, int *ret_fd, qsnap_error *err)
{
	_cleanup_free_ char *path = snapshot_vmstate(s);
	_cleanup_close_ int fd = -1;
	char magic[4];
	struct stat st;

	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		const char *layer = NULL;

		if (d->readonly)
			continue;
		for (size_t j = 0; j < s->n_drives; j++)
			if (!strcmp(s->drives[j].drive, d->id))
				layer = s->drives[j].layer;
		if (!layer)
			return qerr(err, ENOENT, "snapshot '%s' has no state for drive '%s' (was the drive added to vm.json after the snapshot?)",
				    s->name, d->id);
		for (const char *l = layer; l;) {
			struct layer *ly = state_layer(&vm->st, l);

			if (faccessat(vm->dirfd, l, R_OK, 0) < 0)
				return qerr(err, errno, "snapshot '%s' needs %s/%s: %s", s->name,
					    vm->dir, l, strerror(errno));
			l = ly ? ly->backing : NULL;
		}
		if (access(d->path, R_OK) < 0)
			return qerr(err, errno, "snapshot '%s' needs the base image %s of drive '%s': %s",
				    s->name, d->path, d->id, strerror(errno));
	}
	if (s->memory && s->memory != vm->def.memory)
		return qerr(err, EINVAL, "snapshot '%s' was saved with %llu MiB of RAM but vm.json now says %llu MiB: set the memory back to restore it",
			    s->name, (unsigned long long)(s->memory >> 20),
			    (unsigned long long)(vm->def.memory >> 20));
	if (!strcmp(s->mode, "shared")) {
		_cleanup_free_ char *ram = xasprintf("%s/ram", s->dir);

		if (fstatat(vm->dirfd, ram, &st, 0) < 0)
			return qerr(err, errno, "snapshot '%s': %s/%s: %s", s->name, vm->dir, ram,
				    strerror(errno));
		if ((uint64_t)st.st_size != vm->def.memory)
			return qerr(err, EINVAL, "snapshot '%s': %s/%s has %lld bytes, the guest's RAM %llu: the file is damaged",
				    s->name, vm->dir, ram, (long long)st.st_size,
				    (unsigned long long)vm->def.memory);
	}
	fd = openat(vm->dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr(err, errno, "snapshot '%s': cannot open %s/%s: %s", s->name, vm->dir, path,
			    strerror(errno));
	if (fstat(fd, &st) < 0 || (s->vmstate_size && (uint64_t)st.st_size != s->vmstate_size))
		return qerr(err, EINVAL, "snapshot '%s': %s/%s has %lld bytes, %llu were saved: the file is damaged",
			    s->name, vm->dir, path, (long long)st.st_size,
			    (unsigned long long)s->vmstate_size);
	/* QEMU's migration stream starts with "QEVM", a zstd frame with its
	 * magic number. */
	if (pread(fd, magic, sizeof(magic), 0) != sizeof(magic) ||
	    memcmp(magic, s->compressed ? "\x28\xb5\x2f\xfd" : "QEVM", 4))
		return qerr(err, EINVAL, "snapshot '%s': %s/%s is not a QEMU machine state", s->name,
			    vm->dir, path);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* The snapshot loads only into the machine type it was saved with: a QEMU
 * without it (one older than the snapshot's) is refused before the running
 * VM is touched. The running QEMU is asked; a stopped VM's binary (unless
 * it is the type this VM runs anyway) is asked with -machine help. */
/* Is the running QEMU the binary vm.json names (it may have been edited)? */
static bool running_binary_is_defs(qsnap_vm *vm)
{
	_cleanup_free_ char *exe = NULL, *prog = NULL, *link = NULL;
	char real[PATH_MAX];
	ssize_t n;

	if (!vm_qemu_alive(vm))
		return false;
	prog = find_program(vm->def.qemu ? vm->def.qemu : "qemu-system-x86_64");
	exe = xasprintf("/proc/%d/exe", (int)vm->st.qemu_pid);
	link = xcalloc(1, PATH_MAX);
	n = readlink(exe, link, PATH_MAX - 1);
	return prog && n > 0 && realpath(prog, real) && !strcmp(real, link);
}

static int check_machine(qsnap_vm *vm, const struct snapshot *s, qsnap_error *err)
{
	struct qmp *q;
	bool have = false;
	int r;

	if (s->format && running_binary_is_defs(vm) && vm_qmp(vm, &q, err) == 0 &&
	    !migrate_can_map(q))
		return qerr(err, ENOTSUP, "snapshot '%s' is in QEMU's %s format (saved on QEMU %s), which this QEMU (%s) cannot read: restore it with QEMU >= 9.0 (\"qemu\" in vm.json)",
			    s->name, s->format, s->qemu_version ? s->qemu_version : "(unknown)",
			    caps_version(q));
	if (!s->machine)
		return 0;
	if (running_binary_is_defs(vm) && vm_qmp(vm, &q, err) == 0) {
		if (vm->st.qemu_machine && !strcmp(vm->st.qemu_machine, s->machine))
			return 0;
		r = caps_has_machine(q, s->machine, &have, err);
	} else {
		r = qemu_has_machine(vm->def.qemu, s->machine, &have, err);
	}
	if (r < 0)
		return r;
	if (!have)
		return qerr(err, ENOTSUP, "snapshot '%s' was saved on QEMU %s with machine type %s, which %s does not have: restore it with a QEMU that has it (\"qemu\" in vm.json)",
			    s->name, s->qemu_version ? s->qemu_version : "(unknown)", s->machine,
			    vm->def.qemu ? vm->def.qemu : "qemu-system-x86_64");
	return 0;
}

/* Where the new QEMU's RAM comes from (see docs/design.md, shared-RAM mode):
 * - a shared snapshot, lazily (or into a stream-mode VM): the snapshot's
 *   RAM file mapped copy-on-write, never written;
 * - a shared snapshot, eagerly: a copy in a fresh shared RAM file;
 * - a stream snapshot into a shared-mode VM: a fresh, empty shared file
 *   that the stream fills;
 * - otherwise anonymous RAM. */
static int prepare_ram(qsnap_vm *vm, const struct snapshot *s, const qsnap_restore_opts *opts,
		       struct launch *l, char **ret_file, qsnap_error *err)
{
	bool from_file = !strcmp(s->mode, "shared");
	_cleanup_free_ char *file = NULL, *snapram = xasprintf("%s/ram", s->dir);
	int r;

	if (from_file && (opts->lazy || vm->def.ram_mode != QSNAP_RAM_SHARED)) {
		*ret_file = TAKE_PTR(snapram);
		l->ram_file = *ret_file;
		l->ram_share = false;
		return 0;
	}
	if (vm->def.ram_mode != QSNAP_RAM_SHARED) {
		*ret_file = NULL;
		return 0;
	}
	r = vm_new_ram_file(vm, &file, err);
	if (r < 0)
		return r;
	if (from_file) {
		_cleanup_free_ char *dir = xstrdup(file);
		*strrchr(dir, '/') = '\0';
		r = ramfile_check_space(vm->dirfd, dir, ramfile_allocated(vm->dirfd, snapram),
					"restoring the guest's RAM", err);
		if (r >= 0)
			r = ramfile_copy(vm->dirfd, snapram, vm->dirfd, file, vm->def.memory,
					 "restore RAM", opts->progress, opts->userdata, err);
		if (r < 0) {
			unlink(file);
			return r;
		}
	}
	*ret_file = TAKE_PTR(file);
	l->ram_file = *ret_file;
	l->ram_share = true;
	return 0;
}

int restore_into(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts, bool paused,
		 qsnap_error *err)
{
	_cleanup_close_ int fd = -1, qemu_fd = -1;
	_cleanup_free_ char *ram = NULL, *vmstate = NULL;
	struct pump *pump = NULL;
	struct mig_target tgt;
	bool migrating = false;
	struct launch l = {.incoming = true, .timeout = 60};
	struct snapshot *s;
	struct stat st;
	struct qmp *q;
	int r;

	r = find_snapshot(vm, name, &s, err);
	if (r < 0)
		return r;
	r = check_files(vm, s, &fd, err);
	if (r < 0)
		return r;
	r = check_machine(vm, s, err);
	if (r < 0)
		return r;
	l.machine = s->machine;
	r = vm_kill_qemu(vm, 0, err);
	if (r < 0)
		return r;

	/* Fresh layers on the frozen ones; the discarded current layers go
	 * unless a snapshot needs them. */
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		_cleanup_free_ char *layer = NULL;

		if (d->readonly)
			continue;
		for (size_t j = 0; j < s->n_drives; j++)
			if (!strcmp(s->drives[j].drive, d->id)) {
				r = chain_new_layer(vm, d, s->drives[j].layer, &layer, err);
				break;
			}
		if (r < 0)
			return r;
		state_set_active(&vm->st, d->id, layer);
	}
	free(vm->st.current);
	vm->st.current = xstrdup(name);
	r = vm_write_state(vm, err);
	if (r < 0)
		return r;
	r = chain_gc(vm, err);
	if (r < 0)
		return r;

	r = prepare_ram(vm, s, opts, &l, &ram, err);
	if (r < 0)
		return qerr_prefix(err, "restoring '%s'", name);
	r = vm_launch(vm, &l, err);
	if (r < 0) {
		if (l.ram_share)
			unlink(ram);
		return qerr_prefix(err, "restoring '%s'", name);
	}
	q = vm->qmp;
	/* A stopped VM's QEMU is asked only now (check_machine asks a running
	 * one before anything is touched). */
	if (s->format && !migrate_can_map(q)) {
		r = qerr(err, ENOTSUP, "snapshot '%s' is in QEMU's %s format (saved on QEMU %s), which this QEMU (%s) cannot read: restore it with QEMU >= 9.0 (\"qemu\" in vm.json)",
			 name, s->format, s->qemu_version ? s->qemu_version : "(unknown)",
			 caps_version(q));
		goto fail;
	}
	r = migrate_setup(q, true, !strcmp(s->mode, "shared"), false, s->format != NULL, err);
	if (r < 0)
		goto fail;
	/* QEMU reads a plain stream itself: measured here, reading it through
	 * a pump of ours (O_DIRECT) was slower than QEMU's page-cache reads. */
	if (s->compressed) {
		vmstate = snapshot_vmstate(s);
		r = pump_start(PUMP_DECOMPRESS, fd, 0, vmstate, &pump, &qemu_fd, err);
		if (r < 0)
			goto fail;
	}
	r = migrate_pass(q, INCOMING_FD_NAME, pump ? qemu_fd : fd, !pump, &tgt, err);
	closep(&qemu_fd);
	if (r < 0)
		goto fail;
	fstat(fd, &st);
	migrating = true;
	r = migrate_run(q, &tgt,
			 &(struct mig_wait){
				 .incoming = true,
				 .timeout_s = opts->timeout > 0 ? opts->timeout : DEFAULT_RESTORE_TIMEOUT,
				 .phase = "restore",
				 .progress = opts->progress,
				 .userdata = opts->userdata,
				 .fd = fd,
				 .pump = pump,
				 .total = s->compressed ? 0 : (uint64_t)st.st_size,
			 },
			 err);
	if (r < 0)
		goto fail;
	migrate_release(q, &tgt);
	r = pump_finish(TAKE_PTR(pump), err);
	if (r < 0)
		goto fail;
	if (s->was_running && !paused) {
		r = vm_cont(vm, err);
		if (r < 0)
			goto fail;
	}
	return 0;
fail:
	{
		qsnap_error e2;
		bool died = !vm_qemu_alive(vm);

		vm_kill_qemu(vm, 1, &e2);
		/* With QEMU gone, its end of the pipe is closed: the pump ends. */
		closep(&qemu_fd);
		/* A damaged compressed file says so more clearly than QEMU. */
		if (pump && pump_finish(TAKE_PTR(pump), &e2) < 0)
			qerr(err, e2.code, "%s", e2.msg);
		/* QEMU that stays up after a failed load (exit-on-error off) logs
		 * more than query-migrate says ("error while loading state
		 * section id 2(ram)" against "load of migration failed: Invalid
		 * argument", QEMU 10.0.2). */
		if (died || migrating)
			vm_err_qemu_log(vm, err);
		return qerr_prefix(err, "restoring '%s' failed; the VM is stopped", name);
	}
}

int qsnap_vm_restore(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts,
		     qsnap_error *err)
{
	static const qsnap_restore_opts dflt = {0};

	return restore_into(vm, name, opts ? opts : &dflt, false, err);
}

int restore_recover(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *status = NULL;
	bool running;
	qsnap_error e2;

	/* A QEMU still waiting for a restore's incoming state never got it:
	 * that restore was interrupted, so end it. */
	if (vm->st.qemu_pid && vm_query_status(vm, &status, &running, &e2) == 0 &&
	    !strcmp(status, "inmigrate"))
		return vm_kill_qemu(vm, 2, err);
	return 0;
}
