/* SPDX-License-Identifier: MIT */
/* state.json: what qsnap knows now about a VM directory. */
#ifndef QSNAP_STATE_H
#define QSNAP_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "qsnap.h"

/* One qcow2 file of a drive's chain, relative to the VM directory. */
struct layer {
	char *path;
	char *drive;
	char *backing; /* the layer below, NULL: the drive's base image */
};

struct snap_drive {
	char *drive;
	char *layer; /* the frozen top layer of that drive in this snapshot */
};

/* The machine state file's format: QEMU's plain stream, or "mapped-ram",
 * RAM at fixed offsets (a sparse file as long as the guest's RAM, written by
 * multifd channels; QEMU >= 9.0). */
enum vmstate_format {
	VMSTATE_STREAM,
	VMSTATE_MAPPED_RAM,
};
/* "mapped-ram" as state.json and meta.json say it; NULL for the stream. */
const char *vmstate_format_name(enum vmstate_format f);

/* One older delta of a differential snapshot's chain: <dir>/delta.<k>,
 * a hard link to that snapshot's machine state file. */
struct ram_delta {
	char *snapshot; /* the snapshot it was saved as (it may be gone) */
	uint64_t size;
	char *checksum;
};
/* The most deltas a chain holds (the newest one's own included): a save
 * past it writes every page changed since the RAM file again. */
#define RAM_CHAIN_MAX 16

struct snapshot {
	char *name;
	char *parent;
	int64_t created;
	char *dir;	  /* snapshots/<name>: vmstate, meta.json */
	qsnap_ram_mode mode; /* shared: RAM in <dir>/ram */
	bool was_running; /* restore leaves the vCPUs running */
	uint64_t vmstate_size;
	uint64_t memory; /* guest RAM size at save time */
	bool compressed; /* <dir>/vmstate.zst instead of <dir>/vmstate */
	char *vmstate_checksum; /* "xxh3-128:...", NULL for older snapshots */
	char *ram_checksum;	/* of <dir>/ram (holes as zeros); NULL: none */
	/* A differential snapshot: <dir>/ram is a hard link to the RAM file
	 * of snapshot ram_base (at its save), and the stream holds only the
	 * pages written since, loaded without x-ignore-shared. NULL: none. */
	char *ram_base;
	/* The deltas (oldest first) a restore loads before this one's stream:
	 * <dir>/delta.1 .. delta.<n_ram_chain>. None: a delta of the RAM file. */
	size_t n_ram_chain;
	struct ram_delta *ram_chain;
	/* The QEMU and versioned machine type it was saved with (NULL for
	 * older snapshots): it loads only into that machine type. */
	char *qemu_version;
	char *machine;
	enum vmstate_format format;
	size_t n_drives;
	struct snap_drive *drives;
};

struct active {
	char *drive;
	char *layer; /* the layer the guest writes to */
};

struct state {
	unsigned long seq; /* numbers new layer files */
	size_t n_layers;
	struct layer *layers;
	size_t n_active;
	struct active *active;
	size_t n_snapshots;
	struct snapshot *snapshots;
	char *current; /* the snapshot the current state descends from */
	pid_t qemu_pid; /* 0: no QEMU */
	unsigned long long qemu_start;
	/* The file the running QEMU's RAM is mapped from (NULL: anonymous),
	 * and whether it is ours and shared (else a snapshot's, copy-on-write). */
	char *ram_file;
	bool ram_shared;
	/* A RAM file mapped copy-on-write: the machine state checksum of the
	 * snapshot whose RAM the guest had when the mapping's pages were last
	 * known (its restore, or its differential save); a differential save
	 * writes what changed since. NULL: unknown. */
	char *ram_parent;
	/* The snapshot whose save left the (paused) QEMU in postmigrate state. */
	char *postmigrate;
	bool inspect; /* the QEMU runs a memory dump with read-only disks */
	char *qemu_machine; /* the machine type the running QEMU was started with */
	/* A save under way: its partial directory, and whether the VM ran
	 * before it paused it. An interrupted save is undone on open. */
	char *pending;
	bool pending_resume;
	/* The versioned machine type (e.g. pc-i440fx-7.2) that vm.json's
	 * machine (machine_for; "" for QEMU's default) resolved to when the VM
	 * first started: QEMU always starts with it, so that snapshots load
	 * after a QEMU upgrade too. */
	char *machine;
	char *machine_for;
};

/* Parse state.json; a damaged file is an error naming the field
 * (state_problem's checks included), and st is left empty. */
int state_from_json(const char *text, const char *what, struct state *st, qsnap_error *err);
/* What does not hold between the entries of a parsed state (state_check.c):
 * a backing that is no layer of its drive, backing files that form a
 * cycle, a layer of active or of a snapshot that is not its drive's, a
 * QEMU pid without its start time. NULL when all holds, else "bad
 * 'FIELD': why" (free it). */
char *state_problem(const struct state *st);
int state_to_json(const struct state *st, char **ret_text, qsnap_error *err);
void state_free(struct state *st);

struct layer *state_layer(struct state *st, const char *path);
struct snapshot *state_snapshot(struct state *st, const char *name);
struct active *state_active(struct state *st, const char *drive);
void state_add_layer(struct state *st, const char *path, const char *drive, const char *backing);
/* Set the active layer of a drive (adding the entry when missing). */
void state_set_active(struct state *st, const char *drive, const char *layer);
/* Remove a layer entry (not its file). */
void state_remove_layer(struct state *st, const char *path);
/* Remove a snapshot entry (not its files). */
void state_remove_snapshot(struct state *st, const char *name);
void snapshot_free(struct snapshot *s);
/* <dir>/delta.<k> (k from 1, the oldest), relative to the VM directory. */
char *snapshot_delta(const struct snapshot *s, size_t k);
/* The machine state file of a snapshot, relative to the VM directory. */
char *snapshot_vmstate(const struct snapshot *s);

#endif
