/* SPDX-License-Identifier: MIT */
/* The top floor of libqsnap: the operations qsnap.h offers, one file each
 * (or a few with a small header of their own: pull*.c and pull.h, push*.c
 * and push.h, import*.c and import.h), and the VM's QEMU that they share
 * (machine.c). Each operation owns its recovery from an interruption,
 * which open.c calls. */
#ifndef QSNAP_OPS_H
#define QSNAP_OPS_H

#include "qemu/stream.h"
#include "registry/oci.h"
#include "vmdir/vmdir.h"

/* ---- the VM's QEMU (machine.c) ---- */

/* How to launch QEMU for this VM. */
struct launch {
	bool incoming;	      /* -incoming defer */
	int timeout;	      /* seconds for QMP to come up */
	const char *ram_file; /* guest RAM from this file; NULL: anonymous */
	bool ram_share;	      /* MAP_SHARED (ours to copy) or copy-on-write */
	bool ram_readonly;    /* copy-on-write of the file opened read-only */
	unsigned ram_prealloc; /* anonymous RAM allocated up front by N threads */
	bool readonly_disks;  /* inspecting a memory dump: change nothing */
	const char *machine;  /* a snapshot's machine type; NULL: the VM's */
};
/* The machine type QEMU starts with when nothing else says: the versioned
 * one recorded for vm.json's machine, else vm.json's (NULL: default). */
const char *vm_machine(const qsnap_def *def, const struct state *st);
/* QEMU's command line for this VM as state.json has it now. */
int vm_argv(qsnap_vm *vm, const struct launch *l, char ***ret_argv, qsnap_error *err);
int vm_launch(qsnap_vm *vm, const struct launch *l, qsnap_error *err);
/* Is the QEMU recorded in state.json alive? */
bool vm_qemu_alive(qsnap_vm *vm);
/* Connect to the running QEMU's QMP socket (cached). */
int vm_qmp(qsnap_vm *vm, struct qmp **ret, qsnap_error *err);
/* Drop the cached QMP connection. */
void vm_qmp_close(qsnap_vm *vm);
/* Forget the QEMU in state (it exited); closes the QMP connection. */
void vm_forget_qemu(qsnap_vm *vm);
/* The error message with the tail of run/qemu.log appended. */
int vm_err_qemu_log(qsnap_vm *vm, qsnap_error *err);
/* QEMU's run state from query-status: "running", "paused", "postmigrate", ... */
int vm_query_status(qsnap_vm *vm, char **ret_status, bool *ret_running, qsnap_error *err);
/* Let the vCPUs run. */
int vm_cont(qsnap_vm *vm, qsnap_error *err);
/* Stop QEMU: quit, then SIGKILL after timeout seconds. */
int vm_kill_qemu(qsnap_vm *vm, int timeout, qsnap_error *err);
/* The directory of this VM's shared RAM file (created 0700), absolute. */
int vm_ram_dir(qsnap_vm *vm, char **ret, qsnap_error *err);
/* Give the VM a fresh, empty shared RAM file for a new QEMU. */
int vm_new_ram_file(qsnap_vm *vm, char **ret_path, qsnap_error *err);
/* Forget (and for a shared file, remove) the RAM of a QEMU that is gone.
 * The name goes at once; the pages are freed by a thread that
 * vm_ram_settle waits for (the calls that drop RAM, and qsnap_vm_close,
 * end with it). */
void vm_drop_ram(qsnap_vm *vm);
void vm_ram_settle(qsnap_vm *vm);
/* Recovery (open.c): end a QEMU that run/qemu.pid names but state.json
 * does not (a start interrupted before it recorded it); forget a recorded
 * QEMU that is gone. */
void machine_end_orphan(qsnap_vm *vm);
int machine_recover(qsnap_vm *vm, qsnap_error *err);

/* ---- the background save's process (background.c, qsnap-saver) ---- */

/* The saver's descriptors: 0-2 /dev/null, and its ready pipe after these. */
enum {
	SAVER_FD_LOCK = 3, /* the VM's lock: the caller's open file description, locked */
	SAVER_FD_DIR,	   /* the VM directory */
	SAVER_FD_READY,	   /* the ready pipe (helper_start puts it last) */
};
/* A VM handle on the directory dir open at dirfd, under the lock held on
 * lockfd, both handed over by a process that had it open (open.c): no
 * recovery, nothing was interrupted. Takes both fds, also on failure. */
int vm_adopt(const char *dir, int dirfd, int lockfd, qsnap_vm **ret_vm, qsnap_error *err);
/* The saver (in qsnap-saver, on the descriptors above): saves, reporting
 * in run/; returns its exit status. */
