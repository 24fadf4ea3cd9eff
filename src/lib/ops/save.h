/* SPDX-License-Identifier: MIT */
/* A save as a transaction (save.c): one object that records how far the
 * save got, steps that each take it one stage further, and one undo that
 * walks back from wherever it stopped. */
#ifndef QSNAP_SAVE_H
#define QSNAP_SAVE_H

#include <sys/stat.h>

#include "ops/ops.h"

#define MIGRATE_FD_NAME "qsnap-migrate"

/* One writable drive in a save: the layer it leaves and the one it gets. */
struct cut {
	const qsnap_drive_def *d;
	char *old_layer;
	char *new_layer;
	bool node_added; /* QEMU has new_layer as a node (blockdev-add) */
};

struct save {
	qsnap_vm *vm;
	const char *name;
	const qsnap_save_opts *opts;
	struct qmp *q;
	int64_t t0;
	/* What kind of save (save_begin decides). */
	bool running; /* the guest ran before the save */
	bool shared;  /* RAM from our shared file, copied by us */
	bool live;    /* background-snapshot: RAM written while the guest runs */
	bool mapped;  /* mapped-ram + multifd */
	unsigned channels; /* its multifd channels */
	bool direct_io;	   /* its direct-io */
	bool diff;    /* only the pages written since the RAM file (save_diff.c) */
	bool ramfile; /* RAM taken out of the stream into a file (save_ramfile.c) */
	/* A running guest's RAM written while it runs (precopy); QEMU stops it
	 * at the end and waits there for the disks' cut (save_switch_layers,
	 * called from the migration's wait). */
	bool precopy;
	/* A precopy save of RAM mapped copy-on-write where QEMU's dirty log
	 * misses guest writes (TCG before 9.0): once the guest is stopped,
	 * the filter reads every page it wrote from QEMU's memory into the
	 * stream, after QEMU's records (a differential save leaves those of
	 * the RAM block out); the guest runs again only after that
	 * (save_diff.c). When (wall clock). */
	bool reread;
	double reread_start, reread_end;
	struct cut *cuts;
	size_t n_cuts;
	/* How far it got. */
	bool paused_here; /* we stopped the guest and must let it run */
	bool switched;	  /* the drives write to their new layers */
	bool fd_passed;	  /* QEMU holds the machine state's file */
	bool wedged;	  /* QEMU did not let go of the pump's pipe in time */
	/* The machine state file, and what writes it. */
	int fd, qemu_fd;
	struct pump *pump;
	struct checksum_follow *sum;
	struct mig_target tgt;
	char *checksum;
	struct stat vmstate;
	char *ram_checksum; /* of the snapshot's RAM file, computed as it is copied */
	/* Shared RAM staged in the RAM directory until the guest runs again. */
	char *stage;
	uint64_t ram_bytes;
	/* Where the time went (qsnap_save_stats.phases), in wall-clock
	 * seconds as QEMU's event timestamps are: start is absolute until the
	 * stats are made. last: when the last step ended. stop_at: QEMU's STOP
	 * event, once read (0: not yet). */
	struct qsnap_save_phase phases[QSNAP_SAVE_PHASES];
	size_t n_phases;
	double wall0, last, stop_at;
	/* The thread that filters QEMU's stream (save_filter.c), and what it
	 * left out of the stream and kept of the RAM block. A differential
	 * save: the snapshot whose RAM file the new one builds on. */
	struct filter_pump *filter;
	uint64_t pages_left_out, pages_kept;
	struct ram_writer *ram_writer; /* a RAM-file save's */
	int ram_fd;		       /* ... and the file it writes */
	char *ram_base;
	/* The older deltas it builds on (ram_chain.c), and what they put into
	 * each page; none: it holds every page written since the RAM file.
	 * flat_why: why it does not build on them, for --verbose. */
	struct ram_delta *ram_chain;
	size_t n_ram_chain;
	struct ram_index *diff_index;
	const char *flat_why;
};

