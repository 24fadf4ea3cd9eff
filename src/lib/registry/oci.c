/* SPDX-License-Identifier: MIT */
/* The snapshot as an OCI artifact: an OCI image manifest with qsnap's
 * artifactType, whose config blob (vm.json, meta.json, and how the blobs
 * make the snapshot's files) and layers (disk images, kernel, initrd,
 * machine state and RAM chunks) are described in the README. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vmdir/vmdir.h"
#include "registry/oci.h"

static const int JSON_FLAGS = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;

void oci_config_free(struct oci_config *c)
{
	for (size_t i = 0; i < c->n_drives; i++) {
		free(c->drives[i].id);
		free(c->drives[i].format);
		free(c->drives[i].layers);
	}
	free(c->drives);
	free(c->state.file);
	free(c->ram.file);
	for (size_t i = 0; i < c->n_deltas; i++)
		free(c->deltas[i].file);
	free(c->deltas);
}

static json_object *ref_json(const struct oci_blob *b)
{
	return jbuild("digest", json_object_new_string(b->digest), "size",
		      json_object_new_int64((int64_t)b->size), NULL);
}

static json_object *chunks_json(const struct oci_chunks *ch, const struct oci_blob *blobs)
{
	json_object *list = json_object_new_array();

	for (size_t i = 0; i < ch->n; i++) {
		const struct oci_blob *b = &blobs[ch->first + i];

		json_object_array_add(list, b->zero ? NULL : json_object_new_string(b->digest));
	}
	return jbuild("file", json_object_new_string(ch->file), "size",
		      json_object_new_int64((int64_t)ch->size), "chunk_size",
		      json_object_new_int64((int64_t)OCI_CHUNK_SIZE), "chunks", list, NULL);
}

int oci_config_build(const struct oci_config *c, const struct oci_blob *blobs, const char *vmjson,
		     const char *meta, char **ret, qsnap_error *err)
{
	_cleanup_json_ json_object *o = NULL;
	json_object *vm = json_tokener_parse(vmjson), *m = json_tokener_parse(meta);
	json_object *drives = json_object_new_array();

	if (!vm || !m) {
		json_object_put(vm);
		json_object_put(m);
		json_object_put(drives);
		return qerr(err, EINVAL, "vm.json or the snapshot's meta.json is not valid JSON");
	}
	for (size_t i = 0; i < c->n_drives; i++) {
		const struct oci_drive *d = &c->drives[i];
		json_object *layers = json_object_new_array();

		for (size_t j = 0; j < d->n_layers; j++)
			json_object_array_add(layers, ref_json(&blobs[d->layers[j]]));
		json_object_array_add(drives, jbuild("id", json_object_new_string(d->id), "format",
						     json_object_new_string(d->format), "base",
						     ref_json(&blobs[d->base]), "layers", layers,
						     NULL));
	}
	o = jbuild("format", json_object_new_string(QSNAP_CONFIG_FORMAT), "version",
		   json_object_new_int(c->diff ? QSNAP_CONFIG_VERSION_DIFF : QSNAP_CONFIG_VERSION),
		   "vm", vm, "snapshot", m, "drives",
		   drives, NULL);
	if (c->kernel >= 0)
		json_object_object_add(o, "kernel", ref_json(&blobs[c->kernel]));
	if (c->initrd >= 0)
		json_object_object_add(o, "initrd", ref_json(&blobs[c->initrd]));
	json_object_object_add(o, "machine_state", chunks_json(&c->state, blobs));
	if (c->has_ram)
		json_object_object_add(o, "ram", chunks_json(&c->ram, blobs));
	if (c->diff) {
		json_object *deltas = json_object_new_array();

		for (size_t i = 0; i < c->n_deltas; i++)
			json_object_array_add(deltas, chunks_json(&c->deltas[i], blobs));
		json_object_object_add(o, "deltas", deltas);
	}
	*ret = xstrdup(json_object_to_json_string_ext(o, JSON_FLAGS));
	return 0;
}

char *oci_manifest_build(const struct oci_blob *blobs, size_t n, const char *config_digest,
			 size_t config_size, const struct snapshot *s)
{
	_cleanup_json_ json_object *o = NULL;
	json_object *layers = json_object_new_array();
	char created[32];
	struct tm tm;
	time_t t = (time_t)s->created;

	for (size_t i = 0; i < n; i++) {
		const struct oci_blob *b = &blobs[i];

		if (b->zero || b->dup)
			continue;
		json_object_array_add(
			layers,
			jbuild("mediaType", json_object_new_string(b->media_type), "digest",
			       json_object_new_string(b->digest), "size",
			       json_object_new_int64((int64_t)b->size), "annotations",
			       jbuild("org.opencontainers.image.title", json_object_new_string(b->title),
				      NULL),
			       NULL));
	}
	gmtime_r(&t, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = jbuild("schemaVersion", json_object_new_int(2), "mediaType",
		   json_object_new_string(OCI_MANIFEST_TYPE), "artifactType",
		   json_object_new_string(QSNAP_ARTIFACT_TYPE), "config",
		   jbuild("mediaType", json_object_new_string(QSNAP_CONFIG_TYPE), "digest",
			  json_object_new_string(config_digest), "size",
			  json_object_new_int64((int64_t)config_size), NULL),
		   "layers", layers, "annotations",
		   jbuild("org.opencontainers.image.created", json_object_new_string(created),
			  "org.opencontainers.image.ref.name", json_object_new_string(s->name), NULL),
		   NULL);
	return xstrdup(json_object_to_json_string_ext(o, JSON_FLAGS));
}

/* ---- reading ---- */

