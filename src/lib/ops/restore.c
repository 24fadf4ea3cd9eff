/* SPDX-License-Identifier: MIT */
/* Restoring a snapshot, as a transaction: a new QEMU with the same
 * devices, fresh empty layers on the snapshot's frozen ones, started with
 * -incoming defer and fed the saved state, so no device ever loads state
 * on top of stale state. struct restore records how far it got; one undo
 * walks back from there. Everything is checked (restore_check.c) before
 * the running VM is touched. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/restore.h"

#define DEFAULT_RESTORE_TIMEOUT 600
#define INCOMING_FD_NAME "qsnap-incoming"

/* Fresh layers on the frozen ones, made while the running QEMU still runs
 * (qemu-img opens the frozen ones shared): off the time the VM is down.
 * Until restore_layers makes them active they are unreferenced layers,
 * which chain_gc removes if the restore goes no further. */
static int restore_layers_make(struct restore *rs, qsnap_error *err)
{
	qsnap_vm *vm = rs->vm;

	rs->layers = xcalloc(vm->def.n_drives, sizeof(char *));
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];

		if (d->readonly)
			continue;
		for (size_t j = 0; j < rs->s->n_drives; j++)
			if (!strcmp(rs->s->drives[j].drive, d->id)) {
				int r = chain_new_layer(vm, d, rs->s->drives[j].layer, &rs->layers[i],
							err);

				if (r < 0)
					return r;
				break;
			}
	}
	return 0;
}

/* A restore that ends before the running QEMU was stopped leaves no layer
 * of its own behind. */
static void restore_layers_drop(struct restore *rs)
{
	for (size_t i = 0; rs->layers && i < rs->vm->def.n_drives; i++)
		if (rs->layers[i]) {
			unlinkat(rs->vm->dirfd, rs->layers[i], 0);
			state_remove_layer(&rs->vm->st, rs->layers[i]);
		}
}

/* The fresh layers become the active ones; the discarded current layers
 * go unless a snapshot needs them. */
static int restore_layers(struct restore *rs, qsnap_error *err)
{
	qsnap_vm *vm = rs->vm;
	int r;

	for (size_t i = 0; i < vm->def.n_drives; i++)
		if (rs->layers[i])
			state_set_active(&vm->st, vm->def.drives[i].id, rs->layers[i]);
	free(vm->st.current);
	vm->st.current = xstrdup(rs->name);
	r = vm_write_state(vm, err);
	return r < 0 ? r : chain_gc(vm, err);
}

static int restore_launch(struct restore *rs, qsnap_error *err)
{
	bool eager = false;
	int r = restore_ram_prepare(rs, err);

	if (r < 0)
		return r;
	rs->stage = RESTORE_RAM;
	r = vm_launch(rs->vm, &rs->l, err);
	if (r < 0)
		return r;
	rs->stage = RESTORE_LAUNCHED;
	r = restore_ram_guard(rs, &eager, err);
	if (r < 0 || !eager)
		return r;
	/* The mapping must not stay: the same restore again, eagerly. */
	r = vm_kill_qemu(rs->vm, 0, err);
	if (r < 0)
		return r;
	rs->stage = RESTORE_STOPPED;
	return restore_launch(rs, err);
}

/* The saved state into the new QEMU. */
static int restore_load(struct restore *rs, qsnap_error *err)
{
	const struct snapshot *s = rs->s;
	struct qmp *q = rs->vm->qmp;
	_cleanup_free_ char *vmstate = NULL;
	struct stat st;
	int r;

	/* A stopped VM's QEMU is asked only now (restore_check_machine asks a
	 * running one before anything is touched). */
	if (s->format == VMSTATE_MAPPED_RAM && !migrate_can_map(q))
		return qerr(err, ENOTSUP, "snapshot '%s' is in QEMU's %s format (saved on QEMU %s), which this QEMU (%s) cannot read: restore it with QEMU >= 9.0 (\"qemu\" in vm.json)",
			    rs->name, vmstate_format_name(s->format), s->qemu_version ? s->qemu_version : "(unknown)",
			    caps_version(q));
	r = migrate_setup(q,
			  &(struct mig_setup){.incoming = true,
					      /* A differential snapshot's stream has the
					       * pages written since its RAM file. */
					      .ignore_shared = s->mode == QSNAP_RAM_SHARED && !s->ram_base,
					      .mapped = s->format == VMSTATE_MAPPED_RAM,
					      .channels = rs->vm->def.multifd_channels},
			  err);
	if (r < 0)
		return r;
	/* QEMU reads a plain stream itself: measured here, reading it through
	 * a pump of ours (O_DIRECT) was slower than QEMU's page-cache reads. */
	if (s->compressed) {
		vmstate = snapshot_vmstate(s);
		r = pump_start(PUMP_DECOMPRESS, rs->fd, 0, vmstate, &rs->pump, &rs->qemu_fd, err);
		if (r < 0)
			return r;
	} else if (s->n_ram_chain) {
		r = restore_chain_start(rs, &rs->qemu_fd, err);
		if (r < 0)
			return r;
	}
	r = migrate_pass(q, INCOMING_FD_NAME, rs->qemu_fd >= 0 ? rs->qemu_fd : rs->fd,
			 rs->qemu_fd < 0, &rs->tgt, err);
	closep(&rs->qemu_fd);
	if (r < 0)
		return r;
	fstat(rs->fd, &st);
	rs->stage = RESTORE_LOADING;
	r = migrate_run(q, &rs->tgt,
			&(struct mig_wait){
				.incoming = true,
				.timeout_s = rs->opts->timeout > 0 ? rs->opts->timeout
								   : DEFAULT_RESTORE_TIMEOUT,
				.phase = "restore",
				.progress = rs->opts->progress,
				.userdata = rs->opts->userdata,
				.fd = rs->feed ? -1 : rs->fd,
				.pump = rs->pump,
				.total = s->compressed || rs->feed ? 0 : (uint64_t)st.st_size,
			},
			err);
	if (r < 0)
		return r;
	migrate_release(q, &rs->tgt);
	r = restore_chain_finish(rs, false, now_ms() + PUMP_END_MS, err);
	if (r < 0)
		return r;
	return pump_finish(TAKE_PTR(rs->pump), now_ms() + PUMP_END_MS, vm_cancel_fd(rs->vm), err);
}

