/* SPDX-License-Identifier: MIT */
/* Internal to the pull (pull*.c): the pull under way (the artifact, its
 * staging directory, the files it downloads into and the blobs that go
 * there), the downloads (pull_blobs.c), what the downloaded files become
 * (pull_files.c), and the two ways a pull ends: a new VM directory
 * (pull_new.c) or a snapshot added to an existing VM (pull_into.c). */
#ifndef QSNAP_PULL_H
#define QSNAP_PULL_H

#include "ops/ops.h"

#define SINK_BUF (1 << 20) /* what one read or write of a pulled file moves */

/* A file the pull downloads into. */
struct dst {
	char *rel; /* in the staging directory */
	int fd;
	uint64_t size;
};

/* One blob to download (or copy from the VM) into a dst at off. */
struct job {
	struct oci_item item;
	size_t dst;
	uint64_t off;
	char *title; /* "layer 2 of drive 'vda'" */
	char *local; /* copied from this file of the VM (an earlier pull's chunk) */
	uint64_t local_off;
};

/* The pull under way. */
struct pull {
	const qsnap_pull_opts *opts;
	const char *ref;
	struct registry *reg;
	struct oci_snapshot snap;
	char digest[DIGEST_LEN + 1];
	int stagefd;
	char *stage; /* absolute */
	struct dst *dsts;
	size_t n_dsts;
	struct job *jobs;
	size_t n_jobs;
	uint64_t total, got;
	int64_t t0;
	qsnap_pull_stats st;
	json_object *record; /* registry.json: digests of pulled files */
	int vmdirfd;	     /* pulling into an existing VM: its directory, else -1 */
	char *note;	     /* what the artifact's vm.json lost or gave (vmdef_foreign) */
};

/* ---- the downloads (pull_blobs.c) ---- */

/* A file to download into, rel inside the staging directory; its index. */
size_t pull_add_dst(struct pull *p, const char *rel, uint64_t size);
/* A blob to download into file dst at off; title names it in errors. */
void pull_add_job(struct pull *p, const struct oci_item *it, size_t dst, uint64_t off,
		  const char *title);
/* A machine state or RAM file in chunks: the chunks an earlier pull into
 * this VM left in its files are copied from there, the others downloaded. */
void pull_add_chunk_jobs(struct pull *p, const struct oci_pchunks *ch, const char *rel,
			 const char *what);
/* Every job, a few at a time, with progress; then the files synced, and
 * what was downloaded and reused counted in p->st. */
int pull_download(struct pull *p, qsnap_error *err);
/* A pulled machine state or RAM file: the digest of each of its chunks. */
void pull_record_chunks(json_object *rec, int dirfd, const char *path,
			const struct oci_pchunks *ch);

/* ---- the files made usable (pull_files.c) ---- */

/* The qemu-img that makes pulled layers usable: the one on PATH (the
 * pulled VM's own, qemu_img_for, checks its base images). */
#define PULL_QEMU_IMG "qemu-img"
/* A pulled layer names no data file, and its backing file is the one we
 * say (the header only: qemu-img rebase -u). */
int pull_fix_layer(const char *qemu_img, const char *dir, const char *name, const char *backing,
		   const char *bfmt, qsnap_error *err);
/* The snapshot entry for state.json, its layers given. */
void pull_fill_snapshot(struct pull *p, struct snapshot *s, const char *dir, char **tops,
			const char *parent, const char *checksum);
/* The reassembled machine state is the one that was saved, and so is a
 * shared-RAM snapshot's RAM file (meta.json's RAM checksum). */
int pull_check_state(struct pull *p, const char *rel, char **ret_sum, qsnap_error *err);
/* The definition the artifact carries, taken as data (vmdef_foreign) and
 * checked against its drives; ret_note (may be NULL): what was dropped or
 * taken, for the user. */
int pull_artifact_def(struct pull *p, qsnap_def *def, char **ret_note, qsnap_error *err);

/* ---- where it goes (pull_new.c, pull_into.c) ---- */

/* Everything into the staging directory, made a VM directory there, then
 * renamed to final. */
int pull_new(struct pull *p, const char *final, qsnap_error *err);
/* The snapshot added to an existing VM: the layers it has already reused,
 * the rest staged inside the VM directory and moved into place. */
int pull_into(struct pull *p, qsnap_vm *vm, qsnap_error *err);

#endif
