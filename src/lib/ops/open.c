/* SPDX-License-Identifier: MIT */
/* Opening a VM directory under its lock, and finishing or undoing what an
 * interrupted command left behind: each operation undoes its own
 * (save_recover, restore_recover, machine_recover); stray files go. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "ops/ops.h"

const qsnap_def *qsnap_vm_def(qsnap_vm *vm)
{
	return &vm->def;
}

const char *qsnap_vm_dir(qsnap_vm *vm)
{
	return vm->dir;
}

/* Files that an interrupted command made before state.json named them:
 * layers that qemu-img created for a save or a restore, a snapshot
 * directory renamed into place just before the state naming it was
 * written. Under the lock state.json is the whole truth, so a *.qcow2 in
 * layers/ or an entry of snapshots/ that it does not name is garbage (new
 * kinds of files in those two directories must be named in state.json). */
static void sweep_strays(qsnap_vm *vm)
{
	static const char *const dirs[] = {VMDIR_LAYERS, VMDIR_SNAPSHOTS};

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int fd = openat(vm->dirfd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;

		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while ((de = readdir(d))) {
			_cleanup_free_ char *rel = xasprintf("%s/%s", dirs[i], de->d_name);
			const char *dot = strrchr(de->d_name, '.');
			bool known = false;

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (i == 0) {
				if (!dot || strcmp(dot, ".qcow2") || state_layer(&vm->st, rel))
					continue;
			} else {
				for (size_t j = 0; j < vm->st.n_snapshots; j++)
					known = known || !strcmp(vm->st.snapshots[j].dir, rel);
				if (known || (vm->st.pending && !strcmp(vm->st.pending, rel)))
					continue;
			}
			rm_rf(fd, de->d_name);
		}
		closedir(d);
	}
}

/* Finish or undo what an interrupted command left behind. */
static int recover(qsnap_vm *vm, qsnap_error *err)
{
	int r;

	machine_end_orphan(vm);
	if (vm->st.pending)
		r = save_recover(vm, err);
	else if ((r = machine_recover(vm, err)) >= 0)
		r = restore_recover(vm, err);
	if (r >= 0) {
		sweep_strays(vm);
		/* The staging directory of a pull into this VM that was killed. */
		sweep_stale(vm->dirfd, ".qsnap-pull-", ".qsnap-pull-");
	}
	return r;
}

/* A handle with nothing open but its cancellation eventfd. */
static qsnap_vm *vm_new(qsnap_error *err)
{
	qsnap_vm *vm = xcalloc(1, sizeof(*vm));

	vm->dirfd = vm->lockfd = -1;
	vm->qmp_bounds.cancel_fd = -1;
	vm->cancelfd = cancel_new();
	if (vm->cancelfd < 0) {
		qerr(err, errno, "cannot create an eventfd: %s", strerror(errno));
		free(vm);
		return NULL;
	}
	return vm;
}

int qsnap_vm_open(const char *dir, unsigned flags, int lock_timeout, qsnap_vm **ret_vm,
		  qsnap_error *err)
{
	qsnap_vm *vm = vm_new(err);
	int r;

	if (!vm)
		return -err->code;
	vm->readonly = flags & QSNAP_OPEN_READONLY;
	r = vmdir_open(vm, dir, err);
	if (r >= 0 && !vm->readonly)
		r = vmdir_lock(vm,
			       lock_timeout == 0  ? QSNAP_DEFAULT_LOCK_TIMEOUT
			       : lock_timeout < 0 ? 0 /* QSNAP_NO_WAIT */
						  : lock_timeout,
			       err);
	if (r >= 0)
		r = vmdir_load(vm, err);
	if (r < 0)
		goto fail;
	if (!vm->readonly) {
		r = recover(vm, err);
		if (r < 0)
			goto fail;
	}
	*ret_vm = vm;
	return 0;
fail:
	qsnap_vm_close(vm);
	return r;
}

int vm_adopt(const char *dir, int dirfd, int lockfd, qsnap_vm **ret_vm, qsnap_error *err)
{
	qsnap_vm *vm = vm_new(err);
	struct stat st;
	int r;

	if (!vm) {
		close(dirfd);
		close(lockfd);
		return -err->code;
	}

	vm->dir = xstrdup(dir);
	vm->dirfd = dirfd;
	vm->lockfd = lockfd;
	if (fstat(dirfd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		r = qerr(err, EBADF, "%s: no VM directory was handed over", dir);
		goto fail;
	}
	/* Held already on this open file description: it stays ours. Anyone
	 * else holding it means the handover went wrong. */
	if (flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		r = qerr(err, errno, "%s: the VM's lock was not handed over: %s", dir,
			 strerror(errno));
		goto fail;
	}
	r = vmdir_load(vm, err);
	if (r < 0)
		goto fail;
	*ret_vm = vm;
	return 0;
fail:
	qsnap_vm_close(vm);
	return r;
}

void qsnap_vm_close(qsnap_vm *vm)
{
	if (!vm)
		return;
	vm_ram_settle(vm);
	vm_qmp_close(vm);
	free(vm->notice);
	def_clear(&vm->def);
	state_free(&vm->st);
	if (vm->lockfd >= 0)
		close(vm->lockfd);
	if (vm->cancelfd >= 0)
		close(vm->cancelfd);
	if (vm->dirfd >= 0)
		close(vm->dirfd);
	free(vm->dir);
	free(vm);
}


void qsnap_vm_cancel(qsnap_vm *vm)
{
	if (vm)
		cancel_raise(vm->cancelfd);
}
