/* SPDX-License-Identifier: MIT */
/* The VM directory floor of libqsnap: its layout (layout.h), the VM handle,
 * the lock, vm.json, state.json (state.h) and meta.json (one reader and one
 * writer each), drive layers and their garbage collection. Uses the QEMU
 * floor only for qemu-img. */
#ifndef QSNAP_VMDIR_H
#define QSNAP_VMDIR_H

#include <pthread.h>

#include "qemu/qemu.h"
#include "vmdir/layout.h"
#include "vmdir/state.h"

/* ---- the VM handle (vmdir.c) ---- */

struct qsnap_vm {
	char *dir;  /* absolute path */
	int dirfd;
	int lockfd; /* -1 when opened read-only */
	bool readonly;
	qsnap_def def;
	struct state st;
	struct qmp *qmp; /* connection to the running QEMU, opened on demand */
	char *notice;	 /* what the last call wants the user to know (qsnap_vm_notice) */
	/* qsnap_vm_cancel raises it (any thread); the calls that honour it
	 * arm it while they run, and their waits watch it (vm_cancel_fd). */
	int cancelfd;
	bool cancel_armed;
	struct qmp_bounds qmp_bounds; /* given to every QMP connection of vm */
	/* A removed shared RAM file's pages, freed by a thread (vm_drop_ram)
	 * that vm_ram_settle joins. */
	pthread_t ram_release;
	bool ram_releasing;
};
/* The cancellation the waits of the running call watch: vm->cancelfd while
 * armed, else -1. */
int vm_cancel_fd(qsnap_vm *vm);
/* A call that honours cancellation arms it first (a cancellation raised
 * before is honoured at its first wait) and ends with vm_cancel_end (which
 * drops one raised too late to matter). Its undo runs under
 * vm_cancel_hold: not cancelled, and no QMP wait past grace_ms from now. */
