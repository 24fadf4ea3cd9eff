/* SPDX-License-Identifier: MIT */
/* Publishing a drive: one standalone image of its layer chain as it was at
 * a snapshot (or as it is, for a stopped VM), for later VMs to use as their
 * base. qemu-img convert reads the whole chain and writes an image with no
 * backing file; it goes to a temporary name beside the output, passes
 * qemu-img check, and only then takes the output's name. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

/* Replacing the output must not overwrite a file the VM itself uses. */
static int check_not_ours(qsnap_vm *vm, const char *output, qsnap_error *err)
{
	struct stat out, st;

	if (stat(output, &out) < 0)
		return 0;
	for (size_t i = 0; i < vm->def.n_drives; i++)
		if (stat(vm->def.drives[i].path, &st) == 0 && st.st_dev == out.st_dev &&
		    st.st_ino == out.st_ino)
			return qerr(err, EINVAL, "%s is the base image of drive '%s' of %s: publish to another file",
				    output, vm->def.drives[i].id, vm->dir);
	for (size_t i = 0; i < vm->st.n_layers; i++)
		if (fstatat(vm->dirfd, vm->st.layers[i].path, &st, 0) == 0 &&
		    st.st_dev == out.st_dev && st.st_ino == out.st_ino)
			return qerr(err, EINVAL, "%s is layer %s of %s: publish to another file", output,
				    vm->st.layers[i].path, vm->dir);
	return 0;
}

/* The top of a drive's chain at a snapshot, or now. */
static int chain_top(qsnap_vm *vm, const qsnap_drive_def *d, const char *at, const char **ret_layer,
		     qsnap_error *err)
{
	struct snapshot *s;
	int r;

	*ret_layer = NULL;
	if (d->readonly)
		return 0; /* no layers: the base image is all there is */
	if (!at) {
		struct active *a = state_active(&vm->st, d->id);

		if (!a)
			return qerr(err, EINVAL, "state.json of %s has no active layer for drive '%s'",
				    vm->dir, d->id);
		*ret_layer = a->layer;
		return 0;
	}
	r = find_snapshot(vm, at, &s, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_drives; i++)
		if (!strcmp(s->drives[i].drive, d->id)) {
			*ret_layer = s->drives[i].layer;
			return 0;
		}
	return qerr(err, ENOENT, "snapshot '%s' has no state for drive '%s' (was the drive added to vm.json after the snapshot?)",
		    at, d->id);
}

char *drive_ids(const qsnap_def *def)
{
	char *list = xstrdup("");

	for (size_t i = 0; i < def->n_drives; i++) {
		char *n = xasprintf("%s%s%s", list, i ? ", " : "", def->drives[i].id);
		free(list);
		list = n;
	}
	return list;
}

int qsnap_vm_publish(qsnap_vm *vm, const char *drive, const char *output,
		     const qsnap_publish_opts *opts, qsnap_error *err)
{
	qsnap_publish_opts o;
	const char *format, *layer;
	const qsnap_drive_def *d;
	_cleanup_free_ char *src = NULL, *tmp = NULL;
	_cleanup_free_ char *img = qemu_img_for(vm->def.qemu);
	bool alive;
	struct stat st;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_publish_opts", err)) < 0)
		return r;
	opts = &o;
	if (opts->format != QSNAP_IMAGE_QCOW2 && opts->format != QSNAP_IMAGE_RAW)
		return qerr(err, EINVAL, "unknown image format %d: use QSNAP_IMAGE_QCOW2 or QSNAP_IMAGE_RAW",
			    (int)opts->format);
	format = qsnap_image_format_name(opts->format);
	if (opts->compress && opts->format != QSNAP_IMAGE_QCOW2)
		return qerr(err, EINVAL, "only qcow2 images can be compressed: leave out --compress or use --format qcow2");
	d = def_drive(&vm->def, drive);
	if (!d) {
		_cleanup_free_ char *have = drive_ids(&vm->def);
		return qerr(err, ENOENT, "drive '%s' is not in %s/vm.json (have: %s)", drive, vm->dir,
			    have);
	}
	alive = vm_qemu_alive(vm);
	if (alive && !opts->at && !d->readonly)
		return qerr(err, EBUSY, "the VM in %s is running, so drive '%s' changes while it would be read: publish a snapshot with --at NAME (make one with qsnap save), or stop the VM first",
			    vm->dir, drive);
	r = chain_top(vm, d, opts->at, &layer, err);
	if (r < 0)
		return r;
	if (lstat(output, &st) == 0) {
		if (!opts->replace)
			return qerr(err, EEXIST, "%s exists: choose another name, or pass --replace",
				    output);
		if (!S_ISREG(st.st_mode))
			return qerr(err, EINVAL, "%s exists and is not a regular file: choose another name",
				    output);
		r = check_not_ours(vm, output, err);
		if (r < 0)
			return r;
	}
	r = output_beside(output, "partial", &tmp, err);
	if (r < 0)
		return r;
	src = layer ? vm_path(vm, layer) : xstrdup(d->path);
	unlink(tmp);
	r = img_convert(&(struct img_convert){
				  .qemu_img = img,
				  .src = src,
				  .src_format = layer ? "qcow2" : d->format,
				  .force_share = alive,
				  .dst = tmp,
				  .dst_format = format,
				  .compress = opts->compress,
				  .phase = "publish",
				  .progress = opts->progress,
				  .userdata = opts->userdata,
			  },
			  err);
	if (r >= 0)
		r = img_check(img, tmp, format, err);
	if (r >= 0)
		r = fsync_file(AT_FDCWD, tmp, err);
	if (r >= 0)
		r = output_take(tmp, output, opts->replace, err);
	if (r < 0) {
		unlink(tmp);
		return qerr_prefix(err, "publishing drive '%s' of %s to %s failed", drive, vm->dir,
				   output);
	}
	{
		_cleanup_free_ char *c = xstrdup(output);

		return fsync_dir(AT_FDCWD, dirname(c), err);
	}
}
