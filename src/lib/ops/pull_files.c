/* SPDX-License-Identifier: MIT */
/* What a pull's downloaded files become, into a new VM or an existing one:
 * the artifact's vm.json made this host's and checked against its drives,
 * the layers re-pointed at their local backing files, the reassembled
 * machine state (and a differential snapshot's older deltas) checked
 * against the checksums it was saved with, and the snapshot's entry for
 * state.json and meta.json. */
#include <errno.h>
#include <string.h>

#include "ops/pull.h"

int pull_fix_layer(const char *qemu_img, const char *dir, const char *name, const char *backing, const char *bfmt,
		   qsnap_error *err)
{
	struct img_info info;
	bool data_file;
	int r;

	r = img_info(qemu_img, dir, name, "qcow2", false, &info, err);
	if (r < 0)
		return qerr_prefix(err, "layer %s is not a qcow2 image", name);
	data_file = info.data_file;
	img_info_free(&info);
	if (data_file)
		return qerr(err, EINVAL, "layer %s names a data file: a pulled layer may not", name);
	return img_rebase(qemu_img, dir, name, backing, bfmt, true, err);
}

void pull_fill_snapshot(struct pull *p, struct snapshot *s, const char *dir, char **tops,
			const char *parent, const char *checksum)
{
	json_object *m = p->snap.meta;

	s->name = xstrdup(p->snap.name);
	s->parent = xstrdup_or_null(parent);
	s->created = jint(m, "created", 0);
	s->dir = xstrdup(dir);
	s->mode = p->snap.has_ram ? QSNAP_RAM_SHARED : QSNAP_RAM_STREAM;
	s->was_running = jbool(m, "was_running", true);
	s->vmstate_size = p->snap.state.size;
	s->memory = (uint64_t)jint(m, "memory", 0);
	s->compressed = !strcmp(p->snap.state.file, SNAP_VMSTATE_ZST);
	s->vmstate_checksum = xstrdup(checksum);
	/* Checked against the pulled file by pull_check_state. */
	s->ram_checksum = p->snap.has_ram ? xstrdup_or_null(jstr(m, "ram_checksum")) : NULL;
	/* Checked against the pulled deltas by pull_check_state. */
	s->ram_base = p->snap.has_ram ? xstrdup_or_null(jstr(m, "ram_base")) : NULL;
	if (s->ram_base)
		(void)ram_chain_from_json(jarr(m, "ram_chain"), s); /* pull_check_state parsed it */
	/* What the machine state needs to load (format checked by artifact_def). */
	s->format = jstr(m, "format") ? VMSTATE_MAPPED_RAM : VMSTATE_STREAM;
	s->qemu_version = xstrdup_or_null(jstr(m, "qemu_version"));
	s->machine = xstrdup_or_null(jstr(m, "machine"));
	s->drives = xcalloc(p->snap.n_drives, sizeof(*s->drives));
	for (size_t i = 0; i < p->snap.n_drives; i++)
		if (tops[i]) {
			s->drives[s->n_drives].drive = xstrdup(p->snap.drives[i].id);
			s->drives[s->n_drives++].layer = xstrdup(tops[i]);
		}
}

/* A shared-RAM snapshot's RAM file, beside the machine state rel. */
static int check_ram(struct pull *p, const char *rel, qsnap_error *err)
{
	const char *want = jstr(p->snap.meta, "ram_checksum");
	_cleanup_free_ char *dir = xstrdup(rel), *ram = NULL, *sum = NULL;
	int r;

	if (!want)
		return 0; /* saved before qsnap recorded RAM checksums */
	if (!checksum_valid(want))
		return qerr(err, EINVAL, "the meta.json of snapshot '%s' in %s has a malformed RAM checksum",
			    p->snap.name, p->ref);
	*strrchr(dir, '/') = '\0';
	ram = layout_in(dir, SNAP_RAM);
	r = checksum_file(p->stagefd, ram, &sum, err);
	if (r < 0)
		return r;
	if (strcmp(want, sum))
		return qerr(err, EIO, "the RAM of snapshot '%s' does not match the checksum it was saved with (%s, expected %s)",
			    p->snap.name, sum, want);
	return 0;
}

/* A differential snapshot's base and older deltas, beside the machine
 * state rel: meta.json's ram_chain names one delta per file the artifact
 * brought, each with the size and checksum it was saved with. */
