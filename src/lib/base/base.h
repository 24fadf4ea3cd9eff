/* SPDX-License-Identifier: MIT */
/* The ground floor of libqsnap: errors, memory, files, helper programs,
 * JSON, checksums, the zstd pump, RAM files, progress reports, processes.
 * Nothing here knows QEMU or a VM directory. */
#ifndef QSNAP_BASE_H
#define QSNAP_BASE_H

#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "qsnap.h"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p)
{
	free(*(void **)p);
}
/* Also called by hand before the variable's own cleanup: it is reset, so
 * that the fd number, which another thread may have been given by now, is
 * never closed twice. */
static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}
static inline void json_putp(json_object **o)
{
	if (*o)
		json_object_put(*o);
}
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_json_ _cleanup_(json_putp)
void strv_freep(char ***v);
#define _cleanup_strv_ _cleanup_(strv_freep)

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

/* ---- the VM definition (qsnap.h's opaque qsnap_def; vmdir/vmdef*.c) ---- */

typedef enum qsnap_iface {
	QSNAP_IF_VIRTIO,
	QSNAP_IF_SCSI,
	QSNAP_IF_IDE,
	QSNAP_IF_PFLASH,
} qsnap_iface;

typedef struct qsnap_drive_def {
	char *id;     /* [A-Za-z][A-Za-z0-9_-]*, at most 31 characters */
	char *path;   /* the base image, absolute; never written by qsnap */
	char *format; /* "qcow2" or "raw": the base image's format */
	qsnap_iface iface;
	bool readonly; /* read-only drives get no layers and are not snapshotted */
} qsnap_drive_def;

/* A save's path for RAM (qsnap config --save-path). */
enum save_path {
	SAVE_PATH_AUTO, /* by what this QEMU can do, as measured (save.c) */
	SAVE_PATH_STREAM,
	SAVE_PATH_MAPPED,  /* mapped-ram + multifd */
	SAVE_PATH_RAMFILE, /* the stream through qsnap into a RAM file */
};
/* An on/off setting whose default qsnap chooses. */
enum setting {
	SETTING_AUTO,
	SETTING_ON,
	SETTING_OFF,
};

struct qsnap_def {
	char *qemu;    /* QEMU binary; NULL: qemu-system-x86_64 from PATH */
	char *machine; /* NULL: QEMU's default machine */
	char *accel;   /* colon-separated list tried in order, default "kvm:tcg" */
	char *cpu;     /* NULL: QEMU's default CPU model */
	unsigned smp;  /* number of vCPUs, default 1 */
	uint64_t memory; /* bytes, default 1 GiB */
	char *kernel, *initrd, *append; /* direct kernel boot, all optional */
	bool serial;   /* first serial port on run/serial.sock (default true) */
	qsnap_ram_mode ram_mode;
	char *ram_dir; /* shared mode: where the RAM file lives; NULL: a private
			  folder under /dev/shm */
	unsigned max_chain; /* 0: QSNAP_DEFAULT_MAX_CHAIN */
	size_t n_drives;
	qsnap_drive_def *drives;
	size_t n_extra;
	char **extra; /* extra QEMU arguments, appended as given */
	/* run/serial.log moves to run/serial.log.1 when it would grow past
	 * this many bytes; 0: QSNAP_DEFAULT_SERIAL_LOG_MAX. */
	uint64_t serial_log_max;
	/* How a plain stream save writes RAM (qsnap config): the path, the
	 * multifd channels of mapped-ram (0: by the host's cores), QEMU's
	 * direct-io for it, and precopy; AUTO: qsnap's measured default. */
	enum save_path save_path;
	unsigned multifd_channels;
	enum setting direct_io, precopy;
};

/* ---- errors (error.c) ---- */