int background_saver(const char *dir, const char *name, const qsnap_save_opts *opts);

/* ---- operations used by other operations ---- */

/* Restore a snapshot (restore.c); paused overrides the snapshot's run state. */
int restore_into(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts, bool paused,
		 qsnap_error *err);
/* Before a restore touches the running VM (restore_check.c): the
 * snapshot's files are there and look right (returns the opened machine
 * state), and its machine type and format can be loaded. */
int restore_check_files(qsnap_vm *vm, const struct snapshot *s, int *ret_fd, qsnap_error *err);
int restore_check_machine(qsnap_vm *vm, const struct snapshot *s, qsnap_error *err);
/* Is the running QEMU the binary vm.json names (it may have been edited)? */
bool restore_running_binary_is_defs(qsnap_vm *vm);
/* End a QEMU that an interrupted restore left waiting for its state. */
int restore_recover(qsnap_vm *vm, qsnap_error *err);
/* Undo a save that was interrupted (save.c). */
int save_recover(qsnap_vm *vm, qsnap_error *err);
/* qsnap_vm_compact without folding RAM chains: a save's upkeep of the
 * disks (compact.c). */
int vm_compact_disks(qsnap_vm *vm, unsigned max_chain, qsnap_error *err);
/* "a, b, c": the drive ids of a definition (publish.c). */
char *drive_ids(const qsnap_def *def);

/* ---- chains of differential snapshots (ram_chain.c) ---- */

/* The snapshot whose RAM the VM's copy-on-write mapping was at when last
 * known (vm->st.ram_parent, its RAM file the one mapped), or NULL. */
const struct snapshot *ram_chain_parent(qsnap_vm *vm);
/* The chain a delta built on p has: p's own, then p itself when p is a
 * delta (none when p is the RAM file's snapshot). Returns its length;
 * *ret (free with ram_chain_free) and *ret_paths (the files in p, NULL
 * terminated, strv_free) oldest first. */
size_t ram_chain_of_child(const struct snapshot *p, struct ram_delta **ret, char ***ret_paths);
void ram_chain_free(struct ram_delta *c, size_t n);
struct ram_delta ram_delta_dup(const struct ram_delta *d);
/* Read a delta's stream (path in dirfd) whole, its size and checksum
 * checked against want: its page and zero records (stream.h's
 * records_only, keep asked about those of ram0) go to out_fd (-1: none). */
int delta_read(int dirfd, const char *path, const struct ram_delta *want, stream_keep_fn keep,
	       void *data, int out_fd, int cancel_fd, qsnap_error *err);
/* What a chain (ram_chain_of_child's n deltas and their files) writes
 * into each page of the RAM block. */
struct ram_index;
int ram_index_build(qsnap_vm *vm, const struct ram_delta *chain, char *const *paths, size_t n,
		    struct ram_index **ret, qsnap_error *err);
/* Does the chain write this content at offset? *known: it writes the page. */
bool ram_index_same(const struct ram_index *ix, uint64_t offset, const uint8_t *page, size_t len,
		    bool *known);
void ram_index_free(struct ram_index *ix);
/* Can s's chain be folded into a RAM file of its own (ram_fold.c)? If
 * not, *why says why. */
bool ram_fold_possible(qsnap_vm *vm, const struct snapshot *s, const char **why);

/* ---- export and import (export.c, import.c) ---- */

/* The first file of an export: what it holds, with sizes and checksums. */
/* What an undo gives QEMU to answer and to let go of a file it was given
 * (a pipe of ours) before it is killed: the undo of a command that was
 * cancelled or ran out of time ends this long after, whatever QEMU does. */
#define UNDO_GRACE_MS 10000
/* A migration completed: QEMU closed its end, the pump's last bytes. */
#define PUMP_END_MS 60000

#define EXPORT_MANIFEST "qsnap-export.json"
#define EXPORT_FORMAT "qsnap-export"
#define EXPORT_VERSION 1
/* The snapshot inside an export; vm.json, images/ and boot/ are named as in
 * a VM directory (layout.h), where import puts them. */
#define EXPORT_META "snapshot/meta.json"
#define EXPORT_VMSTATE "snapshot/vmstate"
/* A shared-RAM snapshot's RAM file, and a differential one's older deltas
 * (snapshot/delta.1 .. delta.N, oldest first), as in its directory. */
#define EXPORT_RAM "snapshot/ram"
#define EXPORT_DELTA "snapshot/delta."

#endif