static bool layers_have(json_object *layers, const char *digest)
{
	for (size_t i = 0; i < json_object_array_length(layers); i++)
		if (jstr(json_object_array_get_idx(layers, i), "digest") &&
		    !strcmp(jstr(json_object_array_get_idx(layers, i), "digest"), digest))
			return true;
	return false;
}

int oci_manifest_parse(const char *text, const char *what, struct oci_item *ret_config,
		       json_object **ret_layers, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_tokener_parse(text);
	json_object *cfg = jobj(o, "config"), *layers = jarr(o, "layers");
	const char *mt = jstr(o, "mediaType"), *at = jstr(o, "artifactType");
	const char *ct = jstr(cfg, "mediaType"), *d = jstr(cfg, "digest");
	int64_t size = jint(cfg, "size", -1);

	if (!o || !json_object_is_type(o, json_type_object))
		return qerr(err, EINVAL, "the manifest of %s is not JSON", what);
	if (!mt || strcmp(mt, OCI_MANIFEST_TYPE) || !ct)
		return qerr(err, EINVAL, "%s is not a qsnap snapshot: its manifest is %s, not an OCI image manifest",
			    what, mt ? mt : "of no media type");
	if (strcmp(ct, QSNAP_CONFIG_TYPE) || (at && strcmp(at, QSNAP_ARTIFACT_TYPE)))
		return qerr(err, EINVAL, "%s is not a qsnap snapshot (its artifact type is %s): push one with qsnap push",
			    what, at ? at : ct);
	if (!digest_valid(d) || size < 0 || !layers)
		return qerr(err, EINVAL, "the manifest of %s is damaged (config or layers)", what);
	for (size_t i = 0; i < json_object_array_length(layers); i++)
		if (!digest_valid(jstr(json_object_array_get_idx(layers, i), "digest")))
			return qerr(err, EINVAL, "the manifest of %s is damaged (layer %zu)", what, i);
	snprintf(ret_config->digest, sizeof(ret_config->digest), "%s", d);
	ret_config->size = (uint64_t)size;
	*ret_layers = json_object_get(layers);
	return 0;
}

static int item_parse(json_object *o, const char *key, json_object *layers, struct oci_item *ret)
{
	const char *d = jstr(o, "digest");
	int64_t size = jint(o, "size", -1);

	(void)key;
	if (!digest_valid(d) || size < 0 || !layers_have(layers, d))
		return -EINVAL;
	snprintf(ret->digest, sizeof(ret->digest), "%s", d);
	ret->size = (uint64_t)size;
	return 0;
}

