/* SPDX-License-Identifier: MIT */
/*
 * libqsnap: run QEMU virtual machines for automated testing, and save and
 * restore them whole (disks, RAM, CPU and device state).
 *
 * A VM lives in one directory (see docs/design.md): vm.json (the definition),
 * state.json (layer chains, snapshots, the running QEMU), layers/,
 * snapshots/ and run/.
 *
 * Conventions of this API:
 *  - Every function that can fail returns 0 (or a non-negative value) on
 *    success and a negative errno-style code on failure, and then fills the
 *    qsnap_error it was given with a sentence a user can act on.
 *  - Outputs named ret_* are written only on success.
 *  - The library never prints and never exits; progress is reported through
 *    a callback.
 *  - How it grows without breaking a program built against an older (or
 *    newer) qsnap.h: every struct the caller allocates and hands in (the
 *    *_opts) or has filled (the *_stats) starts with size_t size, which
 *    the caller sets to sizeof the struct, as the QSNAP_*_INIT macros do.
 *    Fields are only ever added at the end. The library reads only what
 *    size covers and takes the rest as 0; it refuses (E2BIG) a bigger
 *    struct whose fields past what it knows are not 0, and zeroes them when
 *    it fills one. 0 is the documented default of every field; "off" and
 *    "do not wait" have constants of their own (QSNAP_COMPRESS_OFF,
 *    QSNAP_NO_WAIT). NULL for an opts pointer: all defaults.
 *  - What the library allocates it frees: structs it returns by pointer
 *    (qsnap_status, qsnap_snapshot_info, ...) with their *_free function,
 *    strings with qsnap_free. Those structs also grow at the end only, and
 *    arrays of them are arrays of pointers: read them through the pointers
 *    given, never copy them by value. A definition (qsnap_def) is opaque
 *    and built with functions that copy what they are given.
 *  - qsnap_error is fixed: { int code; char msg[1024]; }.
 *
 * Threads and processes:
 *  - A qsnap_vm is used by one thread at a time: give each thread its own
 *    (several threads may work on different VMs at once). Two handles on
 *    the same VM directory, in one process or in two, take turns through
 *    the VM's lock (qsnap_vm_open waits for it). The one exception is
 *    qsnap_vm_cancel, which any thread (or a signal handler) may call on a
 *    handle that another thread is using.
 *  - Every wait of the library ends: by its timeout, by its event, or by
 *    qsnap_vm_cancel; none sleeps in steps. A QEMU that stops answering
 *    or does not let go of a file it was given while a save is undone is
 *    killed, and the error says so.
 *  - Functions without a qsnap_vm (qsnap_def_*, qsnap_parse_size, ...) only
 *    touch what they are given.
 *  - The library starts programs (no shell, no library code run in a
 *    copy of the caller): qemu-img, waited for within the call, and QEMU,
 *    started detached (a session of its own, not a child of the caller)
 *    so that it runs on until qsnap_vm_stop, also after the calling
 *    program ended. Every QEMU start also starts a console relay, and
 *    qsnap_vm_save_background a saver: qsnap's own helper programs
 *    (qsnap-console, qsnap-saver, installed in LIBEXECDIR/qsnap), started
 *    detached the same way.
 *  - The caller's signal state, environment and descriptors stay its own:
 *    every process the library starts begins with default signal
 *    dispositions and an empty signal mask (the console relay then ignores
 *    SIGPIPE, the saver SIGHUP), a fixed environment (the saver's holds
 *    the caller's PATH) and only the descriptors it needs. The short-lived
 *    processes that wait for qemu-img or detach the others are cloned
 *    with no exit signal: SIGCHLD set to SIG_IGN, or a handler that reaps
 *    every child with waitpid(-1, ...) without __WALL, neither takes their
 *    exit status nor sees a SIGCHLD for them.
 *  - Inside a call it starts threads of its own (compression, checksums,
 *    copying RAM) that end before the call returns.
 *  - Its file descriptors are all O_CLOEXEC; it changes no signal
 *    disposition of the calling process (SIGPIPE is blocked only in its own
 *    threads, and sends use MSG_NOSIGNAL).
 *
 * Linking: pkg-config --cflags --libs qsnap. libqsnap.so exports only the
 * qsnap_* names of this header.
 */
#ifndef QSNAP_H
#define QSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qsnap_error {
	int code;	/* positive errno value, 0 when no error */
	char msg[1024]; /* one or more sentences, no trailing newline */
} qsnap_error;

/* The library's version, "MAJOR.MINOR.PATCH"; MAJOR is the SONAME's
 * (libqsnap.so.1). */
const char *qsnap_version(void);

/* Free a string or array the library handed out (qsnap_vm_qmp's JSON, a
 * snapshot name from qsnap_import or qsnap_pull, qsnap_def_get's value).
 * NULL is fine. */
void qsnap_free(void *p);

/* 0 for a compress option: its default; this: no compression. */
#define QSNAP_COMPRESS_OFF (-1)
/* For a lock timeout: fail at once (EBUSY) when the VM is busy. */
#define QSNAP_NO_WAIT (-1)
/* A lock timeout of 0: this many seconds. */
#define QSNAP_DEFAULT_LOCK_TIMEOUT 600

/* ---- the guest's serial console ---------------------------------------- */

