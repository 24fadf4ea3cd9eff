/* SPDX-License-Identifier: MIT */
/* Internal interfaces of libqsnap: shared helpers and the VM object. */
#ifndef QSNAP_INTERNAL_H
#define QSNAP_INTERNAL_H

#include <json-c/json.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "qsnap.h"
#include "state.h"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p)
{
	free(*(void **)p);
}
static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
static inline void json_putp(json_object **o)
{
	if (*o)
		json_object_put(*o);
}
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_json_ _cleanup_(json_putp)

/* Take ownership of a pointer or fd: the variable is reset so that its
 * cleanup does nothing. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p = (p);                                                            \
		(p) = NULL;                                                                        \
		_p;                                                                                \
	})
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd = (fd);                                                                    \
		(fd) = -1;                                                                         \
		_fd;                                                                               \
	})

/* ---- errors (error.c) ---- */

/* Set err to the formatted message; returns -code. */
int qerr(qsnap_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Put context in front of the message already in err; returns -err->code. */
int qerr_prefix(qsnap_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- small helpers (util.c) ---- */

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrdup_or_null(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* NULL-terminated string vectors. */
void strv_push(char ***v, size_t *n, const char *s);
void strv_pushf(char ***v, size_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void strv_free(char **v);

/* Monotonic time in milliseconds. */
int64_t now_ms(void);
/* Sleep for ms milliseconds. */
void sleep_ms(int ms);

/* Write data to path (relative to dirfd) atomically: temporary file, fsync,
 * rename, fsync the directory. */
int write_file_atomic(int dirfd, const char *path, const char *data, size_t len,
		      qsnap_error *err);
/* Read a whole file (relative to dirfd); NUL-terminated. */
int read_file(int dirfd, const char *path, char **ret_data, size_t *ret_len, qsnap_error *err);
/* fsync a file (relative to dirfd). */
int fsync_file(int dirfd, const char *path, qsnap_error *err);
/* fsync a directory (relative to dirfd). */
int fsync_dir(int dirfd, const char *path, qsnap_error *err);
/* Remove a directory tree (relative to dirfd); missing is not an error. */
int rm_rf(int dirfd, const char *path);
/* A directory that exists and holds nothing. */
bool dir_is_empty(const char *path);
/* Bytes allocated on disk by a file or a directory tree. */
uint64_t disk_usage(int dirfd, const char *path);
/* The last lines of a file, at most max bytes, for error messages. */
char *file_tail(int dirfd, const char *path, size_t max);

/* Find a program in PATH (or take an absolute/relative path as is). */
char *find_program(const char *name);

/* The qemu-img that belongs to a QEMU binary (vm.json's "qemu", NULL for
 * qemu-system-x86_64 from PATH): the one beside it, else qemu-img from PATH. */
char *qemu_img_for(const char *qemu);

/* Run a helper program (qemu-img) without a shell, in directory cwd, with a
 * minimal environment; its stderr becomes part of the error on failure and
 * its stdout is returned in ret_out if non-NULL. */
int run_program(const char *cwd, char *const argv[], char **ret_out, qsnap_error *err);

struct run_opts {
	/* Called with each piece of the child's stdout as it arrives. */
	void (*on_stdout)(const char *data, size_t len, void *userdata);
	void *userdata;
	/* When set, any exit code is returned here instead of being an error,
	 * and stderr in ret_stderr (if set). */
	int *ret_status;
	char **ret_stderr;
};
int run_program_ex(const char *cwd, char *const argv[], const struct run_opts *o, char **ret_out,
		   qsnap_error *err);

/* ---- JSON helpers (json.c) ---- */

const char *jstr(json_object *o, const char *key);
int64_t jint(json_object *o, const char *key, int64_t dflt);
bool jbool(json_object *o, const char *key, bool dflt);
json_object *jobj(json_object *o, const char *key);
json_object *jarr(json_object *o, const char *key);
/* Build an object from key/value pairs, terminated by NULL; values are taken. */
json_object *jbuild(const char *key, ...);

/* ---- The VM object ---- */

struct qmp;

struct qsnap_vm {
	char *dir;  /* absolute path */
	int dirfd;
	int lockfd; /* -1 when opened read-only */
	bool readonly;
	qsnap_def def;
	struct state st;
	struct qmp *qmp; /* connection to the running QEMU, opened on demand */
};

/* Save state.json atomically. */
int vm_write_state(qsnap_vm *vm, qsnap_error *err);
/* Is the QEMU recorded in state.json alive? */
bool vm_qemu_alive(qsnap_vm *vm);
/* Connect to the running QEMU's QMP socket (cached). */
int vm_qmp(qsnap_vm *vm, struct qmp **ret, qsnap_error *err);
/* Forget the QEMU in state (it exited); closes the QMP connection. */
void vm_forget_qemu(qsnap_vm *vm);
/* A path inside the VM directory, for messages: "DIR/rel". */
char *vm_path(qsnap_vm *vm, const char *rel);
/* Drop the cached QMP connection. */
void vm_qmp_close(qsnap_vm *vm);
/* The error message with the tail of run/qemu.log appended. */
int vm_err_qemu_log(qsnap_vm *vm, qsnap_error *err);

/* QEMU's run state from query-status: "running", "paused", "postmigrate", ... */
int vm_query_status(qsnap_vm *vm, char **ret_status, bool *ret_running, qsnap_error *err);

/* Launch QEMU for this VM (proc.c builds the command line). */
struct launch {
	bool incoming;	      /* -incoming defer */
	int timeout;	      /* seconds for QMP to come up */
	const char *ram_file; /* guest RAM from this file; NULL: anonymous */
	bool ram_share;	      /* MAP_SHARED (ours to copy) or copy-on-write */
	bool readonly_disks;  /* inspecting a memory dump: change nothing */
	const char *machine;  /* a snapshot's machine type; NULL: the VM's */
};
/* The machine type QEMU starts with when nothing else says: the versioned
 * one recorded for vm.json's machine, else vm.json's (NULL: default). */
const char *vm_machine(const qsnap_def *def, const struct state *st);
int vm_launch(qsnap_vm *vm, const struct launch *l, qsnap_error *err);
/* Let the vCPUs run. */
int vm_cont(qsnap_vm *vm, qsnap_error *err);
/* Restore a snapshot (restore.c); paused overrides the snapshot's run state. */
int restore_into(qsnap_vm *vm, const char *name, const qsnap_restore_opts *opts, bool paused,
		 qsnap_error *err);
/* Look up a snapshot; the error lists the ones there are (restore.c). */
int find_snapshot(qsnap_vm *vm, const char *name, struct snapshot **ret, qsnap_error *err);
/* Undo a save that was interrupted (save.c). */
int save_recover(qsnap_vm *vm, qsnap_error *err);
/* Stop QEMU: quit, then SIGKILL after timeout seconds. */
int vm_kill_qemu(qsnap_vm *vm, int timeout, qsnap_error *err);

/* ---- drive layers (chain.c) ---- */

/* Create a new empty qcow2 layer for drive on top of backing (a layer path,
 * or NULL for the drive's base image); returns its path in ret_path. */
int chain_new_layer(qsnap_vm *vm, const qsnap_drive_def *d, const char *backing, char **ret_path,
		    qsnap_error *err);
/* Remove every layer file that neither a snapshot nor an active chain needs. */
int chain_gc(qsnap_vm *vm, qsnap_error *err);
/* The node name QEMU knows a layer by, and the base image of the index-th
 * drive of the definition. */
char *chain_node_name(const char *layer_path);
char *chain_base_node(size_t index);
/* The layers of a chain, bottom first, ending with top (none if NULL);
 * free() the array, not the strings. */
size_t chain_layers(struct state *st, const char *top, const char ***ret);
/* How many images a drive reads through: the base and the layers up to top. */
size_t chain_length(struct state *st, const char *top);
/* Virtual size of a drive's base image. */
const qsnap_drive_def *def_drive(const qsnap_def *def, const char *id);

/* ---- what the running QEMU can do (caps.c) ---- */

/* Ask a new connection's QEMU what it can do (query-version,
 * query-migrate-capabilities, query-migrate-parameters, query-commands). */
int caps_learn(struct qmp *q, qsnap_error *err);
bool caps_migrate_cap(struct qmp *q, const char *name);
bool caps_migrate_param(struct qmp *q, const char *name);
bool caps_command(struct qmp *q, const char *name);
/* The migration transport for a seekable file: file:/dev/fdset/N through
 * add-fd, where QEMU has it; else fd: with getfd. */
bool caps_file_uri(struct qmp *q);
/* "10.0.2", or "" when unknown. */
const char *caps_version(struct qmp *q);
/* The versioned machine type want (NULL: QEMU's default; an alias such as
 * pc or q35; a versioned type is kept as given) is on this QEMU. */
int caps_resolve_machine(struct qmp *q, const char *want, char **ret, qsnap_error *err);
/* Does the running QEMU have machine type name? */
int caps_has_machine(struct qmp *q, const char *name, bool *ret, qsnap_error *err);
/* Does the QEMU binary qemu (NULL: qemu-system-x86_64) have that machine
 * type? Asked of the binary itself (-machine help), for a QEMU not running. */
int qemu_has_machine(const char *qemu, const char *machine, bool *ret, qsnap_error *err);

/* ---- migration (migrate.c) ---- */

/* Migration capabilities and parameters qsnap uses at both ends.
 * ignore_shared: leave shared RAM out of the stream (x-ignore-shared); the
 * loading end must say the same as the saving end did. background: a live
 * save (background-snapshot). */
int migrate_setup(struct qmp *q, bool incoming, bool ignore_shared, bool background, bool mapped,
		  qsnap_error *err);
/* mapped: the mapped-ram format (RAM pages at fixed offsets of a seekable
 * file, written and read by multifd channels). Can this QEMU do it? */
bool migrate_can_map(struct qmp *q);
/* multifd channels: QSNAP_MULTIFD_CHANNELS, else the host's cores, at most 4. */
unsigned migrate_channels(void);

struct mig_wait {
	bool incoming;
	int timeout_s;	   /* then the migration is cancelled (source) */
	const char *phase; /* for progress reports */
	qsnap_progress_fn progress;
	void *userdata;
	int fd;		/* the file QEMU writes or reads: its offset is our progress */
	struct pump *pump; /* or, through a pump, the bytes it moved */
	uint64_t total; /* bytes expected when known (restore: the file's size) */
	/* A live save that stopped the guest for the disks' cut: let it run
	 * again once QEMU writes RAM (QEMU >= 9.0 leaves it paused). */
	bool live;
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

/* ---- zstd between QEMU and a file (pump.c) ---- */

struct pump;
enum pump_kind {
	PUMP_COMPRESS,	 /* what QEMU writes, zstd-compressed into the file */
	PUMP_DECOMPRESS, /* the file, decompressed, for QEMU to read */
};
/* Start a thread between QEMU and file_fd through a pipe: pass
 * *ret_qemu_fd to QEMU, then close it here. */
int pump_start(enum pump_kind kind, int file_fd, int level, const char *what, struct pump **ret,
	       int *ret_qemu_fd, qsnap_error *err);
/* Uncompressed bytes through the pump so far. */
uint64_t pump_bytes(struct pump *p);
/* Wait until QEMU closed its end and the thread is done. */
int pump_finish(struct pump *p, qsnap_error *err);
/* The same, with the checksum of what went into the file (to it only). */
int pump_finish_checksum(struct pump *p, char **ret_checksum, qsnap_error *err);

/* ---- shared RAM files (ramfile.c) ---- */

/* Copy a RAM file of size bytes: holes and zero pages stay holes. */
int ramfile_copy(int srcdirfd, const char *src, int dstdirfd, const char *dst, uint64_t size,
		 const char *phase, qsnap_progress_fn progress, void *userdata, qsnap_error *err);
/* Bytes a file really occupies. */
uint64_t ramfile_allocated(int dirfd, const char *path);
/* Fail early and clearly when dir cannot take need more bytes. */
int ramfile_check_space(int dirfd, const char *dir, uint64_t need, const char *what,
			qsnap_error *err);

/* The directory of this VM's shared RAM file (created 0700), absolute. */
int vm_ram_dir(qsnap_vm *vm, char **ret, qsnap_error *err);
/* Give the VM a fresh, empty shared RAM file for a new QEMU. */
int vm_new_ram_file(qsnap_vm *vm, char **ret_path, qsnap_error *err);
/* Forget (and for a shared file, remove) the RAM of a QEMU that is gone. */
void vm_drop_ram(qsnap_vm *vm);
/* ---- checksums (checksum.c) ---- */

#define CHECKSUM_PREFIX "xxh3-128:"

struct XXH3_state_s;
/* A checksum computed piece by piece. */
struct hasher {
	struct XXH3_state_s *state;
	uint64_t bytes;
};
void hasher_init(struct hasher *h);
void hasher_update(struct hasher *h, const void *data, size_t len);
/* "xxh3-128:<hex>"; the hasher is done afterwards. */
char *hasher_final(struct hasher *h);
void hasher_free(struct hasher *h);
/* Is s a checksum in the form hasher_final writes? */
bool checksum_valid(const char *s);
/* The checksum of a whole file; what names it in errors. */
int checksum_fd(int fd, const char *what, char **ret, qsnap_error *err);
int checksum_file(int dirfd, const char *path, char **ret, qsnap_error *err);
/* The same, telling on_read how many bytes it read each time. */
int checksum_fd_ex(int fd, const char *what, void (*on_read)(uint64_t n, void *userdata),
		   void *userdata, char **ret, qsnap_error *err);
/* The checksum of a file that another process (QEMU's migration) is still
 * appending to, hashed in a thread as it grows. finish: the writer is done;
 * waits for the rest and returns the checksum (what names the file in
 * errors). Both finish and cancel free f; cancel(NULL) does nothing. */
struct checksum_follow;
struct checksum_follow *checksum_follow_start(int fd);
int checksum_follow_finish(struct checksum_follow *f, const char *what, char **ret,
			   qsnap_error *err);
void checksum_follow_cancel(struct checksum_follow *f);

/* ---- disk images through qemu-img (publish.c) ---- */

struct convert {
	const char *qemu_img;  /* qemu_img_for() the VM's QEMU */
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
int image_convert(const struct convert *c, qsnap_error *err);
/* "a, b, c": the drive ids of a definition. */
char *drive_ids(const qsnap_def *def);
/* qemu-img check of an image that must pass it. */
int image_check(const char *qemu_img, const char *path, const char *format, qsnap_error *err);

/* ---- export and import (export.c, import.c) ---- */

/* The first file of an export: what it holds, with sizes and checksums. */
#define EXPORT_MANIFEST "qsnap-export.json"
#define EXPORT_FORMAT "qsnap-export"
#define EXPORT_VERSION 1
/* A disk image (path relative to dir) names no backing or data file
 * (import.c). */
int check_standalone(const char *qemu_img, const char *dir, const char *path, const char *format,
		     qsnap_error *err);
/* Cancel an outgoing migration, if any, and wait until it has ended and
 * QEMU accepts "cont" again. */
void migrate_end(struct qmp *q);

/* ---- vm.json (vmdef.c) ---- */

int vmdef_to_json(const qsnap_def *def, char **ret_text, qsnap_error *err);
int vmdef_from_json(const char *text, const char *what, qsnap_def *def, qsnap_error *err);
int vmdef_check(const qsnap_def *def, qsnap_error *err);
/* A deep copy. */
void def_copy(qsnap_def *dst, const qsnap_def *src);
bool drive_id_valid(const char *id);

/* ---- process (proc.c) ---- */

int proc_build_argv(const qsnap_def *def, const struct state *st, const struct launch *l,
		    char ***ret_argv, qsnap_error *err);
/* QEMU's end of the console relay's socket pair, at this fd in QEMU. */
#define PROC_CONSOLE_FD 3
#define PROC_CONSOLE_FD_STR "3"
/* Start QEMU detached; console_fd (or -1) becomes its PROC_CONSOLE_FD. */
int proc_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err);

/* ---- the serial console relay (console.c) ---- */

/* Listen on dir/run/serial.sock and start the relay process that serves it
 * and appends the guest's output to run/serial.log; *ret_qemu_fd is the end
 * for QEMU's serial chardev. The relay ends when that end closes. */
int console_start(const char *dir, int *ret_qemu_fd, qsnap_error *err);
/* Start time of a process (clock ticks after boot), 0 if gone or a zombie. */
unsigned long long proc_start_time(pid_t pid);
bool proc_alive(pid_t pid, unsigned long long start);
/* Wait until the process is gone; -ETIMEDOUT after timeout_ms. */
int proc_wait_gone(pid_t pid, unsigned long long start, int timeout_ms);

#endif
