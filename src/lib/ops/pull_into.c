/* SPDX-License-Identifier: MIT */
/* A pull into an existing VM: the snapshot must have been taken of this
 * VM (the same drives, RAM, base images, kernel and initrd); the layers
 * it has already are reused, the others and the machine state are staged
 * inside the VM directory and moved into place, and state.json, written
 * last, adds the snapshot. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/pull.h"

/* In the staging directory: the snapshot's directory until it moves. */
#define STAGE_SNAPSHOT "snapshot"

/* The local file's sha256 is digest: from the record when the file has not
 * changed since, else by reading it. */
static int local_digest_is(struct pull *p, qsnap_vm *vm, const char *path, const char *digest,
			   bool *ret, qsnap_error *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	char got[DIGEST_LEN + 1];
	struct sha256 h;

	size_t dl = strlen(vm->dir);

	/* Files inside the VM directory are recorded by their relative path. */
	if (!strncmp(path, vm->dir, dl) && path[dl] == '/')
		path += dl + 1;
	if (oci_record_match(p->record, vm->dirfd, path, digest)) {
		*ret = true;
		return 0;
	}
	fd = openat(vm->dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	buf = xmalloc(SINK_BUF);
	sha256_init(&h);
	for (;;) {
		ssize_t n = read(fd, buf, SINK_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sha256_free(&h);
			return qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
		}
		if (n == 0)
			break;
		sha256_update(&h, buf, (size_t)n);
	}
	sha256_final(&h, got);
	*ret = !strcmp(got, digest);
	if (*ret)
		oci_record_set(p->record, vm->dirfd, path, digest);
	return 0;
}

/* The VM must be the one the snapshot was taken of: the same drives, RAM
 * size, base images, kernel and initrd. */
static int check_compatible(struct pull *p, qsnap_vm *vm, qsnap_error *err)
{
	const qsnap_def *have = &vm->def;
	qsnap_def want;
	bool same;
	int r = pull_artifact_def(p, &want, NULL, err);

	if (r < 0)
		return r;
	if (have->n_drives != want.n_drives)
		r = qerr(err, EINVAL, "%s has %zu drives, snapshot '%s' was taken with %zu: pull it into a new directory",
			 vm->dir, have->n_drives, p->snap.name, want.n_drives);
	for (size_t i = 0; r >= 0 && i < want.n_drives; i++) {
		const qsnap_drive_def *a = &have->drives[i], *b = &want.drives[i];

		if (strcmp(a->id, b->id) || strcmp(a->format, b->format) ||
		    a->readonly != b->readonly || a->iface != b->iface)
			r = qerr(err, EINVAL, "drive %zu of %s is '%s' (%s%s), snapshot '%s' has '%s' (%s%s) there: pull it into a new directory",
				 i + 1, vm->dir, a->id, a->format, a->readonly ? ", read-only" : "",
				 p->snap.name, b->id, b->format, b->readonly ? ", read-only" : "");
	}
	if (r >= 0 && have->memory != want.memory)
		r = qerr(err, EINVAL, "%s has %llu MiB of RAM, snapshot '%s' was taken with %llu MiB: pull it into a new directory",
			 vm->dir, (unsigned long long)(have->memory >> 20), p->snap.name,
			 (unsigned long long)(want.memory >> 20));
	if (r >= 0 && (!have->kernel != !want.kernel || !have->initrd != !want.initrd))
		r = qerr(err, EINVAL, "%s and snapshot '%s' differ in booting a kernel: pull it into a new directory",
			 vm->dir, p->snap.name);
	def_clear(&want);
	for (size_t i = 0; r >= 0 && i < p->snap.n_drives; i++) {
		r = local_digest_is(p, vm, have->drives[i].path, p->snap.drives[i].base.digest, &same,
				    err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the base image %s of drive '%s' is not the one snapshot '%s' was taken on (%s): pull it into a new directory",
				 have->drives[i].path, have->drives[i].id, p->snap.name,
				 p->snap.drives[i].base.digest);
	}
	if (r >= 0 && p->snap.has_kernel) {
		r = local_digest_is(p, vm, have->kernel, p->snap.kernel.digest, &same, err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the kernel %s is not the one snapshot '%s' was taken with: pull it into a new directory",
				 have->kernel, p->snap.name);
	}
	if (r >= 0 && p->snap.has_initrd) {
		r = local_digest_is(p, vm, have->initrd, p->snap.initrd.digest, &same, err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the initrd %s is not the one snapshot '%s' was taken with: pull it into a new directory",
				 have->initrd, p->snap.name);
	}
	return r;
}

/* The local layer that holds this blob on top of below (NULL: the base). */
static const char *reusable_layer(struct pull *p, qsnap_vm *vm, const char *drive,
				  const char *below, const char *digest)
{
	for (size_t i = 0; i < vm->st.n_layers; i++) {
		const struct layer *l = &vm->st.layers[i];

		if (strcmp(l->drive, drive) || !l->backing != !below ||
		    (below && strcmp(l->backing, below)))
			continue;
		if (oci_record_match(p->record, vm->dirfd, l->path, digest))
			return l->path;
	}
	return NULL;
}

int pull_into(struct pull *p, qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *sdir = NULL, *statefile = NULL, *stage_ram = NULL, *sum = NULL;
	_cleanup_free_ char *stage_layers = NULL, *stage_rel = NULL;
	char **tops = xcalloc(p->snap.n_drives, sizeof(char *));
	char **moved = NULL;
	size_t n_moved = 0;
	struct snapshot *s;
	bool mkdirs_ok;
	int r;

	if (state_snapshot(&vm->st, p->snap.name)) {
		free(tops);
		return qerr(err, EEXIST, "%s has a snapshot '%s' already: delete it (qsnap delete) or pull into another directory",
			    vm->dir, p->snap.name);
	}
	r = check_compatible(p, vm, err);
	if (r < 0) {
		free(tops);
		return r;
	}
	stage_rel = xasprintf(".qsnap-pull-%d", (int)getpid());
	p->stage = xasprintf("%s/%s", vm->dir, stage_rel);
	rm_rf(vm->dirfd, stage_rel);
	mkdirs_ok = mkdirat(vm->dirfd, stage_rel, 0755) == 0;
	p->stagefd = mkdirs_ok ? openat(vm->dirfd, stage_rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (p->stagefd < 0 || mkdirat(p->stagefd, VMDIR_LAYERS, 0755) < 0 ||
	    mkdirat(p->stagefd, STAGE_SNAPSHOT, 0755) < 0) {
		r = qerr(err, errno, "cannot create %s: %s", p->stage, strerror(errno));
		goto out;
	}
	stage_layers = layout_in(p->stage, VMDIR_LAYERS);
	sdir = layout_snapshot(p->snap.name);
	for (size_t i = 0; i < vm->st.n_snapshots; i++)
		if (!strcmp(vm->st.snapshots[i].dir, sdir)) {
			_cleanup_free_ char *unique =
			    xasprintf("%s@%lu", p->snap.name, ++vm->st.seq);

			free(sdir);
			sdir = layout_snapshot(unique);
			break;
		}

	/* The layers it has already (a prefix of each chain), then the rest. */
	for (size_t i = 0; i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		const qsnap_drive_def *d = &vm->def.drives[i];
		char *below = NULL;
		size_t j = 0;

		for (; j < pd->n_layers; j++) {
			const char *l = reusable_layer(p, vm, pd->id, below, pd->layers[j].digest);

			if (!l)
				break;
			free(below);
			below = xstrdup(l);
			p->st.reused++;
			p->st.reused_bytes += pd->layers[j].size;
		}
		for (; j < pd->n_layers; j++) {
			_cleanup_free_ char *name = layout_layer(pd->id, ++vm->st.seq);
			_cleanup_free_ char *t = xasprintf("layer %zu of drive '%s'", j + 1, pd->id);

			pull_add_job(p, &pd->layers[j], pull_add_dst(p, name, pd->layers[j].size),
				     0, t);
			/* The backing relation, for after the download. */
			state_add_layer(&vm->st, name, pd->id, below);
			strv_push(&moved, &n_moved, name);
			free(below);
			below = xstrdup(name);
		}
		(void)d;
		tops[i] = below;
		/* The base images and kernel are the VM's own. */
		p->st.reused++;
		p->st.reused_bytes += pd->base.size;
	}
	if (p->snap.has_kernel) {
		p->st.reused++;
		p->st.reused_bytes += p->snap.kernel.size;
	}
	if (p->snap.has_initrd) {
		p->st.reused++;
		p->st.reused_bytes += p->snap.initrd.size;
	}
	statefile = layout_in(STAGE_SNAPSHOT, p->snap.state.file);
	stage_ram = layout_in(STAGE_SNAPSHOT, SNAP_RAM);
	pull_add_chunk_jobs(p, &p->snap.state, statefile, "machine state");
	if (p->snap.has_ram)
		pull_add_chunk_jobs(p, &p->snap.ram, stage_ram, "RAM");
	for (size_t k = 0; k < p->snap.n_deltas; k++) {
		_cleanup_free_ char *rel = layout_in(STAGE_SNAPSHOT, p->snap.deltas[k].file);

		pull_add_chunk_jobs(p, &p->snap.deltas[k], rel, p->snap.deltas[k].file);
	}
	p->st.blobs = p->n_jobs + p->st.reused;
	r = pull_download(p, err);
	if (r < 0)
		goto out;
	for (size_t k = 0; r >= 0 && k < n_moved; k++) {
		const struct layer *l = state_layer(&vm->st, moved[k]);
		const qsnap_drive_def *d = def_drive(&vm->def, l->drive);

		/* Backing names as chain_new_layer writes them. */
		r = pull_fix_layer(PULL_QEMU_IMG, stage_layers, layout_in_layers(moved[k]),
				   l->backing ? layout_in_layers(l->backing) : d->path,
				   l->backing ? "qcow2" : d->format, err);
	}
	if (r >= 0)
		r = pull_check_state(p, statefile, &sum, err);
	if (r < 0)
		goto out;

	/* Into place, then state.json: a crash in between leaves strays
	 * that the next command sweeps. */
	for (size_t k = 0; r >= 0 && k < n_moved; k++) {
		_cleanup_free_ char *from = layout_in(stage_rel, moved[k]);

		if (renameat(vm->dirfd, from, vm->dirfd, moved[k]) < 0)
			r = qerr(err, errno, "cannot move %s into %s/%s: %s", from, vm->dir,
				 VMDIR_LAYERS, strerror(errno));
	}
	if (r >= 0) {
		_cleanup_free_ char *from = layout_in(stage_rel, STAGE_SNAPSHOT);

		rm_rf(vm->dirfd, sdir); /* a stray: no snapshot has this directory */
		if (renameat(vm->dirfd, from, vm->dirfd, sdir) < 0)
			r = qerr(err, errno, "cannot move %s to %s/%s: %s", from, vm->dir, sdir,
				 strerror(errno));
	}
	if (r < 0)
		goto out;
	{
		const char *parent = jstr(p->snap.meta, "parent");
		bool known = parent && state_snapshot(&vm->st, parent);

		vm->st.snapshots = xrealloc(vm->st.snapshots, (vm->st.n_snapshots + 1) * sizeof(*s));
		s = &vm->st.snapshots[vm->st.n_snapshots++];
		memset(s, 0, sizeof(*s));
		pull_fill_snapshot(p, s, sdir, tops, known ? parent : NULL, sum);
	}
	r = meta_write(vm->dirfd, sdir, s, err);
	for (const char *const *d = (const char *const[]){VMDIR_LAYERS, sdir, NULL}; r >= 0 && *d;
	     d++)
		r = fsync_dir(vm->dirfd, *d, err);
	if (r >= 0)
		r = vm_write_state(vm, err);
	if (r >= 0) {
		for (size_t k = 0; k < n_moved; k++) {
			const struct layer *l = state_layer(&vm->st, moved[k]);
			const struct oci_pdrive *pd = NULL;

			for (size_t i = 0; i < p->snap.n_drives; i++)
				if (!strcmp(p->snap.drives[i].id, l->drive))
					pd = &p->snap.drives[i];
			for (size_t j = 0; pd && j < p->n_jobs; j++)
				if (!strcmp(p->dsts[p->jobs[j].dst].rel, moved[k]))
					oci_record_set_rebased(p->record, vm->dirfd, moved[k], p->jobs[j].item.digest);
		}
		{
			_cleanup_free_ char *sf = layout_in(sdir, p->snap.state.file);
			_cleanup_free_ char *rf = layout_in(sdir, SNAP_RAM);

			pull_record_chunks(p->record, vm->dirfd, sf, &p->snap.state);
			if (p->snap.has_ram)
				pull_record_chunks(p->record, vm->dirfd, rf, &p->snap.ram);
			for (size_t k = 0; k < p->snap.n_deltas; k++) {
				_cleanup_free_ char *df = layout_in(sdir, p->snap.deltas[k].file);

				pull_record_chunks(p->record, vm->dirfd, df, &p->snap.deltas[k]);
			}
		}
		/* Only a cache: losing it costs downloads, not correctness. */
		qsnap_error e2;
		oci_record_save(p->record, vm->dirfd, &e2);
	}
out:
	if (r < 0) {
		/* Forget the layers that never made it. */
		for (size_t k = 0; k < n_moved; k++) {
			for (size_t i = 0; i < vm->st.n_layers; i++)
				if (!strcmp(vm->st.layers[i].path, moved[k])) {
					free(vm->st.layers[i].path);
					free(vm->st.layers[i].drive);
					free(vm->st.layers[i].backing);
					vm->st.layers[i] = vm->st.layers[--vm->st.n_layers];
					break;
				}
			unlinkat(vm->dirfd, moved[k], 0);
		}
	}
	if (p->stagefd >= 0)
		closep(&p->stagefd);
	p->stagefd = -1;
	rm_rf(vm->dirfd, stage_rel);
	for (size_t i = 0; i < p->snap.n_drives; i++)
		free(tops[i]);
	free(tops);
	strv_free(moved);
	return r;
}
