/* SPDX-License-Identifier: MIT */
/* A restore as a transaction (restore.c): what it has done so far, so that
 * one undo can walk back from there; and where the new QEMU's RAM comes
 * from (restore_ram.c). */
#ifndef QSNAP_OPS_RESTORE_H
#define QSNAP_OPS_RESTORE_H

#include "ops/ops.h"

/* Where the new QEMU's RAM comes from (docs/design.md, shared-RAM mode). */
enum restore_ram {
	RAM_ANON,  /* anonymous RAM that the stream fills */
	RAM_FRESH, /* a fresh, empty shared file that the stream fills */
	RAM_MAP,   /* the snapshot's RAM file mapped copy-on-write (lazy) */
	RAM_COPY,  /* a copy of the snapshot's RAM file in a fresh shared file */
};

/* Seconds for a restore's new QEMU to answer on QMP. */
#define RESTORE_QMP_TIMEOUT 60

struct restore {
	qsnap_vm *vm;
	const char *name;
	const qsnap_restore_opts *opts;
	bool paused; /* leave the vCPUs stopped whatever the snapshot says */
	struct snapshot *s;
	struct launch l;
	enum restore_ram ram_how;
	bool ram_readonly; /* RAM_MAP: QEMU opens the file read-only */
	char *ram_early;   /* RAM_COPY: made and checked before QEMU ended */
	char *ram;	   /* the new QEMU's RAM file, or NULL */
	char **layers;	   /* per drive of vm.json: its fresh layer, or NULL */
	int fd;		   /* the machine state */
	int qemu_fd;
	struct pump *pump;
	struct chain_feed *feed; /* a chain of deltas into QEMU (restore_chain.c) */
	struct mig_target tgt;
	/* How far it got. */
	enum {
		RESTORE_CHECKED,  /* nothing changed yet */
		RESTORE_STOPPED,  /* the running QEMU (if any) ended */
		RESTORE_RAM,	  /* the new layers and RAM file are made */
		RESTORE_LAUNCHED, /* a new QEMU runs, waiting for the state */
		RESTORE_LOADING,  /* QEMU was reading the state */
	} stage;
};

/* Before the running VM is touched: how RAM will be restored; an eager
 * copy is made (or, without room for it beside the running VM's RAM,
 * checked) now, so that a damaged RAM file is refused while the VM still
 * runs. */
int restore_ram_plan(struct restore *rs, qsnap_error *err);
/* After the running QEMU ended: the new QEMU's RAM file (rs->l, rs->ram). */
int restore_ram_prepare(struct restore *rs, qsnap_error *err);
/* With the new QEMU started: a copy-on-write mapping that QEMU could punch
 * holes into (no read-only open, and a device that discards RAM) is not
 * kept; *ret_eager says the restore must go on eagerly, and why is in
 * the VM's notice. */
int restore_ram_guard(struct restore *rs, bool *ret_eager, qsnap_error *err);
/* The fresh RAM file is ours to remove (before QEMU uses it). */
void restore_ram_drop(struct restore *rs);
/* A differential snapshot with older deltas: a thread writes the stream
 * QEMU loads into a pipe (*ret_qemu_fd, its read end). finish waits until
 * it wrote all (or deadline, or cancellation); with cancel it is stopped. */
int restore_chain_start(struct restore *rs, int *ret_qemu_fd, qsnap_error *err);
int restore_chain_finish(struct restore *rs, bool cancel, int64_t deadline, qsnap_error *err);

#endif