/* Connect to the guest's console (VMDIR/run/serial.sock), waiting up to
 * timeout_ms for one to listen (while QEMU starts, or a restore replaces
 * it); returns the connected socket (O_CLOEXEC), or a negative errno. Any
 * number of clients up to 8 may be connected; each gets all the guest's
 * output, a client that does not read loses its oldest output past 1 MiB
 * rather than stopping the guest, and what clients type reaches the guest
 * in order. The socket reads end-of-file when that QEMU ends (stop,
 * restore): connect again. Needs no qsnap_vm and takes no lock. */
int qsnap_console_connect(const char *vmdir, int timeout_ms, qsnap_error *err);

/* ---- VM definition (vm.json) ------------------------------------------ */

/* Where guest RAM lives, and so how a save gets it. */
typedef enum qsnap_ram_mode {
	QSNAP_RAM_STREAM, /* ordinary guest RAM, saved inside QEMU's migration stream */
	QSNAP_RAM_SHARED, /* a shared file qsnap owns and copies itself; the stream
			     carries device state only */
} qsnap_ram_mode;

/* A VM's definition, opaque: made by qsnap_def_new (or read from a VM with
 * qsnap_vm_def), set and read by key, freed with qsnap_def_free. */
typedef struct qsnap_def qsnap_def;

#define QSNAP_DEFAULT_MAX_CHAIN 16
#define QSNAP_DEFAULT_SERIAL_LOG_MAX (64ULL << 20)
#define QSNAP_MIN_SERIAL_LOG_MAX (64ULL << 10)
#define QSNAP_MAX_MULTIFD_CHANNELS 64

/* A new definition with the defaults; NULL when out of memory. */
qsnap_def *qsnap_def_new(void);
/* Free a definition from qsnap_def_new (not qsnap_vm_def's); NULL is fine. */
void qsnap_def_free(qsnap_def *def);

/* Set key to value (copied; NULL: back to the default), by the names of
 * qsnap init's options:
 *   "drive"     ID=PATH[,if=virtio|scsi|ide|pflash][,format=qcow2|raw][,readonly]:
 *               adds a drive (a relative PATH is taken relative to the
 *               current directory); NULL removes them all
 *   "memory"    a size, "512M", "4G" (default 1G)
 *   "smp"       vCPUs (default 1)
 *   "machine", "cpu"  QEMU's (default: QEMU's own)
 *   "accel"     accelerators tried in order (default "kvm:tcg")
 *   "kernel", "initrd", "append"  direct kernel boot
 *   "qemu"      the QEMU binary (default qemu-system-x86_64 from PATH)
 *   "serial"    "on" (the default) or "off": the first serial port on
 *               VMDIR/run/serial.sock
 *   "ram-mode"  "stream" (the default) or "shared"
 *   "ram-dir"   shared mode: where the RAM file lives (default: a private
 *               folder under /dev/shm)
 *   "max-chain" a save that leaves a live chain longer than this compacts
 *               it (default QSNAP_DEFAULT_MAX_CHAIN)
 *   "extra"     one extra QEMU argument, appended; NULL removes them all
 *   "serial-log-max"  run/serial.log moves to run/serial.log.1 (replacing
 *               it) when it would grow past this size (default
 *               QSNAP_DEFAULT_SERIAL_LOG_MAX, at least QSNAP_MIN_SERIAL_LOG_MAX)
 * How a plain save (stream mode, uncompressed, not live) writes RAM; NULL
 * or "auto" is qsnap's default for the VM's QEMU (README, "How a save
 * writes RAM"):
 *   "save-path" "auto", "stream" (one sequential stream), "mapped-ram"
 *               (RAM pages at fixed offsets, multifd channels; QEMU >= 9.0)
 *               or "ram-file" (the stream through qsnap, which writes RAM
 *               into a file of the snapshot's own that a restore maps)
 *   "multifd-channels"  mapped-ram's channels, 1 to
 *               QSNAP_MAX_MULTIFD_CHANNELS ("0" or NULL: auto)
 *   "direct-io" "auto", "on" or "off": mapped-ram saves write with O_DIRECT
 *   "precopy"   "auto", "on" or "off": a running guest's RAM is written
 *               while it runs, and it is stopped only for the rest (auto:
 *               where QEMU sees every guest write, under KVM or on QEMU
 *               >= 9.0; under TCG an older QEMU loses some)
 * -EINVAL with a sentence for an unknown key or a bad value. */
int qsnap_def_set(qsnap_def *def, const char *key, const char *value, qsnap_error *err);
/* The value of key as qsnap_def_set takes it (free it with qsnap_free),
 * NULL in *ret_value when unset (the default applies); "drive" and "extra"
 * give the list, one per line. */
int qsnap_def_get(const qsnap_def *def, const char *key, char **ret_value, qsnap_error *err);

/* "stream" / "shared", and back; -EINVAL for an unknown word. */
const char *qsnap_ram_mode_name(qsnap_ram_mode m);
int qsnap_ram_mode_parse(const char *s, qsnap_ram_mode *ret);

/* Parse a size such as "512M", "4G", "1073741824" (binary units). */
int qsnap_parse_size(const char *s, uint64_t *ret_bytes, qsnap_error *err);

/* A snapshot name: letters, digits, '-', '_', '.'; not starting with '.';
 * 1 to 64 characters. */
bool qsnap_name_valid(const char *name);

/* ---- Progress ---------------------------------------------------------- */

