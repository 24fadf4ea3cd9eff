/* SPDX-License-Identifier: MIT */
/* What a restore checks before it touches the running VM: the snapshot's
 * files are there and look right, and the QEMU that will load it has its
 * machine type and can read its format. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

/* Everything the snapshot needs is there and looks right: checked before
 * the running VM is touched. Returns the opened machine state. */
int restore_check_files(qsnap_vm *vm, const struct snapshot *s, int *ret_fd, qsnap_error *err)
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
	if (s->mode == QSNAP_RAM_SHARED) {
		_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

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
	/* A differential snapshot's stream is small and QEMU would load a
	 * damaged page without noticing: checked every time. */
	if (s->ram_base && s->vmstate_checksum) {
		_cleanup_free_ char *sum = NULL;
		int r = checksum_fd(fd, path, &sum, err);

		if (r < 0)
			return r;
		lseek(fd, 0, SEEK_SET); /* QEMU reads from the fd's offset */
		if (strcmp(sum, s->vmstate_checksum))
			return qerr(err, EIO, "snapshot '%s': %s/%s does not match the checksum it was saved with (%s, expected %s): the machine state is damaged",
				    s->name, vm->dir, path, sum, s->vmstate_checksum);
	}
	for (size_t k = 1; k <= s->n_ram_chain; k++) {
		const struct ram_delta *d = &s->ram_chain[k - 1];
		_cleanup_free_ char *delta = snapshot_delta(s, k), *sum = NULL;
		int r = checksum_file(vm->dirfd, delta, &sum, err);

		if (r < 0)
			return qerr_prefix(err, "snapshot '%s' needs %s/%s", s->name, vm->dir, delta);
		if (strcmp(sum, d->checksum))
			return qerr(err, EIO, "snapshot '%s': %s/%s (the delta of '%s' it builds on) does not match the checksum it was saved with (%s, expected %s): the file is damaged",
				    s->name, vm->dir, delta, d->snapshot, sum, d->checksum);
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* The snapshot loads only into the machine type it was saved with: a QEMU
 * without it (one older than the snapshot's) is refused before the running
 * VM is touched. The running QEMU is asked; a stopped VM's binary (unless
 * it is the type this VM runs anyway) is asked with -machine help. */
/* Is the running QEMU the binary vm.json names (it may have been edited)? */
bool restore_running_binary_is_defs(qsnap_vm *vm)
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

int restore_check_machine(qsnap_vm *vm, const struct snapshot *s, qsnap_error *err)
{
	struct qmp *q;
	bool have = false;
	int r;

	if (s->format == VMSTATE_MAPPED_RAM && restore_running_binary_is_defs(vm) && vm_qmp(vm, &q, err) == 0 &&
	    !migrate_can_map(q))
		return qerr(err, ENOTSUP, "snapshot '%s' is in QEMU's %s format (saved on QEMU %s), which this QEMU (%s) cannot read: restore it with QEMU >= 9.0 (\"qemu\" in vm.json)",
			    s->name, vmstate_format_name(s->format), s->qemu_version ? s->qemu_version : "(unknown)",
			    caps_version(q));
	if (!s->machine)
		return 0;
	if (restore_running_binary_is_defs(vm) && vm_qmp(vm, &q, err) == 0) {
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