/* A RAM file mapped copy-on-write holds the snapshot's RAM now: the next
 * differential save writes what changes from here (ram_chain.c). */
static int restore_mark_parent(struct restore *rs, qsnap_error *err)
{
	if (rs->ram_how != RAM_MAP || !rs->s->vmstate_checksum || rs->s->compressed)
		return 0;
	free(rs->vm->st.ram_parent);
	rs->vm->st.ram_parent = xstrdup(rs->s->vmstate_checksum);
	return vm_write_state(rs->vm, err);
}

static int restore_undo(struct restore *rs, int r, qsnap_error *err)
{
	qsnap_error e2;
	bool died;

	switch (rs->stage) {
	case RESTORE_CHECKED: /* failures before anything changed say so themselves */
		restore_ram_drop(rs);
		restore_layers_drop(rs);
		return r;
	case RESTORE_STOPPED:
	case RESTORE_RAM:
		/* QEMU did not start: the fresh RAM file is ours to remove. */
		restore_ram_drop(rs);
		return qerr_prefix(err, "restoring '%s' failed; the VM is stopped", rs->name);
	case RESTORE_LAUNCHED:
	case RESTORE_LOADING:
		break;
	}
	vm_cancel_hold(rs->vm, UNDO_GRACE_MS);
	died = !vm_qemu_alive(rs->vm);
	vm_kill_qemu(rs->vm, 1, &e2);
	/* With QEMU gone, its end of the pipe is closed: the pump ends. */
	closep(&rs->qemu_fd);
	restore_chain_finish(rs, true, 0, &e2);
	/* A damaged compressed file says so more clearly than QEMU. */
	if (rs->pump && pump_discard(TAKE_PTR(rs->pump), now_ms() + UNDO_GRACE_MS, &e2) < 0 &&
	    r != -ECANCELED)
		qerr(err, e2.code, "%s", e2.msg);
	/* QEMU that stays up after a failed load (exit-on-error off) logs more
	 * than query-migrate says ("error while loading state section id
	 * 2(ram)" against "load of migration failed: Invalid argument", QEMU
	 * 10.0.2). */
	if (r != -ECANCELED && (died || rs->stage == RESTORE_LOADING))
		vm_err_qemu_log(rs->vm, err);
	return qerr_prefix(err, "restoring '%s' failed; the VM is stopped", rs->name);
}

int restore_into(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts, bool paused,
		 qsnap_error *err)
{
	struct restore rs = {.vm = vm, .name = name, .opts = opts, .paused = paused,
			     .l = {.incoming = true, .timeout = RESTORE_QMP_TIMEOUT}, .fd = -1, .qemu_fd = -1};
	int r;

	r = find_snapshot(vm, name, &rs.s, err);
	if (r < 0)
		return r;
	vm_set_notice(vm, NULL);
	r = restore_check_files(vm, rs.s, &rs.fd, err);
	if (r >= 0)
		r = restore_check_machine(vm, rs.s, err);
	if (r >= 0)
		r = restore_ram_plan(&rs, err);
	if (r >= 0)
		r = restore_layers_make(&rs, err);
	rs.l.machine = rs.s->machine;
	if (r >= 0 && (r = vm_kill_qemu(vm, 0, err)) >= 0)
		rs.stage = RESTORE_STOPPED;
	if (r >= 0 && (r = restore_layers(&rs, err)) >= 0 && (r = restore_launch(&rs, err)) >= 0 &&
	    (r = restore_load(&rs, err)) >= 0 && (r = restore_mark_parent(&rs, err)) >= 0 &&
	    rs.s->was_running && !paused)
		r = vm_cont(vm, err);
	if (r < 0)
		r = restore_undo(&rs, r, err);
	closep(&rs.fd);
	closep(&rs.qemu_fd);
	free(rs.ram);
	free(rs.ram_early);
	for (size_t i = 0; rs.layers && i < vm->def.n_drives; i++)
		free(rs.layers[i]);
	free(rs.layers);
	/* The old QEMU's RAM was freed while the new one started. */
	vm_ram_settle(vm);
	return r;
}

int qsnap_vm_restore(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts,
		     qsnap_error *err)
{
	qsnap_restore_opts o;
	int r = sized_in(&o, sizeof(o), opts, "qsnap_restore_opts", err);

	if (r < 0)
		return r;
	vm_cancel_arm(vm);
	r = restore_into(vm, name, &o, false, err);
	vm_cancel_end(vm);
	return r;
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
