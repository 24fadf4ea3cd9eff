/* SPDX-License-Identifier: MIT */
/* Pulling a snapshot from an OCI registry (qsnap_pull): the manifest and
 * the config fetched, then the snapshot made a new VM directory
 * (pull_new.c) or added to the existing VM there (pull_into.c). Every
 * blob is checked against its sha256 as it downloads (pull_blobs.c), into
 * a staging directory, and the VM directory, or the added snapshot,
 * appears only when all is there. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/pull.h"

static void pull_free(struct pull *p)
{
	for (size_t i = 0; i < p->n_dsts; i++) {
		closep(&p->dsts[i].fd);
		free(p->dsts[i].rel);
	}
	free(p->dsts);
	for (size_t i = 0; i < p->n_jobs; i++) {
		free(p->jobs[i].title);
		free(p->jobs[i].local);
	}
	free(p->jobs);
	free(p->stage);
	free(p->note);
	json_object_put(p->record);
	oci_snapshot_free(&p->snap);
	registry_close(p->reg);
}

int qsnap_pull(const char *ref, const char *dir, const qsnap_pull_opts *opts, char **ret_name,
	       qsnap_error *err)
{
	qsnap_pull_opts o;
	struct pull p = {.opts = &o, .ref = ref, .stagefd = -1, .vmdirfd = -1};
	_cleanup_free_ char *c1 = xstrdup(dir), *c2 = xstrdup(dir), *final = NULL;
	_cleanup_free_ char *manifest = NULL, *config = NULL;
	_cleanup_json_ json_object *layers = NULL;
	const char *base = basename(c2);
	struct oci_item cfg;
	char parent[PATH_MAX];
	qsnap_vm *vm = NULL;
	struct stat st;
	reg_conn *c = NULL;
	bool existing;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_pull_opts", err)) < 0 ||
	    (r = sized_check(o.stats, "qsnap_pull_stats", err)) < 0)
		return r;
	if (!*base || !strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
		return qerr(err, EINVAL, "%s: name a VM directory to pull into", dir);
	if (!realpath(dirname(c1), parent))
		return qerr(err, errno, "cannot pull into %s: %s", dir, strerror(errno));
	final = xasprintf("%s/%s", strcmp(parent, "/") ? parent : "", base);
	existing = lstat(final, &st) == 0;
	if (existing && S_ISDIR(st.st_mode) && dir_is_empty(final))
		existing = false;
	if (existing) {
		_cleanup_free_ char *vmj = layout_in(final, VMDIR_DEF);

		if (!S_ISDIR(st.st_mode) || access(vmj, F_OK) < 0)
			return qerr(err, EEXIST, "%s exists and is neither a VM directory nor empty: pull into a new directory",
				    dir);
	}
	r = registry_open(ref, "latest", p.opts->insecure, false, &p.reg, err);
	if (r < 0)
		goto out;
	c = reg_conn_new();
	r = reg_manifest_get(p.reg, c, OCI_MANIFEST_TYPE, &manifest, p.digest, err);
	if (r >= 0)
		r = oci_manifest_parse(manifest, ref, &cfg, &layers, err);
	if (r >= 0)
		r = reg_blob_get_mem(p.reg, c, cfg.digest, cfg.size, &config, err);
	if (r < 0)
		goto out;
	r = oci_config_parse(config, ref, layers, &p.snap, err);
	if (r < 0)
		goto out;
	if (existing) {
		r = qsnap_vm_open(final, 0, p.opts->lock_timeout, &vm, err);
		if (r < 0)
			goto out;
		p.record = oci_record_load(vm->dirfd);
		p.vmdirfd = vm->dirfd;
		r = pull_into(&p, vm, err);
	} else {
		{
			_cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			_cleanup_free_ char *prefix = xasprintf(".%s.", base);

			/* Staging directories of pulls that were killed. */
			if (pfd >= 0)
				sweep_stale(pfd, prefix, ".qsnap-pull-");
		}
		p.stage = xasprintf("%s/.%s.qsnap-pull-%d", strcmp(parent, "/") ? parent : "", base,
				    (int)getpid());
		rm_rf(AT_FDCWD, p.stage);
		if (mkdir(p.stage, 0755) < 0) {
			r = qerr(err, errno, "cannot create %s: %s", p.stage, strerror(errno));
			goto out;
		}
		p.stagefd = open(p.stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (p.stagefd < 0) {
			r = qerr(err, errno, "cannot open %s: %s", p.stage, strerror(errno));
			goto out;
		}
		p.record = jbuild("files", json_object_new_object(), NULL);
		r = pull_new(&p, final, err);
		if (r >= 0)
			r = fsync_dir(AT_FDCWD, parent, err);
	}
out:
	if (!existing && p.stage && r < 0)
		rm_rf(AT_FDCWD, p.stage);
	closep(&p.stagefd);
	reg_conn_free(c);
	if (r >= 0) {
		/* The config counts as one of the blobs, as on push. */
		p.st.blobs++;
		p.st.downloaded++;
		p.st.downloaded_bytes += cfg.size;
		snprintf(p.st.digest, sizeof(p.st.digest), "%s", p.digest);
		sized_out(p.opts->stats, &p.st, sizeof(p.st));
		if (ret_name)
			*ret_name = xstrdup(p.snap.name);
		if (p.note && p.opts->notice)
			p.opts->notice(p.note, p.opts->userdata);
	}
	if (vm)
		qsnap_vm_close(vm);
	pull_free(&p);
	if (r < 0)
		r = qerr_prefix(err, "pulling %s into %s failed; nothing was %s", ref, dir,
				existing ? "added" : "created");
	return r;
}
