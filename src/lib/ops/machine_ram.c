/* SPDX-License-Identifier: MIT */
/* The VM's shared RAM file (shared-RAM mode): where it lives (a private
 * folder under /dev/shm unless vm.json says a --ram-dir), a fresh one for
 * each new QEMU, and removed with its QEMU. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

void vm_drop_ram(qsnap_vm *vm)
{
	/* A shared RAM file is ours and dies with its QEMU (it holds the
	 * guest's whole memory in /dev/shm); a copy-on-write one is a
	 * snapshot's and stays. */
	if (vm->st.ram_file && vm->st.ram_shared) {
		unlinkat(vm->dirfd, vm->st.ram_file, 0);
		/* The default folder under /dev/shm is ours too (a --ram-dir is
		 * the user's): gone when empty, so none pile up. */
		if (!vm->def.ram_dir && vm->st.ram_file[0] == '/') {
			_cleanup_free_ char *dir = xstrdup(vm->st.ram_file);
			*strrchr(dir, '/') = '\0';
			rmdir(dir);
		}
	}
	free(TAKE_PTR(vm->st.ram_file));
	vm->st.ram_shared = false;
}

int vm_ram_dir(qsnap_vm *vm, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct stat st;

	if (vm->def.ram_dir) {
		dir = xstrdup(vm->def.ram_dir);
	} else {
		/* One private folder per VM directory (device and inode tell
		 * two apart even when they share a name). */
		_cleanup_free_ char *top = xasprintf("/dev/shm/qsnap-%u", (unsigned)geteuid());
		const char *base = strrchr(vm->dir, '/');

		if (mkdir(top, 0700) < 0 && errno != EEXIST)
			return qerr(err, errno, "cannot create %s: %s", top, strerror(errno));
		if (fstat(vm->dirfd, &st) < 0)
			return qerr(err, errno, "cannot stat %s: %s", vm->dir, strerror(errno));
		dir = xasprintf("%s/%s.%lx.%lx", top, base ? base + 1 : "vm", (unsigned long)st.st_dev,
				(unsigned long)st.st_ino);
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return qerr(err, errno, "cannot create the RAM directory %s: %s", dir, strerror(errno));
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return qerr(err, EPERM, "the RAM directory %s is not a directory of this user", dir);
	*ret = TAKE_PTR(dir);
	return 0;
}

int vm_new_ram_file(qsnap_vm *vm, char **ret_path, qsnap_error *err)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	r = vm_ram_dir(vm, &dir, err);
	if (r < 0)
		return r;
	path = xasprintf("%s/ram", dir);
	unlink(path);
	/* A guest that touches a page the RAM directory has no room for gets
	 * QEMU killed by SIGBUS: make sure all of it fits before starting. */
	r = ramfile_check_space(AT_FDCWD, dir, vm->def.memory, "the guest's RAM", err);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return qerr(err, errno, "cannot create %s: %s", path, strerror(errno));
	if (ftruncate(fd, (off_t)vm->def.memory) < 0) {
		r = qerr(err, errno, "cannot size %s: %s", path, strerror(errno));
		unlink(path);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}
