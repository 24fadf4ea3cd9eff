/* SPDX-License-Identifier: MIT */
/* Pushing a snapshot to an OCI registry as an artifact (README: "The
 * snapshot as an OCI artifact"; qsnap_vm_push): the snapshot's files as
 * blobs named by sha256 (push_collect.c), only those the registry lacks
 * uploaded (push_blobs.c), then a config blob that says how they fit
 * together and a manifest that lists them. */
#include <string.h>

#include "ops/push.h"

static void push_free(struct push *p)
{
	for (size_t i = 0; i < p->n_files; i++) {
		closep(&p->files[i].fd);
		free(p->files[i].path);
		free(p->files[i].key);
	}
	free(p->files);
	for (size_t i = 0; i < p->n_blobs; i++)
		free(p->blobs[i].title);
	free(p->blobs);
}

int qsnap_vm_push(qsnap_vm *vm, const char *name, const char *ref, const qsnap_push_opts *opts,
		  qsnap_error *err)
{
	qsnap_push_opts o;
	struct push p = {.vm = vm, .opts = &o, .phase = "digest"};
	struct oci_config cfg = {.kernel = -1, .initrd = -1};
	struct registry *reg = NULL;
	json_object *rec = NULL;
	_cleanup_free_ char *vmjson = NULL, *meta = NULL, *config = NULL, *manifest = NULL;
	qsnap_push_stats st = {.size = sizeof(st)};
	struct snapshot *s;
	reg_conn *c = NULL;
	char cfg_digest[DIGEST_LEN + 1];
	bool have;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_push_opts", err)) < 0 ||
	    (r = sized_check(o.stats, "qsnap_push_stats", err)) < 0)
		return r;
	{
		struct reg_ref chk = {0};

		r = reg_ref_parse(ref, name, &chk, err);
		reg_ref_free(&chk);
		if (r < 0)
			return r;
	}
	r = find_snapshot(vm, name, &s, err);
	if (r < 0)
		return r;
	p.s = s;
	r = registry_open(ref, name, p.opts->insecure, true, &reg, err);
	if (r < 0)
		goto out;
	r = push_collect(&p, &cfg, err);
	if (r >= 0)
		r = push_vmjson(vm, &vmjson, err);
	if (r >= 0)
		r = meta_read(vm->dirfd, s, &meta, err);
	if (r < 0)
		goto out;
	rec = oci_record_load(vm->dirfd);
	push_recall(&p, rec);
	r = push_blobs(&p, reg, err);
	if (r < 0)
		goto out;

	r = oci_config_build(&cfg, p.blobs, vmjson, meta, &config, err);
	if (r < 0)
		goto out;
	sha256_buf(config, strlen(config), cfg_digest);
	c = reg_conn_new();
	r = reg_blob_exists(reg, c, cfg_digest, &have, err);
	if (r >= 0 && !have)
		r = reg_blob_upload_mem(reg, c, config, strlen(config), cfg_digest, err);
	if (r < 0)
		goto out;
	manifest = oci_manifest_build(p.blobs, p.n_blobs, cfg_digest, strlen(config), s);
	r = reg_manifest_put(reg, c, OCI_MANIFEST_TYPE, manifest, err);
	if (r < 0)
		goto out;

	sha256_buf(manifest, strlen(manifest), st.digest);
	st.blobs = 1;
	st.bytes = strlen(config);
	if (have) {
		st.present++;
		st.present_bytes += strlen(config);
	} else {
		st.uploaded++;
		st.uploaded_bytes += strlen(config);
	}
	for (size_t i = 0; i < p.n_blobs; i++) {
		const struct oci_blob *b = &p.blobs[i];

		if (b->zero) {
			st.zero_chunks++;
			st.zero_bytes += b->size;
			continue;
		}
		if (b->dup)
			continue;
		st.blobs++;
		st.bytes += b->size;
		if (b->uploaded) {
			st.uploaded++;
			st.uploaded_bytes += b->size;
		} else {
			st.present++;
			st.present_bytes += b->size;
		}
	}
	sized_out(p.opts->stats, &st, sizeof(st));
	push_remember(&p, rec);
out:
	json_object_put(rec);
	reg_conn_free(c);
	registry_close(reg);
	oci_config_free(&cfg);
	push_free(&p);
	if (r < 0)
		r = qerr_prefix(err, "pushing snapshot '%s' of %s to %s failed", name, vm->dir, ref);
	return r;
}
