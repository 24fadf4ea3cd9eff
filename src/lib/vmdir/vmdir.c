/* SPDX-License-Identifier: MIT */
/* The VM handle on a VM directory: opening it, reading vm.json and
 * state.json, writing state.json, finding a snapshot; and the two written
 * into a VM directory being made. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "vmdir/vmdir.h"

char *vm_path(qsnap_vm *vm, const char *rel)
{
	return xasprintf("%s/%s", vm->dir, rel);
}

void vm_set_notice(qsnap_vm *vm, const char *fmt, ...)
{
	va_list ap;

	free(TAKE_PTR(vm->notice));
	if (!fmt)
		return;
	va_start(ap, fmt);
	if (vasprintf(&vm->notice, fmt, ap) < 0)
		abort();
	va_end(ap);
}

const char *qsnap_vm_notice(qsnap_vm *vm)
{
	return vm->notice;
}

int vmdir_open(qsnap_vm *vm, const char *dir, qsnap_error *err)
{
	char real[PATH_MAX];
	struct stat st;

	if (!realpath(dir, real))
		return qerr(err, errno, "VM directory %s: %s", dir, strerror(errno));
	vm->dir = xstrdup(real);
	vm->dirfd = open(vm->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (vm->dirfd < 0)
		return qerr(err, errno, "VM directory %s: %s", dir, strerror(errno));
	if (fstat(vm->dirfd, &st) == 0 && st.st_uid != geteuid())
		return qerr(err, EPERM, "VM directory %s belongs to another user (uid %u): run qsnap as that user",
			    vm->dir, (unsigned)st.st_uid);
	if (faccessat(vm->dirfd, VMDIR_DEF, F_OK, 0) < 0)
		return qerr(err, ENOENT, "%s is not a qsnap VM directory (no " VMDIR_DEF "): create one with qsnap init",
			    vm->dir);
	return 0;
}

int vmdir_load(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL, *what = vm_path(vm, VMDIR_DEF);
	int r;

	r = read_file(vm->dirfd, VMDIR_DEF, &text, NULL, err);
	if (r < 0 || (r = vmdef_from_json(text, what, &vm->def, err)) < 0)
		return r;
	free(TAKE_PTR(text));
	free(what);
	what = vm_path(vm, VMDIR_STATE);
	r = read_file(vm->dirfd, VMDIR_STATE, &text, NULL, err);
	if (r < 0)
		return r;
	return state_from_json(text, what, &vm->st, err);
}

int vm_write_state(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = state_to_json(&vm->st, &text, err);
	if (r < 0)
		return r;
	r = write_file_atomic(vm->dirfd, VMDIR_STATE, text, strlen(text), err);
	return r < 0 ? qerr_prefix(err, "saving the state of %s", vm->dir) : 0;
}

int vmdir_write(int dirfd, const qsnap_def *def, const struct state *st, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = vmdef_to_json(def, &text, err);
	if (r >= 0)
		r = write_file_atomic(dirfd, VMDIR_DEF, text, strlen(text), err);
	free(TAKE_PTR(text));
	if (r >= 0)
		r = state_to_json(st, &text, err);
	if (r >= 0)
		r = write_file_atomic(dirfd, VMDIR_STATE, text, strlen(text), err);
	return r;
}

static char *snapshot_names(qsnap_vm *vm)
{
	char *list = xstrdup("");

	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		char *n = xasprintf("%s%s%s", list, i ? ", " : "", vm->st.snapshots[i].name);
		free(list);
		list = n;
	}
	return list;
}

int find_snapshot(qsnap_vm *vm, const char *name, struct snapshot **ret, qsnap_error *err)
{
	struct snapshot *s = qsnap_name_valid(name) ? state_snapshot(&vm->st, name) : NULL;

	if (!s) {
		_cleanup_free_ char *have = snapshot_names(vm);
		return qerr(err, ENOENT, "snapshot '%s' not found in %s (%s%s)", name, vm->dir,
			    *have ? "have: " : "there are no snapshots yet", have);
	}
	*ret = s;
	return 0;
}

static void cancel_apply(qsnap_vm *vm, struct qmp_bounds b)
{
	vm->qmp_bounds = b;
	if (vm->qmp)
		qmp_bound(vm->qmp, b);
}

int vm_cancel_fd(qsnap_vm *vm)
{
	return vm->cancel_armed ? vm->cancelfd : -1;
}

void vm_cancel_arm(qsnap_vm *vm)
{
	vm->cancel_armed = true;
	cancel_apply(vm, (struct qmp_bounds){.cancel_fd = vm->cancelfd});
}

void vm_cancel_hold(qsnap_vm *vm, int grace_ms)
{
	vm->cancel_armed = false;
	cancel_apply(vm, (struct qmp_bounds){.cancel_fd = -1, .limit = now_ms() + grace_ms});
}

void vm_cancel_end(qsnap_vm *vm)
{
	vm->cancel_armed = false;
	cancel_apply(vm, (struct qmp_bounds){.cancel_fd = -1});
	cancel_clear(vm->cancelfd);
}