/* A phase of the save that ran from start until now; a step: the one since
 * the last step ended. */
void save_phase(struct save *sv, const char *name, double start, double end);
void save_step(struct save *sv, const char *name);
/* QEMU's STOP event of this save (wall-clock; 0: none yet), read once. */
double save_stop_time(struct save *sv);
/* How long the guest was paused: QEMU's STOP to RESUME events (a phase
 * "paused" too). */
double save_pause_seconds(struct save *sv);

/* The disks' cut (save_disks.c): new layers and their QEMU nodes while the
 * guest runs; all drives switched in one transaction; undone if the switch
 * never happened. */
int save_prepare_layers(struct save *sv, qsnap_error *err);
int save_switch_layers(struct save *sv, qsnap_error *err);
/* The same as a migration's switchover callback (data: the save). */
int save_switch_at_switchover(void *data, qsnap_error *err);
void save_drop_layers(struct save *sv);
/* After an interrupted save: make state.json's active layers the ones the
 * drives of the running QEMU write to (the crash may have come before or
 * after the switch). */
int save_find_active(qsnap_vm *vm, struct qmp *q, qsnap_error *err);

/* The files (save_files.c): the machine state through QEMU's migration,
 * the shared RAM copy, and durability once the guest runs again. */
int save_open_vmstate(struct save *sv, qsnap_error *err);
int save_migrate(struct save *sv, qsnap_error *err);
int save_copy_ram(struct save *sv, qsnap_error *err);
int save_make_durable(struct save *sv, qsnap_error *err);
/* The staging file of a save in the RAM directory (NULL: none). */
char *save_stage_path(qsnap_vm *vm);

/* QEMU's stream through a pipe (sv->qemu_fd, its write end) to a thread
 * that feeds it to f and writes what passes to sv->fd (save_filter.c).
 * The hooks run in the thread: before, with each piece read before it is
 * fed (valid until after returns); after, once it was fed, failing as
 * the thread's own error (a full disk), which the save reports rather than
 * QEMU's broken pipe; free, with data, when the thread is gone.
 * f is taken. finish waits for the last records until deadline (0: none)
 * or cancel_fd (-ETIMEDOUT, -ECANCELED as pump_finish); cancel stops it. */
struct filter_hooks {
	void (*before)(void *data, const uint8_t *buf, size_t n);
	int (*after)(void *data, qsnap_error *err);
	void (*free)(void *data);
	void *data;
};
struct stream_filter;
int save_filter_start(struct save *sv, struct stream_filter *f, const struct filter_hooks *h,
		      qsnap_error *err);
int save_filter_finish(struct save *sv, qsnap_error *err);
void save_filter_cancel(struct save *sv, qsnap_error *err);
/* The bytes the thread read from QEMU so far (NULL: no filter). */
const uint64_t *save_filter_bytes(const struct save *sv);

/* A differential save (save_diff.c): may this VM be saved so; its filter
 * (pages the guest did not write since the parent left out); the filter
 * of a plain save that rereads (sv->reread); the base's RAM file linked
 * into the snapshot. */
int save_diff_check(qsnap_vm *vm, qsnap_error *err);
int save_diff_start(struct save *sv, qsnap_error *err);
int save_reread_start(struct save *sv, qsnap_error *err);
int save_diff_link(struct save *sv, qsnap_error *err);

/* A RAM-file save (save_ramfile.c, save-path ram-file): the snapshot's
 * RAM file created (sv->ram_fd, complete once the filter ended) and QEMU's
 * stream filtered into it and the machine state. */
int save_ramfile_start(struct save *sv, qsnap_error *err);
void save_ramfile_free(struct save *sv);

/* The commit (save_commit.c): meta.json, the final directory, one atomic
 * write of state.json. s is taken. */
int save_commit(qsnap_vm *vm, struct snapshot s, qsnap_error *err);
/* A VM paused since its last save (QEMU in postmigrate): the new snapshot
 * shares that one's frozen layers and files. */
int save_again(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts, qsnap_error *err);

#endif
