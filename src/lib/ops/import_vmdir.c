/* SPDX-License-Identifier: MIT */
/* An import's staged files made a VM directory: vm.json checked against
 * what the archive holds and given the final paths, the exported disks as
 * base images (images/), each with an empty frozen layer for the snapshot
 * and an active layer on top, as after a restore; the snapshot with its
 * meta.json, and state.json. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/import.h"

static int create_layer(const char *qemu_img, const char *stagedir, const char *backing,
			const char *backing_fmt, const char *name, qsnap_error *err)
{
	_cleanup_free_ char *cwd = layout_in(stagedir, VMDIR_LAYERS);

	return img_create(qemu_img, cwd, name, backing, backing_fmt, err);
}

static void repath(char **p, const char *root, const char *rel)
{
	free(*p);
	*p = layout_in(root, rel);
}

/* A shared-RAM snapshot's RAM file and a differential one's base and
 * chain, from the exported meta.json, held to the files the archive
 * brought (whose sizes and checksums the manifest checked): every delta
 * the chain names is there, with the size and checksum it was saved
 * with, and nothing else is. */
static int fill_ram(struct import *im, json_object *mo, struct snapshot *s, qsnap_error *err)
{
	const struct mfile *ram = import_find_mfile(im, EXPORT_RAM);
	const char *want = jstr(mo, "ram_checksum"), *base = jstr(mo, "ram_base");

	if (want && strcmp(want, ram->checksum))
		return qerr(err, EINVAL, "%s: %s is not the RAM file its snapshot was saved with (checksum %s, meta.json says %s): the archive is damaged",
			    im->input, EXPORT_RAM, ram->checksum, want);
	s->ram_checksum = xstrdup(ram->checksum);
	if (base && !qsnap_name_valid(base))
		return qerr(err, EINVAL, "%s: the meta.json of snapshot '%s' has a malformed ram_base",
			    im->input, im->name);
	s->ram_base = xstrdup_or_null(base);
	if (ram_chain_from_json(jarr(mo, "ram_chain"), s) < 0 || (s->n_ram_chain && !base))
		return qerr(err, EINVAL, "%s: the meta.json of snapshot '%s' has a malformed ram_chain",
			    im->input, im->name);
	for (size_t k = 1; k <= s->n_ram_chain; k++) {
		const struct ram_delta *d = &s->ram_chain[k - 1];
		_cleanup_free_ char *path = xasprintf(EXPORT_DELTA "%zu", k);
		const struct mfile *mf = import_find_mfile(im, path);

		if (!mf)
			return qerr(err, EINVAL, "%s has no %s (the delta of '%s' that snapshot '%s' builds on): the archive is incomplete",
				    im->input, path, d->snapshot, im->name);
		if (mf->size != d->size || strcmp(mf->checksum, d->checksum))
			return qerr(err, EINVAL, "%s: %s is not the delta of '%s' that snapshot '%s' builds on (checksum %s, meta.json says %s): the archive is damaged",
				    im->input, path, d->snapshot, im->name, mf->checksum, d->checksum);
	}
	for (size_t i = 0; i < im->n_files; i++)
		if (import_delta_index(im->files[i].path) > s->n_ram_chain)
			return qerr(err, EINVAL, "%s holds %s, which the chain of snapshot '%s' does not have: the archive is damaged",
				    im->input, im->files[i].path, im->name);
	return 0;
}

/* The snapshot's entry for state.json and meta.json, but for its drives:
 * what the manifest says of it and, from the exported meta.json (which the
 * manifest checks), the RAM size and what its machine state needs to load
 * (its format, QEMU version and machine type). */
static int fill_snapshot(struct import *im, struct snapshot *s, qsnap_error *err)
{
	_cleanup_json_ json_object *mo = im->meta ? json_tokener_parse(im->meta) : NULL;
	const struct mfile *vmstate = import_find_mfile(im, EXPORT_VMSTATE);
	const char *fmt = jstr(mo, "format"), *mode = jstr(mo, "mode");
	const char *sum = jstr(mo, "vmstate_checksum");

	if (fmt && strcmp(fmt, vmstate_format_name(VMSTATE_MAPPED_RAM)))
		return qerr(err, EINVAL, "%s: the snapshot's machine state has an unknown format '%s'",
			    im->input, fmt);
	if (mode && strcmp(mode, qsnap_ram_mode_name(im->mode)))
		return qerr(err, EINVAL, "%s: its manifest says the snapshot is '%s', its meta.json '%s': the archive is damaged",
			    im->input, qsnap_ram_mode_name(im->mode), mode);
	if (sum && strcmp(sum, vmstate->checksum))
		return qerr(err, EINVAL, "%s: %s is not the machine state its snapshot was saved with (checksum %s, meta.json says %s): the archive is damaged",
			    im->input, EXPORT_VMSTATE, vmstate->checksum, sum);
	s->name = xstrdup(im->name);
	s->parent = NULL; /* the export holds this snapshot alone */
	s->created = im->created;
	s->dir = layout_snapshot(im->name);
	s->mode = im->mode;
	s->was_running = im->was_running;
	s->vmstate_size = vmstate->size;
	s->memory = (uint64_t)jint(mo, "memory", 0);
	s->compressed = false; /* an export holds a plain machine state */
	s->vmstate_checksum = xstrdup(vmstate->checksum);
	s->format = fmt ? VMSTATE_MAPPED_RAM : VMSTATE_STREAM;
	s->qemu_version = xstrdup_or_null(jstr(mo, "qemu_version"));
	s->machine = xstrdup_or_null(jstr(mo, "machine"));
	return s->mode == QSNAP_RAM_SHARED ? fill_ram(im, mo, s, err) : 0;
}