static int check_deltas(struct pull *p, const char *rel, qsnap_error *err)
{
	const char *base = jstr(p->snap.meta, "ram_base");
	_cleanup_free_ char *dir = xstrdup(rel);
	struct snapshot s = {0};
	int r = 0;

	if (!base)
		return 0;
	*strrchr(dir, '/') = '\0';
	if (!qsnap_name_valid(base) || ram_chain_from_json(jarr(p->snap.meta, "ram_chain"), &s) < 0 ||
	    s.n_ram_chain != p->snap.n_deltas) {
		size_t n = s.n_ram_chain;

		snapshot_free(&s);
		return qerr(err, EINVAL, "the meta.json of snapshot '%s' in %s has a malformed ram_base or ram_chain (%zu deltas, the config has %zu): push it again",
			    p->snap.name, p->ref, n, p->snap.n_deltas);
	}
	for (size_t k = 0; r >= 0 && k < s.n_ram_chain; k++) {
		const struct ram_delta *d = &s.ram_chain[k];
		_cleanup_free_ char *path = layout_in(dir, p->snap.deltas[k].file), *sum = NULL;

		if (p->snap.deltas[k].size != d->size) {
			r = qerr(err, EINVAL, "the config of %s is damaged: %s has %llu bytes, the delta of '%s' %llu",
				 p->ref, p->snap.deltas[k].file,
				 (unsigned long long)p->snap.deltas[k].size,
				 d->snapshot, (unsigned long long)d->size);
			break;
		}
		r = checksum_file(p->stagefd, path, &sum, err);
		if (r >= 0 && strcmp(sum, d->checksum))
			r = qerr(err, EIO, "%s of snapshot '%s' (the delta of '%s' it builds on) does not match the checksum it was saved with (%s, expected %s)",
				 p->snap.deltas[k].file, p->snap.name, d->snapshot, sum, d->checksum);
	}
	snapshot_free(&s);
	return r;
}

int pull_check_state(struct pull *p, const char *rel, char **ret_sum, qsnap_error *err)
{
	const char *want = jstr(p->snap.meta, "vmstate_checksum");
	int r = checksum_file(p->stagefd, rel, ret_sum, err);

	if (r < 0)
		return r;
	if (want && strcmp(want, *ret_sum))
		return qerr(err, EIO, "the machine state of snapshot '%s' does not match the checksum it was saved with (%s, expected %s)",
			    p->snap.name, *ret_sum, want);
	r = p->snap.has_ram ? check_ram(p, rel, err) : 0;
	return r < 0 ? r : check_deltas(p, rel, err);
}

int pull_artifact_def(struct pull *p, qsnap_def *def, char **ret_note, qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("the vm.json of %s", p->ref);
	_cleanup_free_ char *note = NULL;
	struct foreign f = {.trust = p->opts->trust_config, .qemu = p->opts->qemu};
	int r = vmdef_foreign(json_object_to_json_string(p->snap.vm), what, &f, def, &note, err);

	if (r < 0)
		return r;
	r = vmdef_foreign_meta(p->snap.meta, def, what, err);
	if (r < 0) {
		def_clear(def);
		return r;
	}
	/* Sizes against the definition, before a file is made for them. */
	if (p->snap.has_ram && p->snap.ram.size != def->memory) {
		r = qerr(err, EINVAL, "the config of %s is damaged: its RAM has %llu bytes, its vm.json says %llu",
			 p->ref, (unsigned long long)p->snap.ram.size, (unsigned long long)def->memory);
		def_clear(def);
		return r;
	}
	if (p->snap.state.size > foreign_vmstate_max(def->memory)) {
		r = qerr(err, EINVAL, "the config of %s is damaged: a machine state of %llu bytes for a guest of %llu MiB",
			 p->ref, (unsigned long long)p->snap.state.size,
			 (unsigned long long)(def->memory >> 20));
		def_clear(def);
		return r;
	}
	for (size_t k = 0; k < p->snap.n_deltas; k++)
		if (p->snap.deltas[k].size > foreign_vmstate_max(def->memory)) {
			r = qerr(err, EINVAL, "the config of %s is damaged: a delta of %llu bytes for a guest of %llu MiB",
				 p->ref, (unsigned long long)p->snap.deltas[k].size,
				 (unsigned long long)(def->memory >> 20));
			def_clear(def);
			return r;
		}
	if (ret_note)
		*ret_note = TAKE_PTR(note);
	if (def->n_drives != p->snap.n_drives)
		goto bad;
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		const struct oci_pdrive *pd = &p->snap.drives[i];

		if (strcmp(d->id, pd->id) || strcmp(d->format, pd->format) ||
		    (d->readonly && pd->n_layers) || (!d->readonly && !pd->n_layers))
			goto bad;
	}
	if (!def->kernel != !p->snap.has_kernel || !def->initrd != !p->snap.has_initrd)
		goto bad;
	return 0;
bad:
	def_clear(def);
	return qerr(err, EINVAL, "the config of %s is damaged: its vm.json and its drives disagree",
		    p->ref);
}