/* Set err to the formatted message; returns -code. */
int qerr(qsnap_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Put context in front of the message already in err; returns -err->code. */
int qerr_prefix(qsnap_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- memory, strings, time (alloc.c) ---- */

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
/* Wall-clock time in seconds (QEMU's event timestamps are wall-clock). */
double now_wall(void);
/* Sleep for ms milliseconds. */
void sleep_ms(int ms);

/* ---- files (files.c) ---- */

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
/* The same, but the space of its big files (64 MiB and more on disk) is
 * freed by a short-lived detached child instead of the caller: the names
 * are gone when it returns, the space a moment later. For snapshots that
 * a command drops after its work is done (files.c says why). */
int rm_rf_detached(int dirfd, const char *path);
/* Remove what killed commands left in dirfd: entries named
 * PREFIX...MARK<pid> (".x.qsnap-import-123") whose process is gone. */
void sweep_stale(int dirfd, const char *prefix, const char *mark);
/* A temporary name beside output (".NAME.qsnap-WHAT-PID" in its directory),
 * where a file is made whole before it takes output's name, once what a
 * killed run left under such a name is gone; fails clearly when that
 * directory is not writable. */
int output_beside(const char *output, const char *what, char **ret, qsnap_error *err);
/* Give the file made whole at tmp (output_beside) output's name; without
 * replace never over a file that appeared meanwhile (RENAME_NOREPLACE).
 * tmp is the caller's to remove on failure. */
int output_take(const char *tmp, const char *output, bool replace, qsnap_error *err);
/* A directory that exists and holds nothing. */
bool dir_is_empty(const char *path);
/* Bytes allocated on disk by a file or a directory tree. */
uint64_t disk_usage(int dirfd, const char *path);
/* The last lines of a file, at most max bytes, for error messages. */
char *file_tail(int dirfd, const char *path, size_t max);

/* ---- children (child.c) ---- */

/* How a child of child_start that does not exec ends: exit_group itself,
 * not _exit(), which a runtime (a sanitizer's) may wrap with locks. */
void child_exit(int status) __attribute__((noreturn));
/* The calls a child makes between clone and exec, as system calls: a
 * runtime's wrapper of the libc function (a sanitizer's) may take locks
 * that another thread of the parent held at the clone, and wait forever.
 * They return and set errno as libc's do; child_dup2 also keeps a
 * descriptor moved onto itself open across exec. */
int child_open(const char *path, int flags);
int child_dup2(int oldfd, int newfd);
int child_dupfd_above(int fd, int min);
void child_close_from(unsigned first, unsigned last);
int child_chdir(const char *path);
void child_umask(unsigned mask);
void child_write(int fd, const void *buf, size_t len);
int child_execve(const char *prog, char *const argv[], char *const envp[]);
/* Start a child that runs fn(arg) and exits with what it returns; fn may
 * make only async-signal-safe calls (it should exec). Signals reset as
 * above. The child's exit signal is 0: a caller's SIGCHLD=SIG_IGN or
 * waitpid(-1) cannot reap it, so child_wait always gets its status. */
int child_start(int (*fn)(void *), void *arg, pid_t *ret_pid, qsnap_error *err);
/* Wait for a child of child_start (EINTR retried); its status as waitpid
 * gives it. */
int child_wait(pid_t pid, int *ret_status, qsnap_error *err);
/* For a program (fn execs it): exec makes a child's exit signal SIGCHLD
 * again, so it runs under a waiter (exit signal 0, never execs) that
 * passes its wait status back. */
struct waited {
	pid_t pid; /* the waiter */
	int status_fd;
};
int child_start_waited(int (*fn)(void *), void *arg, struct waited *ret, qsnap_error *err);
/* Wait for the waiter; the program's status as waitpid gives it. Closes
 * status_fd. */
int child_wait_waited(struct waited *c, int *ret_status, qsnap_error *err);

/* A program started detached (child_exec_detached): nobody's child here,
 * in a session of its own, with default signals, an empty mask, envp, and
 * exactly the descriptors fds[0..n_fds-1] as 0..n_fds-1 (the same
 * descriptor may be given at several numbers). */
#define CHILD_MAX_FDS 16
struct child_exec {
	const char *prog; /* a path */
	char *const *argv, *const *envp;
	const int *fds;
	unsigned n_fds;
	const char *cwd; /* NULL: "/" */
	int umask;	 /* -1: the caller's */
};
/* Start it through an intermediate child (child_start) that forks it and
 * exits; its pid, or why exec failed ("cannot run PROG: ..."), comes back
 * through a close-on-exec pipe, never an exit status. */
int child_exec_detached(const struct child_exec *x, pid_t *ret_pid, qsnap_error *err);

/* ---- qsnap's own helper programs (helper.c) ---- */

/* The folder of qsnap's helpers: the build tree's src/helpers for a library
 * (or program) of that build tree, else libexecdir/qsnap beside the
 * library. */
char *helper_dir(void);
/* Start the helper argv[0] (a name in helper_dir) detached
 * (child_exec_detached) with envp and fds[i] as descriptor i; descriptor
 * n_fds is its ready pipe. Returns once it said it is ready (helper_ready),
 * with its pid; its failure (helper_failed) is the error. */
int helper_start(char *const argv[], char *const envp[], const int *fds, unsigned n_fds,
		 pid_t *ret_pid, qsnap_error *err);
/* In a helper: the first of its descriptors 3..last that is not open (it
 * was not started by the library), or -1. */
int helper_missing_fd(int last);
/* In a helper: say that it is ready, or why it failed; closes fd. */
void helper_ready(int fd);
void helper_failed(int fd, const qsnap_error *err);

/* ---- helper programs (program.c) ---- */

/* Find a program in PATH (or take an absolute/relative path as is). */
char *find_program(const char *name);

/* Run a helper program without a shell, in directory cwd, with a
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
/* Hash bytes [start, end) of a regular file: data extents from map (the
 * whole file mapped) or read from fd, holes as zeros without reading them.
 * Returns 0 or an errno. */
int hasher_update_range(struct hasher *h, int fd, const uint8_t *map, uint64_t start,
			uint64_t end, void (*on_read)(uint64_t n, void *userdata), void *userdata);
/* The checksum of a whole file (holes read as zeros); what names it in
 * errors. */
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

/* ---- sha256 (sha256.c, OpenSSL's libcrypto) ---- */

#define SHA256_PREFIX "sha256:"
#define DIGEST_LEN (7 + 64) /* "sha256:" and 64 hex digits */

struct sha256 {
	void *ctx; /* EVP_MD_CTX */
	uint64_t bytes;
};
void sha256_init(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *data, size_t len);
/* "sha256:<hex>" into out (DIGEST_LEN + 1 bytes); the hasher is done. */
void sha256_final(struct sha256 *h, char out[DIGEST_LEN + 1]);
void sha256_free(struct sha256 *h);
void sha256_buf(const void *data, size_t len, char out[DIGEST_LEN + 1]);
/* Is s "sha256:" and 64 lowercase hex digits? */
bool digest_valid(const char *s);

/* ---- how waits end (wait.c) ---- */

/* A cancellation: an eventfd (O_CLOEXEC, non-blocking) that turns readable
 * when raised and stays so until cleared. -1 stands for "none" in every
 * function that takes one. */
int cancel_new(void);
/* Raise it: one write(), async-signal-safe. */
void cancel_raise(int fd);
void cancel_clear(int fd);
bool cancel_raised(int fd);
/* Milliseconds until deadline (a now_ms() time) for poll(): 0 when past,
 * -1 (forever) for a deadline of 0. */
int wait_left_ms(int64_t deadline);
/* Wait until fd (-1: none) has events, cancel_fd is raised or deadline (0:
 * none) passes: 0, -ECANCELED or -ETIMEDOUT (cancel wins a tie). */
int wait_fd(int fd, short events, int cancel_fd, int64_t deadline);
/* Write n bytes to fd; where fd is non-blocking and full, wait until it
 * takes more or cancel_fd (-1: none) is raised (-ECANCELED). */
int write_wait(int fd, const uint8_t *p, size_t n, int cancel_fd, qsnap_error *err);

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
/* Wait until QEMU closed its end and the thread is done; unless QEMU let
 * go of the pipe by deadline (0: no limit), or cancel_fd is raised, the
 * thread is stopped and the result is -ETIMEDOUT (QEMU still holds the
 * pipe: the caller's to end) or -ECANCELED. Frees p in every case. */
int pump_finish(struct pump *p, int64_t deadline, int cancel_fd, qsnap_error *err);
/* The same, with the checksum of what went into the file (to it only). */
int pump_finish_checksum(struct pump *p, int64_t deadline, int cancel_fd, char **ret_checksum,
			 qsnap_error *err);
/* The pump's work is not wanted (a failed migration): towards a file, it
 * reads and drops what QEMU still writes until QEMU lets go (a cancelled
 * migration must not block QEMU on a full pipe); towards QEMU, it closes
 * the pipe. -ETIMEDOUT as above when QEMU did not let go by deadline; the
 * thread's own error (a full disk: the reason QEMU saw only as a broken
 * pipe) otherwise. Frees p; NULL is fine. */
int pump_discard(struct pump *p, int64_t deadline, qsnap_error *err);
/* Start that drain now, without waiting (before a migration is cancelled:
 * QEMU blocked on a full pipe would not see the cancel). */
void pump_drain(struct pump *p);

/* ---- shared RAM files (ramfile.c) ---- */

/* Copy a RAM file of size bytes: holes and zero pages stay holes. With
 * ret_checksum, the source's checksum (as checksum_fd gives it) is
 * computed on the way. */
int ramfile_copy(int srcdirfd, const char *src, int dstdirfd, const char *dst, uint64_t size,
		 const char *phase, qsnap_progress_fn progress, void *userdata,
		 char **ret_checksum, qsnap_error *err);
/* Bytes a file really occupies. */
uint64_t ramfile_allocated(int dirfd, const char *path);
/* Fail early and clearly when dir cannot take need more bytes. */
int ramfile_check_space(int dirfd, const char *dir, uint64_t need, const char *what,
			qsnap_error *err);

/* ---- structs that carry their size (sized.c) ---- */

/* Copy the caller's src (NULL: all defaults) into dst, the library's own
 * struct of dst_size bytes, both starting with size_t size: what the
 * caller's size covers, the rest zero; fields past dst_size that the
 * caller set fail with E2BIG. what names the struct type in errors. */
int sized_in(void *dst, size_t dst_size, const void *src, const char *what, qsnap_error *err);
/* Check the size of a struct the library will fill (NULL is fine). */
int sized_check(const void *p, const char *what, qsnap_error *err);
/* Fill the caller's dst (NULL: nothing) from src of src_size bytes, as far
 * as dst's size covers; what dst has past src_size becomes zero. */
void sized_out(void *dst, const void *src, size_t src_size);

/* ---- progress reports (progress.c) ---- */

/* One operation's progress: phase names it (qsnap.h lists the phases);
 * progress_report calls fn, if any, with done of total and the time since
 * progress_begin. */
struct progress {
	const char *phase;
	qsnap_progress_fn fn;
	void *userdata;
	uint64_t total;
	int64_t t0;
};
void progress_begin(struct progress *p, const char *phase, qsnap_progress_fn fn, void *userdata,
		    uint64_t total);
void progress_report(const struct progress *p, uint64_t done, bool finished);

/* ---- processes (process.c) ---- */

/* The host's online cores, at least 1 and at most max. */
unsigned host_cores(unsigned max);

/* Start time of a process (clock ticks after boot), 0 if gone or a zombie. */
unsigned long long proc_start_time(pid_t pid);
/* The process pid runs and began at start (0, unknown, matches none). */
bool proc_alive(pid_t pid, unsigned long long start);
/* Send sig to the process pid that began at start, through a pidfd where
 * the kernel has them (no pid reuse between the check and the signal);
 * -ESRCH when it is gone. */
int proc_signal(pid_t pid, unsigned long long start, int sig);
/* Wait until the process is gone (poll on its pidfd, else by polling);
 * -ETIMEDOUT after timeout_ms, -ECANCELED when cancel_fd is raised. */
int proc_wait_gone(pid_t pid, unsigned long long start, int timeout_ms, int cancel_fd);

#endif