static int chunks_parse(json_object *o, json_object *layers, struct oci_pchunks *ret)
{
	json_object *list = jarr(o, "chunks");
	const char *file = jstr(o, "file");
	int64_t size = jint(o, "size", -1), cs = jint(o, "chunk_size", -1);
	size_t n;

	/* The chunk size qsnap pushes, and as many chunks as the size needs. */
	if (!list || !file || size < 0 || cs != (int64_t)OCI_CHUNK_SIZE)
		return -EINVAL;
	n = json_object_array_length(list);
	if ((uint64_t)n != ((uint64_t)size + (uint64_t)cs - 1) / (uint64_t)cs)
		return -EINVAL;
	ret->file = xstrdup(file);
	ret->size = (uint64_t)size;
	ret->chunk_size = (uint64_t)cs;
	ret->chunks = xcalloc(n, sizeof(*ret->chunks));
	ret->n = n;
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(list, i);
		struct oci_item *it = &ret->chunks[i];

		it->size = i + 1 < n ? (uint64_t)cs : (uint64_t)size - (uint64_t)cs * i;
		if (!e)
			continue; /* all zero */
		if (!json_object_is_type(e, json_type_string) || !digest_valid(json_object_get_string(e)) ||
		    !layers_have(layers, json_object_get_string(e)))
			return -EINVAL;
		snprintf(it->digest, sizeof(it->digest), "%s", json_object_get_string(e));
	}
	return 0;
}

static bool item_is(const struct oci_item *it, const char *digest)
{
	return !strcmp(it->digest, digest);
}

/* Does the config name this blob? */
static bool config_names(const struct oci_snapshot *s, const char *digest)
{
	for (size_t i = 0; i < s->n_drives; i++) {
		if (item_is(&s->drives[i].base, digest))
			return true;
		for (size_t j = 0; j < s->drives[i].n_layers; j++)
			if (item_is(&s->drives[i].layers[j], digest))
				return true;
	}
	if ((s->has_kernel && item_is(&s->kernel, digest)) ||
	    (s->has_initrd && item_is(&s->initrd, digest)))
		return true;
	for (size_t i = 0; i < s->state.n; i++)
		if (item_is(&s->state.chunks[i], digest))
			return true;
	for (size_t i = 0; s->has_ram && i < s->ram.n; i++)
		if (item_is(&s->ram.chunks[i], digest))
			return true;
	for (size_t k = 0; k < s->n_deltas; k++)
		for (size_t i = 0; i < s->deltas[k].n; i++)
			if (item_is(&s->deltas[k].chunks[i], digest))
				return true;
	return false;
}

