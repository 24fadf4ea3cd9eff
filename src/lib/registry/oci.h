/* SPDX-License-Identifier: MIT */
/* The snapshot as an OCI artifact: the config blob and the manifest,
 * written by push and read by pull (oci.c). */
#ifndef QSNAP_OCI_H
#define QSNAP_OCI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "registry/registry.h"

/* ---- what push sends ---- */

struct oci_blob {
	const char *media_type;
	char *title; /* its name in the manifest (org.opencontainers.image.title) */
	size_t file; /* index of the file it is read from */
	uint64_t off, size;
	char digest[DIGEST_LEN + 1];
	bool chunk;    /* a chunk of the machine state or RAM */
	bool zero;     /* an all-zero chunk: recorded in the config, not sent */
	bool dup;      /* the same digest as an earlier blob */
	bool present;  /* the registry had it */
	bool uploaded; /* this push sent it */
	bool known;    /* its digest is in registry.json: not hashed again */
};

struct oci_drive {
	char *id, *format;
	size_t base;	/* blob index */
	size_t *layers; /* blob indexes, bottom first */
	size_t n_layers;
};

struct oci_chunks {
	char *file; /* its name in the snapshot directory */
	uint64_t size;
	size_t first, n; /* blob indexes */
};

struct oci_config {
	struct oci_drive *drives;
	size_t n_drives;
	ssize_t kernel, initrd; /* blob indexes, -1: none */
	struct oci_chunks state;
	bool has_ram;
	struct oci_chunks ram;
	/* A differential snapshot's older deltas, oldest first (delta.1 ..):
	 * written as version QSNAP_CONFIG_VERSION_DIFF, with diff set. */
	bool diff;
	struct oci_chunks *deltas;
	size_t n_deltas;
};

void oci_config_free(struct oci_config *c);
/* The config blob's text from blobs whose digests are known. */
int oci_config_build(const struct oci_config *c, const struct oci_blob *blobs, const char *vmjson,
		     const char *meta, char **ret, qsnap_error *err);
struct snapshot;
char *oci_manifest_build(const struct oci_blob *blobs, size_t n, const char *config_digest,
			 size_t config_size, const struct snapshot *s);

/* ---- what pull reads ---- */

struct oci_item {
	char digest[DIGEST_LEN + 1]; /* "" for an all-zero chunk */
	uint64_t size;
};

struct oci_pdrive {
	char *id, *format;
	struct oci_item base;
	struct oci_item *layers;
	size_t n_layers;
};

struct oci_pchunks {
	char *file;
	uint64_t size, chunk_size;
	struct oci_item *chunks;
	size_t n;
};

struct oci_snapshot {
	char *name;
	json_object *vm;   /* vm.json with paths inside the artifact */
	json_object *meta; /* the snapshot's meta.json */
	struct oci_pdrive *drives;
	size_t n_drives;
	bool has_kernel, has_initrd;
	struct oci_item kernel, initrd;
	struct oci_pchunks state;
	bool has_ram;
	struct oci_pchunks ram;
	/* A differential snapshot's older deltas, oldest first: files
	 * delta.1 .. delta.<n_deltas> (meta.json's ram_chain says whose). */
	struct oci_pchunks *deltas;
	size_t n_deltas;
};

/* The manifest: its config's digest and size, after checking that it is
 * a qsnap snapshot. what names it in errors. */
int oci_manifest_parse(const char *text, const char *what, struct oci_item *ret_config,
		       json_object **ret_layers, qsnap_error *err);
/* The config; every blob it names must be among the manifest's layers. */
int oci_config_parse(const char *text, const char *what, json_object *layers,
		     struct oci_snapshot *ret, qsnap_error *err);
void oci_snapshot_free(struct oci_snapshot *s);

/* ---- registry.json (oci_record.c) ---- */

json_object *oci_record_load(int dirfd);
bool oci_record_match(json_object *rec, int dirfd, const char *path, const char *digest);
void oci_record_set(json_object *rec, int dirfd, const char *path, const char *digest);
/* A pulled layer: it holds blob digest, re-pointed at a local backing file. */
void oci_record_set_rebased(json_object *rec, int dirfd, const char *path, const char *digest);
int oci_record_save(json_object *rec, int dirfd, qsnap_error *err);
void oci_record_set_chunks(json_object *rec, int dirfd, const char *path, uint64_t chunk_size,
			   const char *const *digests, size_t n);
const char *oci_record_find_chunk(json_object *rec, int dirfd, const char *digest,
				  uint64_t *ret_off);
const char *oci_record_digest(json_object *rec, int dirfd, const char *path);
bool oci_record_chunks(json_object *rec, int dirfd, const char *path, uint64_t chunk_size,
		       size_t n, char (*ret)[DIGEST_LEN + 1]);

#endif