/* The phases a progress callback reports, by the name in
 * qsnap_progress.phase:
 *   "save"            qsnap_vm_save: the migration stream (RAM in stream mode)
 *   "save RAM"        shared-RAM save: copying the RAM file aside while the
 *                     guest is paused
 *   "persist RAM"     shared-RAM save: the copy into the snapshot, the guest
 *                     running again
 *   "restore"         qsnap_vm_restore, qsnap_vm_start with from: loading the
 *                     migration stream
 *   "restore RAM"     restoring a shared-RAM snapshot: copying its RAM file
 *   "dump"            qsnap_vm_dump_memory
 *   "load dump"       qsnap_vm_start_from_dump
 *   "publish"         qsnap_vm_publish: bytes of the virtual disk
 *   "verify"          qsnap_vm_verify: bytes of machine state and RAM hashed
 *   "flatten <drive>" qsnap_vm_export: one drive's chain made one image
 *   "export"          qsnap_vm_export: writing the archive
 *   "import"          qsnap_import: bytes read from the archive
 *   "digest"          qsnap_vm_push, qsnap_pull: bytes hashed
 *   "check"           qsnap_vm_push: blobs asked the registry about
 *   "upload"          qsnap_vm_push: bytes sent
 *   "download"        qsnap_pull: bytes received
 * qsnap_progress_phase() gives the same as an enum. */
typedef enum qsnap_phase {
	QSNAP_PHASE_OTHER, /* a name this version does not know */
	QSNAP_PHASE_SAVE,
	QSNAP_PHASE_SAVE_RAM,
	QSNAP_PHASE_PERSIST_RAM,
	QSNAP_PHASE_RESTORE,
	QSNAP_PHASE_RESTORE_RAM,
	QSNAP_PHASE_DUMP,
	QSNAP_PHASE_LOAD_DUMP,
	QSNAP_PHASE_PUBLISH,
	QSNAP_PHASE_VERIFY,
	QSNAP_PHASE_FLATTEN,
	QSNAP_PHASE_EXPORT,
	QSNAP_PHASE_IMPORT,
	QSNAP_PHASE_DIGEST,
	QSNAP_PHASE_CHECK,
	QSNAP_PHASE_UPLOAD,
	QSNAP_PHASE_DOWNLOAD,
} qsnap_phase;

/* Given by the library: grows at the end, read it through the pointer. */
typedef struct qsnap_progress {
	const char *phase;  /* one of the names above */
	uint64_t done;      /* bytes done */
	uint64_t total;     /* bytes expected, 0 when unknown */
	double elapsed;     /* seconds since the phase began */
	bool finished;      /* the last call for this phase */
} qsnap_progress;

/* Called in the thread that made the call, never after it returned. */
typedef void (*qsnap_progress_fn)(const qsnap_progress *p, void *userdata);

/* The phase of p as an enum (QSNAP_PHASE_FLATTEN for every drive's
 * "flatten <drive>"). */
qsnap_phase qsnap_progress_phase(const qsnap_progress *p);

/* ---- A VM directory --------------------------------------------------- */

typedef struct qsnap_vm qsnap_vm;

/* Create a new VM directory at dir (it must not exist or be empty): writes
 * vm.json and state.json and gives every writable drive an empty qcow2
 * layer in layers/ on top of its base image. Nothing is left behind on
 * failure. */
int qsnap_vm_create(const char *dir, const qsnap_def *def, qsnap_error *err);

enum {
	QSNAP_OPEN_READONLY = 1 << 0, /* no lock, no changes: status and list */
};

/* Open a VM directory. Unless QSNAP_OPEN_READONLY, takes the VM's lock
 * (waiting at most lock_timeout seconds for another qsnap command on the
 * same VM; 0: QSNAP_DEFAULT_LOCK_TIMEOUT; QSNAP_NO_WAIT: fail at once) and finishes or undoes whatever an interrupted
 * earlier command left behind. */
int qsnap_vm_open(const char *dir, unsigned flags, int lock_timeout, qsnap_vm **ret_vm,
		  qsnap_error *err);
void qsnap_vm_close(qsnap_vm *vm);

/* Cancel the call that another thread is making on vm (since 1.1,
 * version node QSNAP_1.1). Safe from any thread and from a signal handler
 * (it is one write() to an eventfd of vm); vm must stay open until the call
 * returns. Honoured by qsnap_vm_save, qsnap_vm_restore, qsnap_vm_start
 * (also with from) and qsnap_vm_stop: the call ends at its next wait
 * (a QMP reply, the migration, the compression pump, QEMU coming up or
 * going away) with -ECANCELED, having undone its work as on any failure:
 *  - a save leaves no snapshot and nothing partial, the VM running or
 *    paused as before (a QEMU that stops answering, or does not let go
 *    of the save's pipe within 10 s, is killed, and the error says so;
 *    QEMU 7.2 refuses another live save after a cancelled one);
 *  - a restore (or a start from a snapshot) leaves the VM as it was when
 *    cancelled before the running QEMU was ended (while the snapshot is
 *    checked), else stopped, as any restore that failed after that;
 *  - a start leaves the VM stopped;
 *  - a stop does not wait for QEMU to quit: QEMU is killed at once and the
 *    call returns 0.
 * Work that is not a wait (qemu-img, copying a RAM file) runs to its end
 * first. A cancellation made while none of these calls runs ends the next
 * one at its first wait; one that arrives as a call returns is dropped
 * with that call. Other calls ignore it. */
void qsnap_vm_cancel(qsnap_vm *vm);

/* The definition as read from vm.json: vm's, valid until it is closed or
 * changed (qsnap_vm_set_*); read it with qsnap_def_get. */