void vm_cancel_arm(qsnap_vm *vm);
void vm_cancel_hold(qsnap_vm *vm, int grace_ms);
void vm_cancel_end(qsnap_vm *vm);
/* Set (fmt NULL: clear) the VM's notice. */
void vm_set_notice(qsnap_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A path inside the VM directory, for messages: "DIR/rel". */
char *vm_path(qsnap_vm *vm, const char *rel);
/* Open dir (vm->dir, vm->dirfd): it must be a VM directory of this user. */
int vmdir_open(qsnap_vm *vm, const char *dir, qsnap_error *err);
/* Take the VM's lock (lock.c): flock on VMDIR/lock, waiting up to timeout
 * seconds for another command to finish. */
int vmdir_lock(qsnap_vm *vm, int timeout, qsnap_error *err);
/* Read vm.json and state.json into vm->def and vm->st. */
int vmdir_load(qsnap_vm *vm, qsnap_error *err);
/* Save state.json atomically. */
int vm_write_state(qsnap_vm *vm, qsnap_error *err);
/* Write vm.json and state.json into the VM directory dirfd that is being
 * made (import and pull make one in a staging directory). */
int vmdir_write(int dirfd, const qsnap_def *def, const struct state *st, qsnap_error *err);
/* Look up a snapshot; the error lists the ones there are. */
int find_snapshot(qsnap_vm *vm, const char *name, struct snapshot **ret, qsnap_error *err);

/* ---- meta.json (meta.c) ---- */

/* A differential snapshot's chain in state.json and meta.json: an array
 * of {snapshot, size, checksum}; from_json fails (-EINVAL) on a bad one. */
int ram_chain_from_json(json_object *arr, struct snapshot *s);
json_object *ram_chain_to_json(const struct snapshot *s);

/* A snapshot's meta.json: what it is, for a reader without state.json
 * (export, push, verify). Written into dir (the partial or the final
 * snapshot directory, relative to dirfd). */
int meta_write(int dirfd, const char *dir, const struct snapshot *s, qsnap_error *err);
int meta_read(int dirfd, const struct snapshot *s, char **ret_text, qsnap_error *err);
char *meta_text(const struct snapshot *s);

/* ---- drive layers (chain.c) ---- */

/* Create a new empty qcow2 layer for drive on top of backing (a layer path,
 * or NULL for the drive's base image); returns its path in ret_path. */
int chain_new_layer(qsnap_vm *vm, const qsnap_drive_def *d, const char *backing, char **ret_path,
		    qsnap_error *err);
/* The layers that neither a snapshot nor an active chain needs (the
 * planner of delete and gc; strv_free it, NULL: none). */
char **chain_unneeded(const struct state *st);
/* Forget and remove every layer file that chain_unneeded names. */
int chain_gc(qsnap_vm *vm, qsnap_error *err);
/* The layers of a chain, bottom first, ending with top (none if NULL);
 * free() the array, not the strings. */
size_t chain_layers(const struct state *st, const char *top, const char ***ret);
/* How many images a drive reads through: the base and the layers up to top. */
size_t chain_length(const struct state *st, const char *top);
/* Compaction's planner. The next merge: a layer that no snapshot and no
 * live disk names, with exactly one layer on top; returned is that child,
 * which takes the layer in and gets its backing. NULL: none. */
struct layer *chain_next_merge(const struct state *st);
/* The active layers whose chain (base image included) is longer than
 * max_chain: each is flattened onto its base (strv_free; NULL: none). */
char **chain_too_long(const struct state *st, unsigned max_chain);
/* A drive of the definition by id. */
const qsnap_drive_def *def_drive(const qsnap_def *def, const char *id);

/* ---- vm.json (vmdef.c) ---- */

int vmdef_to_json(const qsnap_def *def, char **ret_text, qsnap_error *err);
int vmdef_from_json(const char *text, const char *what, qsnap_def *def, qsnap_error *err);
int vmdef_check(const qsnap_def *def, qsnap_error *err);
/* The defaults, and freeing what a definition holds (not def itself). */
void def_init(qsnap_def *def);
void def_clear(qsnap_def *def);
/* Add a drive from ID=PATH[,if=...][,format=...][,readonly] (vmdef_input.c). */
int def_add_drive(qsnap_def *def, const char *spec, qsnap_error *err);
/* A deep copy. */
void def_copy(qsnap_def *dst, const qsnap_def *src);
bool drive_id_valid(const char *id);
/* A drive's interface by name (vmdef_input.c), both ways. */
const char *iface_name(qsnap_iface i);
int iface_parse(const char *s, qsnap_iface *ret);
/* The save settings' words in vm.json and qsnap config: auto, stream,
 * mapped-ram; auto, on, off. */
const char *save_path_name(enum save_path p);
int save_path_parse(const char *s, enum save_path *ret);
const char *setting_name(enum setting s);
int setting_parse(const char *s, enum setting *ret);

/* ---- a vm.json from elsewhere (vmdef_foreign.c) ---- */

/* How a definition from an archive or registry is taken. */
struct foreign {
	bool trust;	  /* --trust-config: keep its qemu, ram_dir, extra_args, machine */
	const char *qemu; /* the QEMU the user names; NULL: this host's default */
};
/* The vm.json an archive or artifact carries (text), read as data: drives
 * as images/<id>.<format>, kernel and initrd under boot/, bounded memory,
 * CPUs and names; its qemu, ram_dir, extra_args, serial_log_max and a
 * machine type that is not pc, q35 or a pc-* type the local QEMU lists
 * dropped unless trusted.
 * ret_note: one line for the user saying what was dropped or taken (NULL:
 * nothing). */
int vmdef_foreign(const char *text, const char *what, const struct foreign *f, qsnap_def *def,
		  char **ret_note, qsnap_error *err);
/* That snapshot's meta.json: a known format, a machine type that is a
 * plain name, the RAM size of the definition. */
int vmdef_foreign_meta(json_object *meta, const qsnap_def *def, const char *what,
		       qsnap_error *err);
/* The largest machine state a snapshot of a guest with memory bytes of
 * RAM may have: what a file from elsewhere is held to before it is made. */
uint64_t foreign_vmstate_max(uint64_t memory);
/* A machine type's name: [a-z0-9._-], nothing QEMU reads as options. */
bool machine_name_plain(const char *m);

#endif
