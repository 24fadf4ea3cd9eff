/* SPDX-License-Identifier: MIT */
/* The QEMU floor of libqsnap: QEMU's command line, starting it, its QMP
 * connection (qmp.h), what it can do, migration, the serial console relay,
 * and qemu-img. Knows QEMU, not the VM directory. */
#ifndef QSNAP_QEMU_H
#define QSNAP_QEMU_H

#include "base/base.h"
#include "qemu/qmp.h"

/* ---- QEMU's command line (argv.c) ---- */

/* A drive's images above its base: layer paths, bottom first, the last one
 * the guest writes to; none for a read-only drive. */
struct qemu_chain {
	const char **layers;
	size_t n;
};
/* Everything QEMU's command line is made of. */
struct qemu_cmd {
	const qsnap_def *def;
	const struct qemu_chain *chains; /* one per drive of def */
	const char *machine;	 /* the machine type; NULL: QEMU's default */
	const char *qmp_socket;	 /* paths relative to where QEMU runs */
	const char *pid_file;
	bool incoming;		 /* -incoming defer */
	const char *ram_file;	 /* guest RAM from this file; NULL: anonymous */
	bool ram_share;		 /* MAP_SHARED (ours to copy) or copy-on-write */
	bool ram_readonly;	 /* copy-on-write of a file opened read-only */
	/* Anonymous RAM allocated before the guest runs, by this many
	 * threads (prealloc=on); 0: as it is touched. */
	unsigned ram_prealloc;
	bool readonly_disks;	 /* inspecting a memory dump: change nothing */
};
/* The command line, NULL-terminated (strv_free it). */
char **qemu_argv(const struct qemu_cmd *c);
/* The node name QEMU knows a layer by (layers/<drive>-<seq>.qcow2 -> n<seq>),
 * and the base image of the index-th drive of the definition. */
char *qemu_layer_node(const char *layer_path);
char *qemu_base_node(size_t index);

/* ---- starting QEMU (spawn.c) ---- */

/* QEMU's end of the console relay's socket pair, at this fd in QEMU. */
#define QEMU_CONSOLE_FD 3
#define QEMU_CONSOLE_FD_STR "3"
/* Start QEMU detached in cwd, its output appended to logpath; console_fd
 * (or -1) becomes its QEMU_CONSOLE_FD. */
int qemu_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err);
/* Connect to QEMU's QMP unix socket, retrying while it does not exist yet
 * or refuses connections (QEMU starting); if pid is non-zero, give up at
 * once when that process (with that start time) is gone. */
int qemu_connect(const char *path, int timeout_ms, pid_t pid, unsigned long long start,
		 int cancel_fd, struct qmp **ret, qsnap_error *err);

/* ---- what the running QEMU can do (caps.c) ---- */

/* Ask a new connection's QEMU what it can do (query-version,
 * query-migrate-capabilities, query-migrate-parameters, query-commands,
 * query-kvm). */
int caps_learn(struct qmp *q, qsnap_error *err);
bool caps_migrate_cap(struct qmp *q, const char *name);
bool caps_migrate_param(struct qmp *q, const char *name);
bool caps_command(struct qmp *q, const char *name);
/* The migration transport for a seekable file: file:/dev/fdset/N through
 * add-fd, where QEMU has it; else fd: with getfd. */
bool caps_file_uri(struct qmp *q);
/* Does QEMU see every guest write while it migrates RAM of a running
 * guest (precopy)? Not under TCG before QEMU 9.0 (caps.c says why). */
bool caps_tcg_dirty_log_sound(struct qmp *q);
/* "10.0.2", or "" when unknown. */
const char *caps_version(struct qmp *q);
/* The versioned machine type want (NULL: QEMU's default; an alias such as
 * pc or q35; a versioned type is kept as given) is on this QEMU. */
int caps_resolve_machine(struct qmp *q, const char *want, char **ret, qsnap_error *err);
/* Does the running QEMU have machine type name? */
int caps_has_machine(struct qmp *q, const char *name, bool *ret, qsnap_error *err);
/* Can memory-backend-file open its file read-only and still give the guest
 * writable, copy-on-write RAM (readonly=on,rom=off)? Asked of a running
 * QEMU, or of the binary qemu (NULL: the one on PATH). */
int caps_backend_rom(struct qmp *q, bool *ret, qsnap_error *err);
int qemu_backend_rom(const char *qemu, bool *ret, qsnap_error *err);
/* Does the VM have a device through which QEMU discards guest RAM (a
 * balloon, virtio-mem)? *ret names it, or is NULL. */
