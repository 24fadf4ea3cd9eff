/* SPDX-License-Identifier: MIT */
/* Internal to the push (push*.c): the push under way, the snapshot's
 * files and the blobs they make (push_collect.c), and the blobs' digests,
 * checks and uploads (push_blobs.c). */
#ifndef QSNAP_PUSH_H
#define QSNAP_PUSH_H

#include "ops/ops.h"

/* A file of the snapshot, open: one blob, or a machine state or RAM file
 * in chunks. */
struct pfile {
	char *path; /* absolute */
	char *key;  /* in registry.json: relative inside the VM directory */
	int fd;
	uint64_t size;
	bool chunked;
	size_t first, n; /* its blobs */
};

struct push {
	qsnap_vm *vm;
	const struct snapshot *s;
	const qsnap_push_opts *opts;
	struct pfile *files;
	size_t n_files;
	struct oci_blob *blobs;
	size_t n_blobs;
	uint64_t total, hashed, to_send, sent;
	const char *phase;
	int64_t t0;
};

/* ---- what goes (push_collect.c) ---- */

/* The snapshot's files and their blobs: base images, layers, kernel,
 * initrd, machine state, shared RAM; cfg says how they fit together. */
int push_collect(struct push *p, struct oci_config *cfg, qsnap_error *err);
/* vm.json as the artifact carries it: paths inside the artifact. */
int push_vmjson(qsnap_vm *vm, char **ret, qsnap_error *err);

/* ---- the blobs (push_blobs.c) ---- */

/* Digests of files that have not changed since an earlier push or pull. */
void push_recall(struct push *p, json_object *rec);
/* Every blob digested, checked for at the registry and, where it lacks
 * it, uploaded, with progress; a blob of zeros or one met before goes once
 * or not at all. */
int push_blobs(struct push *p, struct registry *reg, qsnap_error *err);
/* The digests for the next push; losing them costs hashing, not
 * correctness. */
void push_remember(struct push *p, json_object *rec);

#endif
