/* SPDX-License-Identifier: MIT */
/* The VM's shared RAM file (shared-RAM mode): where it lives (a private
 * folder under /dev/shm unless vm.json says a --ram-dir), a fresh one for
 * each new QEMU, and removed with its QEMU. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/ops.h"

static void *release_thread(void *arg)
{
	close((int)(intptr_t)arg);
	return NULL;
}

void vm_ram_settle(qsnap_vm *vm)
{
	if (vm->ram_releasing)
		pthread_join(vm->ram_release, NULL);
	vm->ram_releasing = false;
}

/* Freeing the pages of a removed RAM file takes long (0.12 s for 2 GiB in
 * /dev/shm, measured here) and holds up nothing but the call's return: a
 * restore starts its new QEMU meanwhile. They go with the last
 * descriptor, which a thread closes. */
static void release_in_background(qsnap_vm *vm, int fd)
{
	vm_ram_settle(vm);
	if (pthread_create(&vm->ram_release, NULL, release_thread, (void *)(intptr_t)fd) == 0)
		vm->ram_releasing = true;
	else
		close(fd);
}

void vm_drop_ram(qsnap_vm *vm)
{
	/* A shared RAM file is ours and dies with its QEMU (it holds the
	 * guest's whole memory in /dev/shm); a copy-on-write one is a
	 * snapshot's and stays. */
	if (vm->st.ram_file && vm->st.ram_shared) {
		int fd = openat(vm->dirfd, vm->st.ram_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		unlinkat(vm->dirfd, vm->st.ram_file, 0);
		if (fd >= 0)
			release_in_background(vm, fd);
		/* The default folder under /dev/shm is ours too (a --ram-dir is
		 * the user's): gone when empty, so none pile up. */
		if (!vm->def.ram_dir && vm->st.ram_file[0] == '/') {
			_cleanup_free_ char *dir = xstrdup(vm->st.ram_file);
			*strrchr(dir, '/') = '\0';
			rmdir(dir);
		}
	}
	free(TAKE_PTR(vm->st.ram_file));
	free(TAKE_PTR(vm->st.ram_parent));
	vm->st.ram_shared = false;
}

/* A folder on the way to the RAM file (name, relative to atfd; shown in
 * messages): made 0700 when missing, opened without following a symbolic
 * link, and checked on that descriptor: a directory of this user and, when
 * private (qsnap's own under /dev/shm), closed to everyone else. Another
 * local user who owns it could swap the RAM file and share the guest's
 * memory. */
static int ram_folder(int atfd, const char *name, const char *shown, bool private,
		      int *ret_fd, qsnap_error *err)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (mkdirat(atfd, name, 0700) < 0 && errno != EEXIST)
		return qerr(err, errno, "cannot create the RAM folder %s: %s", shown, strerror(errno));
	/* O_PATH: a folder of another user is stat-ed, not refused unread. */
	fd = openat(atfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
		bool link = fstatat(atfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);

		return qerr(err, EPERM, "the RAM folder %s is %s, not a directory: qsnap does not follow it; remove it%s",
			    shown, link ? "a symbolic link" : "a file",
			    private ? "" : " or set another with qsnap config --ram-dir");
	}
	if (fd < 0)
		return qerr(err, errno, "cannot open the RAM folder %s: %s", shown, strerror(errno));
	if (fstat(fd, &st) < 0)
		return qerr(err, errno, "cannot stat the RAM folder %s: %s", shown, strerror(errno));
	if (st.st_uid != geteuid())
		return qerr(err, EPERM, "the RAM folder %s belongs to uid %u, not to this user (uid %u): it may be another user's trap for the guest's RAM; remove it%s",
			    shown, (unsigned)st.st_uid, (unsigned)geteuid(),
			    private ? "" : " or set another with qsnap config --ram-dir");
	if (private && (st.st_mode & 077))
		return qerr(err, EPERM, "the RAM folder %s has mode %04o: other users could reach the guest's RAM; make it 0700 (chmod 700 %s) or remove it",
			    shown, (unsigned)(st.st_mode & 07777), shown);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int vm_ram_dir(qsnap_vm *vm, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int topfd = -1, fd = -1;
	struct stat st;
	int r;

	if (vm->def.ram_dir) {
		/* The user's folder: theirs, not a symbolic link. */
		dir = xstrdup(vm->def.ram_dir);
		r = ram_folder(AT_FDCWD, dir, dir, false, &fd, err);
	} else {
		/* One private folder per VM directory (device and inode tell
		 * two apart even when they share a name), in this user's own
		 * folder: both checked, as /dev/shm is everyone's. */
		_cleanup_free_ char *top = xasprintf("/dev/shm/qsnap-%u", (unsigned)geteuid());
		_cleanup_free_ char *leaf = NULL;
		const char *base = strrchr(vm->dir, '/');

		if (fstat(vm->dirfd, &st) < 0)
			return qerr(err, errno, "cannot stat %s: %s", vm->dir, strerror(errno));
		r = ram_folder(AT_FDCWD, top, top, true, &topfd, err);
		if (r < 0)
			return r;
		leaf = xasprintf("%s.%lx.%lx", base ? base + 1 : "vm", (unsigned long)st.st_dev,
				 (unsigned long)st.st_ino);
		dir = xasprintf("%s/%s", top, leaf);
		r = ram_folder(topfd, leaf, dir, true, &fd, err);
	}
	if (r < 0)
		return r;
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