int caps_ram_discarder(struct qmp *q, const char **ret, qsnap_error *err);
/* Does the QEMU binary qemu (NULL: qemu-system-x86_64) have that machine
 * type? Asked of the binary itself (-machine help), for a QEMU not running. */
int qemu_has_machine(const char *qemu, const char *machine, bool *ret, qsnap_error *err);

/* ---- migration (migrate.c) ---- */

/* Cancel an outgoing migration, if any, and wait until it has ended and
 * QEMU accepts "cont" again. */
void migrate_end(struct qmp *q);

/* Migration capabilities and parameters qsnap uses at both ends. */
struct mig_setup {
	bool incoming;
	/* Leave shared RAM out of the stream (x-ignore-shared); the loading
	 * end must say the same as the saving end did. */
	bool ignore_shared;
	bool background; /* a live save (background-snapshot) */
	bool mapped;	 /* mapped-ram + multifd */
	unsigned channels; /* mapped: multifd channels; 0: migrate_channels() */
	/* mapped: QEMU's direct-io (O_DIRECT) for this end; QSNAP_DIRECT_IO
	 * overrides it. */
	bool direct_io;
	/* A precopy save of a running guest: QEMU stops it only at the end
	 * and waits there (pause-before-switchover) for the disks' cut. */
	bool switchover;
};
int migrate_setup(struct qmp *q, const struct mig_setup *s, qsnap_error *err);
/* Can this QEMU pause a migration before its switchover? */
bool migrate_can_pause_switchover(struct qmp *q);
/* mapped: the mapped-ram format (RAM pages at fixed offsets of a seekable
 * file, written and read by multifd channels). Can this QEMU do it? */
bool migrate_can_map(struct qmp *q);
/* multifd channels by default: the host's cores, at most 4. */
unsigned migrate_channels(void);
/* QSNAP_MULTIFD_CHANNELS (1-64), if set, else n. */
unsigned migrate_channels_env(unsigned n);
/* QSNAP_DIRECT_IO ("save", "restore", "save,restore", "off"), if set, for
 * this end, else dflt. */
bool migrate_direct_io_env(bool incoming, bool dflt);

struct mig_wait {
	bool incoming;
	int timeout_s;	   /* then the migration is cancelled (source) */
	const char *phase; /* for progress reports */
	qsnap_progress_fn progress;
	void *userdata;
	int fd;		/* the file QEMU writes or reads: its offset is our progress */
	struct pump *pump; /* or, through a pump, the bytes it moved */
	const uint64_t *counter; /* or bytes a thread of ours counts (atomic) */
	uint64_t total; /* bytes expected when known (restore: the file's size) */
	/* A live save that stopped the guest for the disks' cut: let it run
	 * again once QEMU writes RAM (QEMU >= 9.0 leaves it paused). */
	bool live;
	/* A precopy save (mig_setup.switchover): called when QEMU has stopped
	 * the guest and waits before its switchover; the migration goes on
	 * when it returns 0 and is cancelled otherwise. A guest that dirties
	 * RAM faster than it is written is stopped after a few passes, so
	 * the save always ends. */
	int (*switchover)(void *data, qsnap_error *err);
	void *switchover_data;
	/* Set to now_wall() when the MIGRATION event "completed" came, if not
	 * NULL. */
	double *completed_at;
};
/* Wait for the MIGRATION event that ends a migration, reporting progress. */
int migrate_wait(struct qmp *q, const struct mig_wait *w, qsnap_error *err);
/* Hand QEMU a file descriptor under a name (getfd, SCM_RIGHTS). */
int migrate_pass_fd(struct qmp *q, const char *name, int fd, qsnap_error *err);
/* Where a migration goes: a file passed to QEMU, and its URI. */
struct mig_target {
	char name[32];	/* getfd's name, for fd: */
	long long fdset; /* add-fd's set, for file:/dev/fdset/N; -1: none */
	char uri[64];
};
/* Pass fd for a migration: a seekable file (file) goes in an fd set as
 * file:/dev/fdset/N where QEMU has that, anything else (a pipe) by getfd
 * as fd:NAME. A file for saving must be open O_WRONLY, for loading
 * O_RDONLY. */
int migrate_pass(struct qmp *q, const char *name, int fd, bool file, struct mig_target *t,
		 qsnap_error *err);
/* QEMU lets go of the passed fd (closefd or remove-fd). */
void migrate_release(struct qmp *q, struct mig_target *t);
/* The same for whatever a command that was killed passed under name. */
void migrate_release_name(struct qmp *q, const char *name);
/* Migrate to (or, w->incoming, from) the target, and wait. */
int migrate_run(struct qmp *q, const struct mig_target *t, const struct mig_wait *w,
		qsnap_error *err);