const qsnap_def *qsnap_vm_def(qsnap_vm *vm);
/* The VM directory, absolute. */
const char *qsnap_vm_dir(qsnap_vm *vm);
/* A sentence the last call on vm wants the user to know although it
 * succeeded (a lazy restore that was done eagerly, and why), or NULL. Valid
 * until the next call on vm. */
const char *qsnap_vm_notice(qsnap_vm *vm);

typedef struct qsnap_start_opts {
	size_t size; /* sizeof(qsnap_start_opts) */
	bool paused;       /* leave the vCPUs stopped */
	const char *from;  /* start from this snapshot (like restore) */
	bool lazy;         /* with from: map the snapshot's RAM copy-on-write */
	int timeout;       /* seconds for QEMU to come up or load state; 0: default */
	qsnap_progress_fn progress;
	void *userdata;
} qsnap_start_opts;
#define QSNAP_START_OPTS_INIT {.size = sizeof(qsnap_start_opts)}

/* Start QEMU for a stopped VM. */
int qsnap_vm_start(qsnap_vm *vm, const qsnap_start_opts *opts, qsnap_error *err);

/* Stop QEMU: "quit" over QMP, SIGKILL after timeout seconds (0: the default, 10).
 * Stopping a stopped VM is not an error. */
int qsnap_vm_stop(qsnap_vm *vm, int timeout, qsnap_error *err);

typedef enum qsnap_run_state {
	QSNAP_STOPPED,
	QSNAP_RUNNING,
	QSNAP_PAUSED,
	QSNAP_CRASHED, /* state.json names a QEMU that is gone */
} qsnap_run_state;

typedef struct qsnap_drive_status {
	char *id;
	bool readonly;
	size_t n_chain;
	char **chain; /* base image first, active layer last (relative to the VM dir
			 where inside it) */
} qsnap_drive_status;

/* Given by the library (qsnap_vm_status): grows at the end. */
typedef struct qsnap_status {
	qsnap_run_state state;
	char *qemu_status; /* QEMU's own word (query-status), NULL when stopped */
	pid_t pid;	   /* 0 when stopped */
	char *current;	   /* the snapshot the current state descends from, or NULL */
	size_t n_drives;
	qsnap_drive_status **drives;
	size_t n_snapshots;
	qsnap_ram_mode ram_mode; /* the definition's */
	char *ram_file;	 /* the file QEMU's RAM is mapped from, NULL: anonymous */
	bool ram_lazy;	 /* mapped copy-on-write from a snapshot: the next save
			    carries RAM in the migration stream */
} qsnap_status;

/* The VM's state now, in *ret_status: free it with qsnap_status_free. */
int qsnap_vm_status(qsnap_vm *vm, qsnap_status **ret_status, qsnap_error *err);
void qsnap_status_free(qsnap_status *st);
const char *qsnap_run_state_name(qsnap_run_state s);

/* Send one QMP command to the running QEMU. args_json may be NULL; the
 * reply's "return" value is returned as JSON text (free it with qsnap_free). */
int qsnap_vm_qmp(qsnap_vm *vm, const char *command, const char *args_json, char **ret_json,
		 qsnap_error *err);

/* ---- Snapshots ---------------------------------------------------------- */

#define QSNAP_SAVE_PHASES 16
typedef struct qsnap_save_stats {
	size_t size; /* sizeof(qsnap_save_stats) */
	double paused;	/* seconds the guest was paused (QEMU's STOP to RESUME) */
	double total;	/* seconds the whole save took */
	uint64_t bytes; /* bytes of machine state written (stream and RAM file) */
	bool live;	/* RAM was written while the guest ran */
	qsnap_ram_mode mode; /* where the snapshot's RAM went */
	/* How QEMU wrote it: "stream" (one sequential stream; also every
	 * shared-RAM, live or compressed save), "mapped-ram" (multifd
	 * channels) or "ram-file" (a stream whose RAM qsnap wrote into a file
	 * of its own); static strings. */
	const char *path;
	unsigned channels; /* mapped-ram: multifd channels */
	bool direct_io;	   /* mapped-ram written with O_DIRECT */
	bool precopy;	   /* RAM written while the guest ran */
	/* Where the time went, in the order the phases began; phases may
	 * overlap (e.g. "fsync" and "checksum", "paused" and what ran in the
	 * pause). start is seconds from the start of the save. */
	size_t n_phases;
	struct qsnap_save_phase {
		const char *name; /* static */
		double start, seconds;
	} phases[QSNAP_SAVE_PHASES];
	/* A differential save (qsnap_save_opts.diff): RAM pages written to
	 * the stream, and pages left out because the base's RAM file has them. */
	bool diff;
	uint64_t pages_written, pages_left_out;
} qsnap_save_stats;
#define QSNAP_SAVE_STATS_INIT {.size = sizeof(qsnap_save_stats)}

typedef struct qsnap_save_opts {
	size_t size; /* sizeof(qsnap_save_opts) */
	bool replace; /* replace a snapshot of the same name */
	/* Pause the guest only to cut the disks and save device state (a few
	 * milliseconds); RAM is written while it runs, each page copied aside
	 * before the guest first writes it (QEMU's background-snapshot). The
	 * snapshot is the guest at that pause. A paused VM, and RAM mapped
	 * copy-on-write by a lazy restore, are saved the ordinary way
	 * (stats.live says which). RAM goes in the migration stream. */
	bool live;
	/* Compress the migration stream with zstd at this level (1-19) in
	 * several threads; 0 (the default) and QSNAP_COMPRESS_OFF: no
	 * compression. Shared-RAM snapshots keep their
	 * RAM file sparse instead. */
	int compress;
	int timeout;  /* seconds; 0: default (600) */
	qsnap_progress_fn progress;
	void *userdata;
	qsnap_save_stats *stats; /* filled on success when not NULL */
	/* A differential snapshot: the VM's RAM must be mapped copy-on-write
	 * from a shared-RAM snapshot's RAM file (a lazy restore, of that
	 * snapshot or of a differential one). The stream holds only the pages
	 * written since that file was mapped (plus device state and the small
	 * RAM blocks); the snapshot keeps a hard link to the RAM file. It
	 * restores as a shared-RAM snapshot does (eagerly or with lazy). */
	bool diff;
} qsnap_save_opts;
#define QSNAP_SAVE_OPTS_INIT {.size = sizeof(qsnap_save_opts)}