int import_build_vm(struct import *im, const char *stagedir, const char *final, qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("vm.json in %s", im->input);
	_cleanup_free_ char *img = NULL;
	_cleanup_json_ json_object *mo = im->meta ? json_tokener_parse(im->meta) : NULL;
	struct foreign f = {.trust = im->opts->trust_config, .qemu = im->opts->qemu};
	struct state st = {0};
	struct snapshot *s;
	qsnap_def def;
	int r;

	r = vmdef_foreign(im->vmjson, what, &f, &def, &im->note, err);
	if (r < 0)
		return r;
	r = vmdef_foreign_meta(mo, &def, what, err);
	if (r < 0)
		goto out;
	/* The QEMU that will run it (this host's, or the one the user names)
	 * brings its qemu-img. */
	img = qemu_img_for(def.qemu);
	/* Every file vm.json names must have come in the archive. */
	for (size_t i = 0; i < def.n_drives; i++) {
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *want = xstrdup(d->path); /* images/<id>.<format> */

		if (!import_find_mfile(im, want)) {
			r = qerr(err, EINVAL, "%s: drive '%s' is %s, which the archive does not hold",
				 what, d->id, want);
			goto out;
		}
		r = img_check_standalone(img, stagedir, want, d->format, err);
		if (r < 0)
			goto out;
		free(d->path);
		d->path = layout_in(stagedir, want);
	}
	if ((def.kernel && !import_find_mfile(im, def.kernel)) ||
	    (def.initrd && !import_find_mfile(im, def.initrd))) {
		r = qerr(err, EINVAL, "%s names a kernel or initrd that the archive does not hold",
			 what);
		goto out;
	}
	if (def.kernel)
		repath(&def.kernel, stagedir, VMDIR_KERNEL);
	if (def.initrd)
		repath(&def.initrd, stagedir, VMDIR_INITRD);
	r = vmdef_check(&def, err);
	if (r < 0)
		goto out;
	if (mkdirat(im->stagefd, VMDIR_LAYERS, 0755) < 0 ||
	    mkdirat(im->stagefd, VMDIR_RUN, 0700) < 0) {
		r = qerr(err, errno, "cannot create the layout of %s: %s", stagedir, strerror(errno));
		goto out;
	}

	st.snapshots = xcalloc(1, sizeof(*st.snapshots));
	s = &st.snapshots[st.n_snapshots++];
	r = fill_snapshot(im, s, err);
	if (r < 0)
		goto out;
	s->drives = xcalloc(def.n_drives, sizeof(*s->drives));
	for (size_t i = 0; i < def.n_drives; i++) {
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *image = layout_image(d->id, d->format);
		_cleanup_free_ char *base = xasprintf("../%s", image);
		_cleanup_free_ char *frozen_rel = layout_layer(d->id, ++st.seq);
		_cleanup_free_ char *active_rel = layout_layer(d->id, ++st.seq);
		const char *frozen = layout_in_layers(frozen_rel);
		const char *active = layout_in_layers(active_rel);

		/* The final path of the base image, as every VM's vm.json has it. */
		free(d->path);
		d->path = layout_in(final, image);
		if (d->readonly)
			continue;
		/* Backing names relative to layers/, like every other layer. */
		r = create_layer(img, stagedir, base, d->format, frozen, err);
		if (r >= 0)
			r = create_layer(img, stagedir, frozen, "qcow2", active, err);
		if (r < 0) {
			r = qerr_prefix(err, "cannot create the layers of drive '%s'", d->id);
			goto out;
		}
		state_add_layer(&st, frozen_rel, d->id, NULL);
		state_add_layer(&st, active_rel, d->id, frozen_rel);
		state_set_active(&st, d->id, active_rel);
		s->drives[s->n_drives].drive = xstrdup(d->id);
		s->drives[s->n_drives++].layer = xstrdup(frozen_rel);
	}
	if (def.kernel)
		repath(&def.kernel, final, VMDIR_KERNEL);
	if (def.initrd)
		repath(&def.initrd, final, VMDIR_INITRD);
	st.current = xstrdup(im->name);

	r = meta_write(im->stagefd, s->dir, s, err);
	if (r >= 0)
		r = vmdir_write(im->stagefd, &def, &st, err);
	for (const char *const *p = (const char *const[]){VMDIR_IMAGES, VMDIR_BOOT, VMDIR_LAYERS,
							 s->dir, NULL};
	     r >= 0 && *p; p++)
		r = fsync_dir(im->stagefd, *p, err);
out:
	def_clear(&def);
	state_free(&st);
	return r;
}
