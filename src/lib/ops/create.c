/* SPDX-License-Identifier: MIT */
/* Creating a VM directory (qsnap init): the definition checked, its drives'
 * formats found out, the layout made, one empty layer on every writable
 * drive; nothing is left behind when it fails. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

/* Find out the format of an image with qemu-img. */
static int image_format(const char *qemu, const char *path, char **ret_format, qsnap_error *err)
{
	_cleanup_free_ char *img = qemu_img_for(qemu);
	struct img_info info;
	int r = img_info(img, NULL, path, NULL, true, &info, err);

	if (r < 0)
		return r;
	*ret_format = TAKE_PTR(info.format);
	img_info_free(&info);
	return 0;
}

static int check_drive_formats(qsnap_def *def, qsnap_error *err)
{
	for (size_t i = 0; i < def->n_drives; i++) {
		qsnap_drive_def *d = &def->drives[i];
		_cleanup_free_ char *fmt = NULL;
		int r = image_format(def->qemu, d->path, &fmt, err);

		if (r == -ENOENT) /* qemu-img itself is missing: the message says so */
			return r;
		if (r < 0)
			return qerr_prefix(err, "drive '%s': %s is not a readable disk image", d->id,
					   d->path);
		if (strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))
			return qerr(err, EINVAL, "drive '%s': %s is a %s image; qsnap takes qcow2 or raw (convert it with qemu-img convert -O qcow2)",
				    d->id, d->path, fmt);
		if (d->format && strcmp(d->format, fmt))
			return qerr(err, EINVAL, "drive '%s': %s is %s, not %s as given: fix format= or leave it out",
				    d->id, d->path, fmt, d->format);
		if (!d->format)
			d->format = TAKE_PTR(fmt);
	}
	return 0;
}

/* QEMU runs in the VM directory: user paths must not be relative. */
static void make_absolute(char **path)
{
	char real[PATH_MAX];

	if (*path && (*path)[0] != '/' && realpath(*path, real)) {
		free(*path);
		*path = xstrdup(real);
	}
}

static int mkdir_vm(const char *dir, bool *ret_created, qsnap_error *err)
{
	DIR *d;
	struct dirent *de;

	if (mkdir(dir, 0755) == 0) {
		*ret_created = true;
		return 0;
	}
	if (errno != EEXIST)
		return qerr(err, errno, "cannot create %s: %s", dir, strerror(errno));
	d = opendir(dir);
	if (!d && errno == ENOTDIR)
		return qerr(err, EEXIST, "%s exists and is not a directory: choose a new directory", dir);
	if (!d)
		return qerr(err, errno, "cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			return qerr(err, EEXIST, "%s exists and is not empty: choose a new directory",
				    dir);
		}
	closedir(d);
	*ret_created = false;
	return 0;
}

int qsnap_vm_create(const char *dir, const qsnap_def *def_in, qsnap_error *err)
{
	qsnap_vm vm = {.dirfd = -1, .lockfd = -1, .cancelfd = -1, .qmp_bounds = {.cancel_fd = -1}};
	_cleanup_free_ char *text = NULL;
	bool created = false;
	char real[PATH_MAX];
	int r;

	/* Work on a copy: drive formats get filled in, paths made absolute. */
	def_copy(&vm.def, def_in);
	make_absolute(&vm.def.kernel);
	make_absolute(&vm.def.initrd);

	r = vmdef_check(&vm.def, err);
	if (r < 0)
		goto out;
	r = check_drive_formats(&vm.def, err);
	if (r < 0)
		goto out;
	r = mkdir_vm(dir, &created, err);
	if (r < 0)
		goto out;
	if (!realpath(dir, real)) {
		r = qerr(err, errno, "cannot resolve %s: %s", dir, strerror(errno));
		goto out;
	}
	vm.dir = xstrdup(real);
	vm.dirfd = open(vm.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (vm.dirfd < 0 || mkdirat(vm.dirfd, VMDIR_LAYERS, 0755) < 0 ||
	    mkdirat(vm.dirfd, VMDIR_SNAPSHOTS, 0755) < 0 || mkdirat(vm.dirfd, VMDIR_RUN, 0700) < 0) {
		r = qerr(err, errno, "cannot create the layout of %s: %s", dir, strerror(errno));
		goto undo;
	}
	r = vmdef_to_json(&vm.def, &text, err);
	if (r < 0)
		goto undo;
	r = write_file_atomic(vm.dirfd, VMDIR_DEF, text, strlen(text), err);
	if (r < 0)
		goto undo;
	for (size_t i = 0; i < vm.def.n_drives; i++) {
		_cleanup_free_ char *layer = NULL;

		if (vm.def.drives[i].readonly)
			continue;
		r = chain_new_layer(&vm, &vm.def.drives[i], NULL, &layer, err);
		if (r < 0)
			goto undo;
		state_set_active(&vm.st, vm.def.drives[i].id, layer);
	}
	r = vm_write_state(&vm, err);
	if (r < 0)
		goto undo;
	r = 0;
	goto out;
undo:
	/* Leave nothing behind: the directory as it was before. */
	if (vm.dirfd >= 0) {
		for (const char *const *p = (const char *const[]){VMDIR_LAYERS, VMDIR_SNAPSHOTS,
								    VMDIR_RUN, VMDIR_DEF, VMDIR_STATE,
								    VMDIR_DEF ".tmp", VMDIR_STATE ".tmp",
								    NULL};
		     *p; p++)
			rm_rf(vm.dirfd, *p);
	}
	if (created)
		rmdir(dir);
out:
	if (vm.dirfd >= 0)
		close(vm.dirfd);
	free(vm.dir);
	def_clear(&vm.def);
	state_free(&vm.st);
	return r;
}