/* Save the whole VM (every writable drive, RAM, CPU and device state) as
 * snapshot name. The VM runs on afterwards as it was (running or paused). */
int qsnap_vm_save(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts, qsnap_error *err);

/* Save as qsnap_vm_save does, in a background process, and return once it
 * runs (qsnap save --live --no-wait). The process is detached from the
 * caller (a session of its own, stdin, stdout and stderr on /dev/null, not
 * a child the caller reaps), holds the VM's lock until the save has ended,
 * and reports through the VM directory: qsnap_vm_background_save shows its
 * progress and, after it, its result, to any process. opts->progress and
 * opts->stats are not used. It takes the handle: *vmp is closed in the
 * calling process (as by qsnap_vm_close) and set to NULL, whether the call
 * succeeds or fails (the lock goes to the background process); open the VM again to
 * work on it (qsnap_vm_open waits for the save with its lock_timeout). The
 * background process's pid goes to *ret_pid when ret_pid is not NULL. The
 * process is the program qsnap-saver (LIBEXECDIR/qsnap), so any thread may
 * call this while others work. */
int qsnap_vm_save_background(qsnap_vm **vmp, const char *name, const qsnap_save_opts *opts,
			     pid_t *ret_pid, qsnap_error *err);

/* Given by the library (qsnap_vm_background_save): grows at the end. */
typedef struct qsnap_background_save {
	char *name;	/* the snapshot it saves (or saved) */
	bool running;	/* still at work; else it ended: ok, error, ended */
	pid_t pid;	/* while running: the background process */
	char *phase;	/* while running: as in qsnap_progress, or NULL */
	uint64_t done;	/* while running: bytes done */
	uint64_t total; /* while running: bytes expected, 0 when unknown */
	double elapsed; /* while running: seconds */
	bool ok;	/* after it: the snapshot was saved */
	char *error;	/* after a failure: why, or NULL */
	int64_t ended;	/* after it: seconds since the epoch */
} qsnap_background_save;

/* The VM's running background save, or the last one's result: returns 1
 * and sets *ret_bg (free it with qsnap_background_save_free), or 0 and
 * NULL when there is none. Works on a VM opened with QSNAP_OPEN_READONLY, also while
 * the save holds the lock. */
int qsnap_vm_background_save(qsnap_vm *vm, qsnap_background_save **ret_bg, qsnap_error *err);
void qsnap_background_save_free(qsnap_background_save *bg);

typedef struct qsnap_restore_opts {
	size_t size; /* sizeof(qsnap_restore_opts) */
	int timeout; /* seconds; 0: default (600) */
	/* Shared-RAM snapshots: map the snapshot's RAM file copy-on-write
	 * instead of copying it, so the restore does not read RAM at all. The
	 * next save then carries RAM in the migration stream. The file is
	 * never written: QEMU opens it read-only where it can (8.2+); an older
	 * QEMU with a device that discards RAM (a balloon, virtio-mem) is
	 * restored eagerly instead (qsnap_vm_notice says so). A lazy restore
	 * trusts the RAM checksum checked at save and by qsnap_vm_verify; an
	 * eager one checks it as it copies, before the running VM is touched
	 * where there is room for the copy beside it. */
	bool lazy;
	qsnap_progress_fn progress;
	void *userdata;
} qsnap_restore_opts;
#define QSNAP_RESTORE_OPTS_INIT {.size = sizeof(qsnap_restore_opts)}

/* Bring the VM back to snapshot name, whether or not QEMU runs now. The
 * unsaved current state is discarded; other snapshots are kept. */
int qsnap_vm_restore(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts,
		     qsnap_error *err);

/* Given by the library (qsnap_vm_list): grows at the end. */
typedef struct qsnap_snapshot_info {
	char *name;
	char *parent;	   /* NULL for a first snapshot */
	int64_t created;   /* seconds since the epoch */
	qsnap_ram_mode mode; /* stream: RAM in the migration stream; shared: RAM in
				its own file */
	uint64_t size;	   /* bytes on disk of the machine state and its own layers */
	bool compressed;   /* the migration stream is zstd-compressed */
	bool was_running;  /* restores running (else paused) */
	bool current;	   /* the current state descends from this snapshot */
	/* A differential snapshot: the snapshot whose RAM file it builds on
	 * (its name at the save; that snapshot may be deleted since, its RAM
	 * file stays), else NULL. size counts only the snapshot's own files. */
	char *ram_base;
	/* Of a differential snapshot: the older deltas a restore loads before
	 * its own (0: it holds every page changed since the RAM file), and
	 * the snapshot whose delta it builds on directly (the newest of
	 * them; NULL when there are none). Since libqsnap 1.1. */
	size_t ram_deltas;
	char *ram_after;
} qsnap_snapshot_info;

