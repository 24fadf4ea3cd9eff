/* SPDX-License-Identifier: MIT */
/* Internal to the import (import*.c): the import under way, the archive
 * read and its files staged and checked (import_archive.c), and the
 * staged files made a VM directory (import_vmdir.c). */
#ifndef QSNAP_IMPORT_H
#define QSNAP_IMPORT_H

#include "ops/ops.h"

/* A file the export's manifest lists. */
struct mfile {
	char *path; /* in the archive */
	uint64_t size;
	char *checksum; /* NULL: not checked (the manifest itself) */
	bool seen;
};

/* The import under way. */
struct import {
	const char *input;
	const qsnap_import_opts *opts;
	int stagefd;
	char *name; /* the snapshot */
	qsnap_ram_mode mode; /* shared: the archive holds its RAM file */
	int64_t created;
	bool was_running;
	struct mfile *files;
	size_t n_files;
	char *vmjson, *meta; /* the small files, read into memory */
	char *note;	     /* what vm.json lost or gave (vmdef_foreign) */
	uint64_t done;
	struct progress progress; /* its total grows as files are found */
};

/* ---- the archive (import_archive.c) ---- */

/* Read the archive: its manifest first, then every file it lists, each
 * checked against its size and checksum; the small files into memory,
 * the others into the staging directory (im->stagefd). */
int import_unpack(struct import *im, qsnap_error *err);
/* The archive's qsnap-export.json: the snapshot and the files it lists
 * (into im->name, im->files). */
int import_parse_manifest(struct import *im, const char *text, qsnap_error *err);
/* k for snapshot/delta.<k> (1 .. RAM_CHAIN_MAX), else 0. */
size_t import_delta_index(const char *path);
/* The manifest's entry for a path of the archive; NULL: not listed. */
struct mfile *import_find_mfile(struct import *im, const char *path);

/* ---- the VM directory (import_vmdir.c) ---- */

/* The staged files (in stagedir, which is im->stagefd) made a VM
 * directory that will be renamed to final: vm.json with the final paths,
 * layers, the snapshot, meta.json and state.json. */
int import_build_vm(struct import *im, const char *stagedir, const char *final,
		    qsnap_error *err);

#endif
