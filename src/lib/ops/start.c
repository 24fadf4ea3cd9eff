/* SPDX-License-Identifier: MIT */
/* Starting and stopping a VM, its status, and QMP commands passed through. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>

#include "ops/ops.h"

int qsnap_vm_stop(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	int r;

	/* Cancelled, the wait for QEMU to quit ends in SIGKILL. */
	vm_cancel_arm(vm);
	r = vm_kill_qemu(vm, timeout, err);
	vm_cancel_end(vm);
	/* Stopped means the guest's memory is back. */
	vm_ram_settle(vm);
	return r;
}

static int start(qsnap_vm *vm, const qsnap_start_opts *opts, qsnap_error *err)
{
	qsnap_start_opts o;
	_cleanup_free_ char *ram = NULL;
	struct launch l = {0};
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_start_opts", err)) < 0)
		return r;
	opts = &o;
	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is already running (pid %d): stop it first, or use qsnap restore",
			    vm->dir, (int)vm->st.qemu_pid);
	if (opts->from) {
		qsnap_restore_opts ro = {.size = sizeof(ro),
					 .timeout = opts->timeout,
					 .lazy = opts->lazy,
					 .progress = opts->progress,
					 .userdata = opts->userdata};
		return restore_into(vm, opts->from, &ro, opts->paused, err);
	}
	vm_forget_qemu(vm);
	l.timeout = opts->timeout;
	if (vm->def.ram_mode == QSNAP_RAM_SHARED) {
		r = vm_new_ram_file(vm, &ram, err);
		if (r < 0)
			return r;
		l.ram_file = ram;
		l.ram_share = true;
	}
	r = vm_launch(vm, &l, err);
	if (r < 0) {
		if (ram)
			unlink(ram);
		return r;
	}
	if (!opts->paused) {
		r = vm_cont(vm, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int qsnap_vm_start(qsnap_vm *vm, const qsnap_start_opts *opts, qsnap_error *err)
{
	int r;

	vm_cancel_arm(vm);
	r = start(vm, opts, err);
	vm_cancel_end(vm);
	return r;
}

const char *qsnap_run_state_name(qsnap_run_state s)
{
	switch (s) {
	case QSNAP_RUNNING:
		return "running";
	case QSNAP_PAUSED:
		return "paused";
	case QSNAP_CRASHED:
		return "crashed";
	default:
		return "stopped";
	}
}

int qsnap_vm_status(qsnap_vm *vm, qsnap_status **ret, qsnap_error *err)
{
	qsnap_status st = {0};

	if (vm->st.qemu_pid) {
		if (!vm_qemu_alive(vm)) {
			st.state = QSNAP_CRASHED;
		} else {
			bool running = false;
			qsnap_error e2;
			int lockfd = -1;

			st.pid = vm->st.qemu_pid;
			/* QEMU serves one QMP client at a time: while another qsnap
			 * command holds the VM, do not wait behind it. */
			if (vm->readonly) {
				lockfd = openat(vm->dirfd, "lock", O_RDONLY | O_CLOEXEC);
				if (lockfd >= 0 && flock(lockfd, LOCK_SH | LOCK_NB) < 0) {
					st.qemu_status = xstrdup("busy");
					st.state = QSNAP_RUNNING;
				}
			}
			if (!st.qemu_status) {
				if (vm_query_status(vm, &st.qemu_status, &running, &e2) < 0)
					st.qemu_status = xstrdup("unreachable");
				st.state = running ? QSNAP_RUNNING : QSNAP_PAUSED;
			}
			if (lockfd >= 0)
				close(lockfd);
		}
	}
	st.current = xstrdup_or_null(vm->st.current);
	st.n_snapshots = vm->st.n_snapshots;
	st.ram_mode = vm->def.ram_mode;
	if (st.pid && vm->st.ram_file) {
		st.ram_file = xstrdup(vm->st.ram_file);
		st.ram_lazy = !vm->st.ram_shared;
	}
	st.drives = xcalloc(vm->def.n_drives + 1, sizeof(*st.drives));
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		qsnap_drive_status *ds = st.drives[st.n_drives++] = xcalloc(1, sizeof(*ds));
		struct active *a = d->readonly ? NULL : state_active(&vm->st, d->id);
		const char **layers = NULL;
		size_t n = chain_layers(&vm->st, a ? a->layer : NULL, &layers);

		ds->id = xstrdup(d->id);
		ds->readonly = d->readonly;
		ds->chain = xcalloc(n + 1, sizeof(char *));
		ds->chain[ds->n_chain++] = xstrdup(d->path);
		for (size_t j = 0; j < n; j++)
			ds->chain[ds->n_chain++] = xstrdup(layers[j]);
		free(layers);
	}
	(void)err;
	*ret = xmalloc(sizeof(st));
	**ret = st;
	return 0;
}

void qsnap_status_free(qsnap_status *st)
{
	if (!st)
		return;
	free(st->qemu_status);
	free(st->current);
	free(st->ram_file);
	for (size_t i = 0; i < st->n_drives; i++) {
		free(st->drives[i]->id);
		for (size_t j = 0; j < st->drives[i]->n_chain; j++)
			free(st->drives[i]->chain[j]);
		free(st->drives[i]->chain);
		free(st->drives[i]);
	}
	free(st->drives);
	free(st);
}

int qsnap_vm_qmp(qsnap_vm *vm, const char *command, const char *args_json, char **ret_json,
		 qsnap_error *err)
{
	_cleanup_json_ json_object *reply = NULL;
	json_object *args = NULL;
	struct qmp *q;
	int r;

	if (args_json) {
		args = json_tokener_parse(args_json);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			return qerr(err, EINVAL, "the arguments of '%s' must be a JSON object, e.g. '{\"device\": \"x\"}'",
				    command);
		}
	}
	r = vm_qmp(vm, &q, err);
	if (r < 0) {
		json_object_put(args);
		return r;
	}
	r = qmp_execute(q, command, args, &reply, 0, err);
	if (r < 0)
		return r;
	*ret_json = xstrdup(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY |
								     JSON_C_TO_STRING_NOSLASHESCAPE));
	return 0;
}