/* The snapshots, oldest first: *ret_n pointers in *ret_list; free them
 * with qsnap_snapshot_info_free(list, n). */
int qsnap_vm_list(qsnap_vm *vm, qsnap_snapshot_info ***ret_list, size_t *ret_n, qsnap_error *err);
void qsnap_snapshot_info_free(qsnap_snapshot_info **list, size_t n);

typedef enum qsnap_dump_format {
	QSNAP_DUMP_STREAM, /* QEMU's migration stream: loads back into QEMU
			      (qsnap start --from-dump) */
	QSNAP_DUMP_ELF,	   /* an ELF core of guest memory (dump-guest-memory),
			      for crash(8) or gdb */
} qsnap_dump_format;

typedef struct qsnap_dump_opts {
	size_t size; /* sizeof(qsnap_dump_opts) */
	qsnap_dump_format format;
	int compress; /* zstd level (1-19); 0: the default, 3; QSNAP_COMPRESS_OFF: none */
	int timeout;  /* seconds; 0: default (600) */
	qsnap_progress_fn progress;
	void *userdata;
} qsnap_dump_opts;
#define QSNAP_DUMP_OPTS_INIT {.size = sizeof(qsnap_dump_opts)}

/* Write the machine state of the running (or paused) VM to output for
 * post-mortem debugging, zstd-compressed in several threads; the VM goes on
 * as it was (a running guest pauses only for milliseconds). The file
 * appears under its name only when complete. After a dump of a paused VM,
 * QEMU 7.2 refuses to save it until the guest has run again. */
int qsnap_vm_dump_memory(qsnap_vm *vm, const char *output, const qsnap_dump_opts *opts,
			 qsnap_error *err);

/* Start a stopped VM from a stream dump (compressed or not), paused and
 * with read-only disks, for inspection with qsnap qmp. */
int qsnap_vm_start_from_dump(qsnap_vm *vm, const char *dump, int timeout, qsnap_error *err);

/* Change how RAM is kept (a stopped VM only): mode, and for shared mode
 * the RAM directory (NULL: the default under /dev/shm). Existing snapshots
 * of either mode stay restorable. */
int qsnap_vm_set_ram(qsnap_vm *vm, qsnap_ram_mode mode, const char *ram_dir, qsnap_error *err);

/* Set the QEMU binary of a stopped VM (qsnap init --qemu; NULL: the
 * default, qemu-system-x86_64 from PATH). Snapshots keep their versioned
 * machine type: a newer QEMU restores them, an older one may refuse them.
 * (QSNAP_1.1) */
int qsnap_vm_set_qemu(qsnap_vm *vm, const char *qemu, qsnap_error *err);

/* Set the chain length past which saves compact (0: the default). */
int qsnap_vm_set_max_chain(qsnap_vm *vm, unsigned max_chain, qsnap_error *err);

/* Set the size at which run/serial.log is rotated (0: the default, 64 MiB;
 * else at least 64 KiB). A running VM's console takes it at its next
 * start. */
int qsnap_vm_set_serial_log_max(qsnap_vm *vm, uint64_t bytes, qsnap_error *err);

/* Set one of the save settings ("save-path", "multifd-channels",
 * "direct-io", "precopy"; values as qsnap_def_set takes them, NULL: auto).
 * Works while the VM runs; the next save uses it. -EINVAL with a sentence
 * for another key or a bad value (vm.json is then left as it was). */
int qsnap_vm_set_save_setting(qsnap_vm *vm, const char *key, const char *value, qsnap_error *err);

typedef struct qsnap_compact_stats {
	size_t size; /* sizeof(qsnap_compact_stats) */
	unsigned merged;    /* unneeded layers merged into the layer above */
	unsigned flattened; /* live chains flattened onto their base image */
	size_t longest;	    /* the longest live chain afterwards (base included) */
	/* Differential snapshots whose chain of at least QSNAP_FOLD_AT older
	 * deltas was folded into a RAM file of their own (since 1.1). */
	unsigned folded;
} qsnap_compact_stats;
#define QSNAP_COMPACT_STATS_INIT {.size = sizeof(qsnap_compact_stats)}

/* Shorten the drives' layer chains without changing what any snapshot
 * restores to: merge layers nothing needs, and flatten live chains longer
 * than max_chain (0: the definition's limit) onto their base. ret_stats
 * (its size set) is filled when not NULL. Works with
 * the VM running (QEMU streams into the active layer) or stopped. */
int qsnap_vm_compact(qsnap_vm *vm, unsigned max_chain, qsnap_compact_stats *ret_stats,
		     qsnap_error *err);

/* A differential snapshot's chain of older deltas, folded into a RAM file
 * of its own: a copy of the RAM file it builds on with those deltas
 * written in (as much disk as the guest's RAM in use), so that a restore
 * loads only its own delta. What it restores to does not change; it
 * shares no file with other snapshots afterwards. qsnap_vm_compact does
 * this for chains of QSNAP_FOLD_AT or more older deltas, except the chain
 * the VM's next differential save builds on (which would then write all
 * that was written since the RAM file); a save's own compaction does not
 * fold. Refused for the snapshot whose RAM file the running VM maps.
 * Since libqsnap 1.1. */
#define QSNAP_FOLD_AT 8
int qsnap_vm_fold(qsnap_vm *vm, const char *name, qsnap_error *err);

/* Delete a snapshot: its machine state, and every layer no other snapshot
 * and no live chain needs. Snapshots built on it stay restorable. The
 * files are gone when it returns; the space of big ones is freed a moment
 * later by a short-lived child process (true(1), started detached), as
 * after a save with replace. */