/* ---- the serial console relay (console.c) ---- */

/* The relay's descriptors (qsnap-console): 0-2 /dev/null, and its ready
 * pipe after these. */
enum {
	CONSOLE_FD_GUEST = 3, /* its end of the socket pair with QEMU */
	CONSOLE_FD_LISTENER,  /* run/serial.sock, listening */
	CONSOLE_FD_LOG,	      /* run/serial.log, appending */
	CONSOLE_FD_RUNDIR,    /* run/, where the log is rotated */
	CONSOLE_FD_READY,     /* the ready pipe (helper_start puts it last) */
};
/* The relay (in qsnap-console, on the descriptors above): serves the
 * console until QEMU's end closes, the log rotated as log_name.1 at
 * log_max bytes. */
int console_relay(const char *log_name, uint64_t log_max);
/* Listen on sock_path and start the relay process that serves it
 * and appends the guest's output to log_path; *ret_qemu_fd is the end
 * for QEMU's serial chardev. The relay ends when that end closes. */
int console_start(const char *sock_path, const char *log_path, uint64_t log_max, int *ret_qemu_fd,
		  qsnap_error *err);
/* Connect to the relay's socket, waiting up to timeout_ms for one to
 * listen (QEMU starting, or being replaced by a restore). */
int console_connect(const char *sock_path, int timeout_ms, qsnap_error *err);

/* ---- qemu-img (img.c) ---- */

/* The qemu-img that belongs to a QEMU binary (vm.json's "qemu", NULL for
 * qemu-system-x86_64 from PATH): the one beside it, else qemu-img from PATH. */
char *qemu_img_for(const char *qemu);

/* What qemu-img info says of an image (one parser for all callers). */
struct img_info {
	char *filename;
	char *format;
	int64_t virtual_size; /* -1: not given */
	char *backing;	      /* the backing file as the header names it, or NULL */
	char *data_file;      /* an external data file, or NULL */
};
void img_info_free(struct img_info *i);
/* qemu-img info of path (relative to cwd; NULL: ours). format NULL: let
 * qemu-img probe it; force_share: -U, the image is open in a running QEMU. */
int img_info(const char *qemu_img, const char *cwd, const char *path, const char *format,
	     bool force_share, struct img_info *ret, qsnap_error *err);
/* The same for every image of path's backing chain, top first, as qemu-img
 * opens them (--backing-chain). */
int img_info_chain(const char *qemu_img, const char *cwd, const char *path, const char *format,
		   bool force_share, struct img_info **ret, size_t *ret_n, qsnap_error *err);
void img_info_chain_free(struct img_info *v, size_t n);
/* A new empty qcow2 image at path (relative to cwd) on top of backing (as
 * the header will name it) of format backing_format. */
int img_create(const char *qemu_img, const char *cwd, const char *path, const char *backing,
	       const char *backing_format, qsnap_error *err);
/* Make path's header name another backing file: unsafe (-u, the header
 * only: the data must already be the same) or by copying what differs. */
int img_rebase(const char *qemu_img, const char *cwd, const char *path, const char *backing,
	       const char *backing_format, bool unsafe, qsnap_error *err);
/* qemu-img check of an image that must pass it. */
int img_check(const char *qemu_img, const char *path, const char *format, qsnap_error *err);
/* qemu-img check of one qcow2 layer on its own, its backing file not opened
 * (so a damaged layer below shows up once, at itself), opened shared.
 * *ret_problem: NULL when it passes (leaked clusters pass: they waste space
 * but lose no data), else what is wrong. */
int img_check_layer(const char *qemu_img, const char *cwd, const char *layer, char **ret_problem,
		    qsnap_error *err);

struct img_convert {
	const char *qemu_img;
	const char *src;       /* the chain's top image */
	const char *src_format;
	bool force_share;      /* -U: the image is open in a running QEMU */
	const char *dst;
	const char *dst_format; /* "qcow2" or "raw" */
	bool compress;
	const char *phase;     /* for progress reports */
	qsnap_progress_fn progress;
	void *userdata;
};
/* qemu-img convert: one standalone image of a whole backing chain. */
int img_convert(const struct img_convert *c, qsnap_error *err);
/* An image (path relative to dir) that names no backing or data file. */
int img_check_standalone(const char *qemu_img, const char *dir, const char *path,
			 const char *format, qsnap_error *err);

#endif
