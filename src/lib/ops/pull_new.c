/* SPDX-License-Identifier: MIT */
/* A pull into a new VM directory: every blob into a staging directory
 * beside it, made a VM directory there (base images, layers re-pointed at
 * them and an active layer on top, the kernel and initrd, the snapshot,
 * vm.json with the final paths, state.json, registry.json), and renamed to
 * the target only when all of it is there. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/pull.h"

int pull_new(struct pull *p, const char *final, qsnap_error *err)
{
	_cleanup_free_ char *layers_dir = layout_in(p->stage, VMDIR_LAYERS);
	_cleanup_free_ char *sdir = layout_snapshot(p->snap.name);
	_cleanup_free_ char *statefile = layout_in(sdir, p->snap.state.file);
	_cleanup_free_ char *ram = layout_in(sdir, SNAP_RAM);
	_cleanup_free_ char *sum = NULL, *img = NULL;
	char **tops = xcalloc(p->snap.n_drives, sizeof(char *));
	char ***names = xcalloc(p->snap.n_drives, sizeof(char **));
	struct state st = {0};
	qsnap_def def = {0};
	bool have_def = false;
	int r;

	for (const char *const *d = (const char *const[]){VMDIR_IMAGES, VMDIR_BOOT, VMDIR_LAYERS,
							 VMDIR_SNAPSHOTS, sdir, NULL};
	     *d; d++)
		if (mkdirat(p->stagefd, *d, 0755) < 0) {
			r = qerr(err, errno, "cannot create %s/%s: %s", p->stage, *d, strerror(errno));
			goto out;
		}
	if (mkdirat(p->stagefd, VMDIR_RUN, 0700) < 0) {
		r = qerr(err, errno, "cannot create %s/%s: %s", p->stage, VMDIR_RUN,
			 strerror(errno));
		goto out;
	}
	r = pull_artifact_def(p, &def, &p->note, err);
	if (r < 0)
		goto out;
	have_def = true;
	/* The pulled VM's QEMU brings its qemu-img. */
	img = qemu_img_for(def.qemu);
	for (size_t i = 0; i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		_cleanup_free_ char *base = layout_image(pd->id, pd->format);
		_cleanup_free_ char *title = xasprintf("the base image of drive '%s'", pd->id);

		pull_add_job(p, &pd->base, pull_add_dst(p, base, pd->base.size), 0, title);
		names[i] = xcalloc(pd->n_layers + 1, sizeof(char *));
		for (size_t j = 0; j < pd->n_layers; j++) {
			_cleanup_free_ char *t = xasprintf("layer %zu of drive '%s'", j + 1, pd->id);

			names[i][j] = layout_layer(pd->id, ++st.seq);
			pull_add_job(p, &pd->layers[j],
				     pull_add_dst(p, names[i][j], pd->layers[j].size), 0, t);
		}
	}
	if (p->snap.has_kernel)
		pull_add_job(p, &p->snap.kernel, pull_add_dst(p, VMDIR_KERNEL, p->snap.kernel.size),
			     0, "the kernel");
	if (p->snap.has_initrd)
		pull_add_job(p, &p->snap.initrd, pull_add_dst(p, VMDIR_INITRD, p->snap.initrd.size),
			     0, "the initrd");
	pull_add_chunk_jobs(p, &p->snap.state, statefile, "machine state");
	if (p->snap.has_ram)
		pull_add_chunk_jobs(p, &p->snap.ram, ram, "RAM");
	for (size_t k = 0; k < p->snap.n_deltas; k++) {
		_cleanup_free_ char *rel = layout_in(sdir, p->snap.deltas[k].file);

		pull_add_chunk_jobs(p, &p->snap.deltas[k], rel, p->snap.deltas[k].file);
	}
	p->st.blobs = p->n_jobs;
	r = pull_download(p, err);
	if (r < 0)
		goto out;

	/* The images: standalone bases, layers re-pointed at their local
	 * backing files (names relative to layers/, as every layer has). */
	for (size_t i = 0; r >= 0 && i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *base = layout_image(pd->id, pd->format);
		_cleanup_free_ char *rel_base = xasprintf("../%s", base);

		r = img_check_standalone(img, p->stage, base, pd->format, err);
		for (size_t j = 0; r >= 0 && j < pd->n_layers; j++) {
			const char *name = layout_in_layers(names[i][j]);

			r = pull_fix_layer(PULL_QEMU_IMG, layers_dir, name,
					   j ? layout_in_layers(names[i][j - 1]) : rel_base,
					   j ? "qcow2" : pd->format, err);
			state_add_layer(&st, names[i][j], pd->id, j ? names[i][j - 1] : NULL);
		}
		if (r < 0)
			break;
		oci_record_set(p->record, p->stagefd, base, pd->base.digest);
		for (size_t j = 0; j < pd->n_layers; j++)
			oci_record_set_rebased(p->record, p->stagefd, names[i][j], pd->layers[j].digest);
		free(d->path);
		d->path = layout_in(p->stage, base);
		if (pd->n_layers) {
			_cleanup_free_ char *active = layout_layer(pd->id, ++st.seq);

			tops[i] = names[i][pd->n_layers - 1];
			r = img_create(PULL_QEMU_IMG, layers_dir, layout_in_layers(active),
				       layout_in_layers(tops[i]), "qcow2", err);
			state_add_layer(&st, active, pd->id, tops[i]);
			state_set_active(&st, pd->id, active);
		}
	}
	if (r < 0)
		goto out;
	if (p->snap.has_kernel)
		oci_record_set(p->record, p->stagefd, VMDIR_KERNEL, p->snap.kernel.digest);
	if (p->snap.has_initrd)
		oci_record_set(p->record, p->stagefd, VMDIR_INITRD, p->snap.initrd.digest);
	if (def.kernel) {
		free(def.kernel);
		def.kernel = layout_in(p->stage, VMDIR_KERNEL);
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = layout_in(p->stage, VMDIR_INITRD);
	}
	r = vmdef_check(&def, err);
	if (r >= 0)
		r = pull_check_state(p, statefile, &sum, err);
	if (r < 0)
		goto out;
	/* Final paths, as in every VM's vm.json. */
	for (size_t i = 0; i < def.n_drives; i++) {
		_cleanup_free_ char *image = layout_image(def.drives[i].id, def.drives[i].format);

		free(def.drives[i].path);
		def.drives[i].path = layout_in(final, image);
	}
	if (def.kernel) {
		free(def.kernel);
		def.kernel = layout_in(final, VMDIR_KERNEL);
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = layout_in(final, VMDIR_INITRD);
	}
	st.snapshots = xcalloc(1, sizeof(*st.snapshots));
	pull_fill_snapshot(p, &st.snapshots[st.n_snapshots++], sdir, tops, NULL, sum);
	st.current = xstrdup(p->snap.name);
	r = meta_write(p->stagefd, sdir, &st.snapshots[0], err);
	if (r >= 0)
		r = vmdir_write(p->stagefd, &def, &st, err);
	if (r >= 0) {
		pull_record_chunks(p->record, p->stagefd, statefile, &p->snap.state);
		if (p->snap.has_ram)
			pull_record_chunks(p->record, p->stagefd, ram, &p->snap.ram);
		for (size_t k = 0; k < p->snap.n_deltas; k++) {
			_cleanup_free_ char *rel = layout_in(sdir, p->snap.deltas[k].file);

			pull_record_chunks(p->record, p->stagefd, rel, &p->snap.deltas[k]);
		}
		r = oci_record_save(p->record, p->stagefd, err);
	}
	for (const char *const *d = (const char *const[]){VMDIR_IMAGES, VMDIR_BOOT, VMDIR_LAYERS,
							 sdir, NULL};
	     r >= 0 && *d; d++)
		r = fsync_dir(p->stagefd, *d, err);
	/* rename(2) replaces an empty directory. */
	if (r >= 0 && rename(p->stage, final) < 0)
		r = qerr(err, errno, "cannot rename %s to %s: %s", p->stage, final, strerror(errno));
out:
	for (size_t i = 0; i < p->snap.n_drives; i++)
		strv_free(names[i]);
	free(names);
	free(tops);
	if (have_def)
		def_clear(&def);
	state_free(&st);
	return r;
}