int qsnap_vm_delete(qsnap_vm *vm, const char *name, qsnap_error *err);

/* ---- Publishing a drive ------------------------------------------------- */

typedef enum qsnap_image_format {
	QSNAP_IMAGE_QCOW2,
	QSNAP_IMAGE_RAW,
} qsnap_image_format;

/* "qcow2" / "raw", and back; -EINVAL for an unknown word. */
const char *qsnap_image_format_name(qsnap_image_format f);
int qsnap_image_format_parse(const char *s, qsnap_image_format *ret);

typedef struct qsnap_publish_opts {
	size_t size; /* sizeof(qsnap_publish_opts) */
	const char *at;	    /* the snapshot to publish; NULL: the drive as it is now,
			       which needs a stopped VM */
	qsnap_image_format format; /* QSNAP_IMAGE_QCOW2 (the default) or QSNAP_IMAGE_RAW */
	bool compress;	    /* compressed qcow2 clusters (several threads) */
	bool replace;	    /* replace an existing output file */
	qsnap_progress_fn progress; /* phase "publish"; bytes of the virtual disk */
	void *userdata;
} qsnap_publish_opts;
#define QSNAP_PUBLISH_OPTS_INIT {.size = sizeof(qsnap_publish_opts)}

/* Write drive's whole layer chain (base image included) as one standalone
 * image at output, which needs no backing file and can be the base image
 * of a later VM. With opts->at the VM may keep running: a snapshot's layers
 * are never written again. The image is written to a temporary name beside
 * output, must pass qemu-img check, and is renamed to output only then; on
 * failure nothing is left. Holds the VM's lock while it works. */
int qsnap_vm_publish(qsnap_vm *vm, const char *drive, const char *output,
		     const qsnap_publish_opts *opts, qsnap_error *err);

/* ---- Verifying snapshots ---------------------------------------------- */

/* Given by the library (qsnap_vm_verify), as the report: grow at the end. */
typedef struct qsnap_verify_problem {
	char *snapshot; /* the snapshot that needs the file */
	char *file;	/* the file, as a path a user can open */
	char *what;	/* what is wrong with it, one sentence */
} qsnap_verify_problem;

typedef struct qsnap_verify_report {
	size_t n_snapshots; /* snapshots checked */
	size_t n_files;	    /* files checked (machine states, meta files, layers, bases) */
	size_t n_problems;
	qsnap_verify_problem **problems;
	/* What could not be checked, which is not damage: a shared-RAM
	 * snapshot saved before qsnap recorded RAM checksums ("RAM not
	 * checksummed"). */
	size_t n_notes;
	qsnap_verify_problem **notes;
} qsnap_verify_report;

typedef struct qsnap_verify_opts {
	size_t size; /* sizeof(qsnap_verify_opts) */
	qsnap_progress_fn progress; /* phase "verify"; bytes of machine state and RAM hashed */
	void *userdata;
} qsnap_verify_opts;
#define QSNAP_VERIFY_OPTS_INIT {.size = sizeof(qsnap_verify_opts)}

/* Check that every file snapshot name needs (every snapshot when name is
 * NULL) exists and is intact: the machine state and a shared-RAM
 * snapshot's RAM file against the size and checksum recorded at save time,
 * meta.json, qemu-img check of every layer
 * of its drives' chains, each chain as state.json records it against the
 * backing files named in the qcow2 headers, and that the base images, the
 * kernel and the initrd can be read. Problems found are not
 * errors: they are listed in the report ((*ret_report)->n_problems > 0;
 * free it with qsnap_verify_report_free); an error means the check itself
 * could not run. */
int qsnap_vm_verify(qsnap_vm *vm, const char *name, const qsnap_verify_opts *opts,
		    qsnap_verify_report **ret_report, qsnap_error *err);
void qsnap_verify_report_free(qsnap_verify_report *report);

/* ---- Moving a snapshot to another host -------------------------------- */

typedef struct qsnap_export_opts {
	size_t size; /* sizeof(qsnap_export_opts) */
	bool compress;		    /* compressed qcow2 disk images in the archive */
	bool replace;		    /* replace an existing output file */
	qsnap_progress_fn progress; /* phases "flatten <drive>" and "export" */
	void *userdata;
} qsnap_export_opts;
#define QSNAP_EXPORT_OPTS_INIT {.size = sizeof(qsnap_export_opts)}

/* Write snapshot name as one tar file that another host can import with
 * qsnap_import and restore with nothing else: its machine state and meta
 * data, every drive flattened into one standalone qcow2 image as it was at
 * the snapshot (base image included), the kernel and initrd, a vm.json that
 * names them, and a manifest with a checksum of every file. The VM may keep
 * running. Written to a temporary name beside output and renamed when
 * complete. Extra QEMU arguments (vm.json extra_args) are copied as they
 * are: files they name are not included. */
int qsnap_vm_export(qsnap_vm *vm, const char *name, const char *output,
		    const qsnap_export_opts *opts, qsnap_error *err);

/* A snapshot from elsewhere (an archive, a registry) is data: its vm.json
 * may name drives, kernel and initrd only inside the new VM directory, and
 * its "qemu", "ram_dir", "extra_args" and an unusual machine type are
 * dropped unless trust_config is set. The local QEMU (qemu, else
 * qemu-system-x86_64 from PATH) runs it. What was dropped or taken is told
 * in one line to notice (with userdata), on success. */