int oci_config_parse(const char *text, const char *what, json_object *layers,
		     struct oci_snapshot *ret, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_tokener_parse(text);
	json_object *drives = jarr(o, "drives"), *snap = jobj(o, "snapshot");
	json_object *deltas = jarr(o, "deltas");
	struct oci_snapshot s = {0};
	const char *name = jstr(snap, "name"), *mode = jstr(snap, "mode");
	const char *bad = NULL;
	int64_t version = jint(o, "version", -1);

	if (!o || !jstr(o, "format") || strcmp(jstr(o, "format"), QSNAP_CONFIG_FORMAT))
		return qerr(err, EINVAL, "%s is not a qsnap snapshot (its config is not one)", what);
	if (version != QSNAP_CONFIG_VERSION && version != QSNAP_CONFIG_VERSION_DIFF)
		return qerr(err, EINVAL, "%s is a qsnap snapshot of format version %lld; this qsnap reads versions %d and %d: pull it with a newer qsnap",
			    what, (long long)version, QSNAP_CONFIG_VERSION, QSNAP_CONFIG_VERSION_DIFF);
	/* A differential snapshot pushed before its deltas travelled lacks
	 * them: it would restore wrongly. */
	if (version == QSNAP_CONFIG_VERSION && jstr(snap, "ram_base"))
		return qerr(err, EINVAL, "%s is a differential snapshot pushed by a qsnap that did not send its deltas: push it again with this qsnap",
			    what);
	if (!name || !qsnap_name_valid(name) || !mode ||
	    (strcmp(mode, "stream") && strcmp(mode, "shared")) || !jobj(o, "vm") || !drives) {
		bad = "snapshot, vm or drives";
		goto fail;
	}
	s.name = xstrdup(name);
	s.vm = json_object_get(jobj(o, "vm"));
	s.meta = json_object_get(snap);
	s.drives = xcalloc(json_object_array_length(drives), sizeof(*s.drives));
	for (size_t i = 0; i < json_object_array_length(drives); i++) {
		json_object *d = json_object_array_get_idx(drives, i), *ls = jarr(d, "layers");
		struct oci_pdrive *pd = &s.drives[s.n_drives++];
		const char *id = jstr(d, "id"), *fmt = jstr(d, "format");

		if (!id || !drive_id_valid(id) || !fmt || (strcmp(fmt, "qcow2") && strcmp(fmt, "raw")) ||
		    !ls || item_parse(jobj(d, "base"), "base", layers, &pd->base) < 0) {
			bad = "a drive";
			goto fail;
		}
		for (size_t k = 0; k + 1 < s.n_drives; k++)
			if (!strcmp(s.drives[k].id, id)) {
				bad = "a drive named twice";
				goto fail;
			}
		pd->id = xstrdup(id);
		pd->format = xstrdup(fmt);
		pd->layers = xcalloc(json_object_array_length(ls), sizeof(*pd->layers));
		for (size_t j = 0; j < json_object_array_length(ls); j++)
			if (item_parse(json_object_array_get_idx(ls, j), "layer", layers,
				       &pd->layers[pd->n_layers++]) < 0) {
				bad = "a layer";
				goto fail;
			}
	}
	if (jobj(o, "kernel")) {
		s.has_kernel = true;
		if (item_parse(jobj(o, "kernel"), "kernel", layers, &s.kernel) < 0) {
			bad = "kernel";
			goto fail;
		}
	}
	if (jobj(o, "initrd")) {
		s.has_initrd = true;
		if (item_parse(jobj(o, "initrd"), "initrd", layers, &s.initrd) < 0) {
			bad = "initrd";
			goto fail;
		}
	}
	if (chunks_parse(jobj(o, "machine_state"), layers, &s.state) < 0 ||
	    (strcmp(s.state.file, "vmstate") && strcmp(s.state.file, "vmstate.zst"))) {
		bad = "machine_state";
		goto fail;
	}
	if (jobj(o, "ram")) {
		s.has_ram = true;
		if (chunks_parse(jobj(o, "ram"), layers, &s.ram) < 0 || strcmp(s.ram.file, "ram")) {
			bad = "ram";
			goto fail;
		}
	}
	if (!strcmp(mode, "shared") != s.has_ram) {
		bad = "ram";
		goto fail;
	}
	/* Deltas with a differential snapshot (version 2, ram_base) only, as
	 * many as the longest chain, each named for its place in it. */
	if ((version == QSNAP_CONFIG_VERSION_DIFF) != (deltas && jstr(snap, "ram_base") && s.has_ram) ||
	    (deltas && json_object_array_length(deltas) > RAM_CHAIN_MAX)) {
		bad = "deltas";
		goto fail;
	}
	s.deltas = xcalloc(deltas ? json_object_array_length(deltas) : 0, sizeof(*s.deltas));
	for (size_t k = 0; deltas && k < json_object_array_length(deltas); k++) {
		_cleanup_free_ char *file = xasprintf(SNAP_DELTA ".%zu", k + 1);

		if (chunks_parse(json_object_array_get_idx(deltas, k), layers,
				 &s.deltas[s.n_deltas++]) < 0 ||
		    strcmp(s.deltas[k].file, file)) {
			bad = "deltas";
			goto fail;
		}
	}
	/* No blob that the config does not explain. */
	for (size_t i = 0; i < json_object_array_length(layers); i++)
		if (!config_names(&s, jstr(json_object_array_get_idx(layers, i), "digest"))) {
			oci_snapshot_free(&s);
			return qerr(err, EINVAL, "the manifest of %s lists blob %s, which its config does not name",
				    what, jstr(json_object_array_get_idx(layers, i), "digest"));
		}
	*ret = s;
	return 0;
fail:
	oci_snapshot_free(&s);
	return qerr(err, EINVAL, "the config of %s is damaged (%s), or names a blob its manifest does not list",
		    what, bad);
}

void oci_snapshot_free(struct oci_snapshot *s)
{
	free(s->name);
	json_object_put(s->vm);
	json_object_put(s->meta);
	for (size_t i = 0; i < s->n_drives; i++) {
		free(s->drives[i].id);
		free(s->drives[i].format);
		free(s->drives[i].layers);
	}
	free(s->drives);
	free(s->state.file);
	free(s->state.chunks);
	free(s->ram.file);
	free(s->ram.chunks);
	for (size_t k = 0; k < s->n_deltas; k++) {
		free(s->deltas[k].file);
		free(s->deltas[k].chunks);
	}
	free(s->deltas);
	*s = (struct oci_snapshot){0};
}