typedef void (*qsnap_notice_fn)(const char *line, void *userdata);

typedef struct qsnap_import_opts {
	size_t size; /* sizeof(qsnap_import_opts) */
	qsnap_progress_fn progress; /* phase "import"; bytes read from the archive */
	void *userdata;
	bool trust_config;	    /* keep the archive's qemu, ram_dir, extra_args, machine */
	const char *qemu;	    /* the QEMU binary to run it; NULL: the default */
	qsnap_notice_fn notice;
} qsnap_import_opts;
#define QSNAP_IMPORT_OPTS_INIT {.size = sizeof(qsnap_import_opts)}

/* Make a new VM directory dir (it must not exist, or be empty) from a file
 * that qsnap_vm_export wrote: the disks become its base images (in
 * dir/images/), and the snapshot is ready to restore (qsnap_vm_restore, or
 * qsnap_vm_start with from). Every checksum is verified before dir appears;
 * a damaged or foreign archive leaves nothing behind. The snapshot's name
 * is returned in ret_name (free it with qsnap_free) when ret_name is not NULL. */
int qsnap_import(const char *dir, const char *input, const qsnap_import_opts *opts,
		 char **ret_name, qsnap_error *err);

/* ---- Snapshots through an OCI registry ------------------------------- */

/* A registry reference is host[:port]/repository[:tag]. Credentials come
 * from QSNAP_REGISTRY_USER and QSNAP_REGISTRY_PASSWORD, else from the
 * Docker-style config ($DOCKER_CONFIG/config.json or ~/.docker/config.json,
 * "auths" with a base64 "auth"); Basic and Bearer-token registries work. */

typedef struct qsnap_push_stats {
	size_t size; /* sizeof(qsnap_push_stats) */
	char digest[72];	 /* the manifest's, "sha256:<hex>" */
	size_t blobs;		 /* blobs the manifest names, the config included */
	size_t uploaded;	 /* blobs this push uploaded */
	uint64_t uploaded_bytes;
	size_t present;		 /* blobs the registry had already */
	uint64_t present_bytes;
	size_t zero_chunks;	 /* all-zero chunks: recorded in the config, not sent */
	uint64_t zero_bytes;
	uint64_t bytes;		 /* of all the blobs the manifest names */
} qsnap_push_stats;
#define QSNAP_PUSH_STATS_INIT {.size = sizeof(qsnap_push_stats)}

typedef struct qsnap_push_opts {
	size_t size; /* sizeof(qsnap_push_opts) */
	bool insecure; /* plain HTTP (a registry on localhost); else HTTPS */
	/* phases "digest" (bytes hashed), "check", "upload" (bytes sent) */
	qsnap_progress_fn progress;
	void *userdata;
	qsnap_push_stats *stats; /* filled on success when not NULL */
} qsnap_push_opts;
#define QSNAP_PUSH_OPTS_INIT {.size = sizeof(qsnap_push_opts)}

/* Push snapshot name to ref (the tag defaults to the snapshot's name) as an
 * OCI artifact: its drives' images as they are (base images and layers,
 * not flattened), kernel, initrd, and the machine state and shared RAM in
 * fixed-size chunks. Blobs the registry has are not sent again; all-zero
 * chunks are not sent at all. The VM may keep running. */
int qsnap_vm_push(qsnap_vm *vm, const char *name, const char *ref, const qsnap_push_opts *opts,
		  qsnap_error *err);

typedef struct qsnap_pull_stats {
	size_t size; /* sizeof(qsnap_pull_stats) */
	char digest[72];	 /* the manifest's */
	size_t blobs;		 /* blobs the snapshot needs */
	size_t downloaded;	 /* blobs this pull downloaded */
	uint64_t downloaded_bytes;
	size_t reused;		 /* blobs the VM directory had already */
	uint64_t reused_bytes;
} qsnap_pull_stats;
#define QSNAP_PULL_STATS_INIT {.size = sizeof(qsnap_pull_stats)}

typedef struct qsnap_pull_opts {
	size_t size; /* sizeof(qsnap_pull_opts) */
	bool insecure;
	int lock_timeout; /* pulling into an existing VM: seconds to wait for its lock, as
			     qsnap_vm_open's lock_timeout (0: the default) */
	qsnap_progress_fn progress; /* phases "digest" (local base images), "download" */
	void *userdata;
	qsnap_pull_stats *stats; /* filled on success when not NULL */
	bool trust_config;	 /* keep the artifact's qemu, ram_dir, extra_args, machine */
	const char *qemu;	 /* the QEMU binary to run it; NULL: the default */
	qsnap_notice_fn notice;	 /* see qsnap_import_opts */
} qsnap_pull_opts;
#define QSNAP_PULL_OPTS_INIT {.size = sizeof(qsnap_pull_opts)}

/* Pull the snapshot at ref (the tag defaults to "latest") into dir. A new
 * (or empty) dir becomes a VM directory, staged under a hidden name beside
 * it and renamed when complete. A dir that is a VM already gets the
 * snapshot added, if its drives' base images are the snapshot's (checked
 * by digest); layers it has from an earlier pull are not downloaded
 * again. Every blob is checked against its sha256 as it arrives; on
 * failure nothing is left. The snapshot's name is returned in ret_name
 * (free it with qsnap_free) when not NULL. */
int qsnap_pull(const char *ref, const char *dir, const qsnap_pull_opts *opts, char **ret_name,
	       qsnap_error *err);

#ifdef __cplusplus
}
#endif

#endif
