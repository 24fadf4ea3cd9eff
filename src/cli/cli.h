/* SPDX-License-Identifier: MIT */
/* Shared pieces of the qsnap command line: each subcommand lives in its own
 * file and uses only the public API. */
#ifndef QSNAP_CLI_H
#define QSNAP_CLI_H

#include <getopt.h>
#include <stdbool.h>

#include "qsnap.h"

/* Exit codes. */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_LOCK_TIMEOUT 600

struct cli_cmd {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

int cmd_init(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_qmp(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_dump_memory(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_pull(int argc, char **argv);

/* "qsnap: <message>" on stderr; returns EXIT_FAIL. */
int cli_fail(const qsnap_error *err);
/* A usage error for command cmd; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* getopt_long with our error messages: returns the option, -1 at the end,
 * or '?' after printing an error. */
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts);
/* Parse a non-negative integer option value; -1 on error (printed). */
long cli_number(const char *cmd, const char *opt, const char *value);

/* Open a VM for a command that changes it (waits for the lock). */
int cli_open(const char *dir, int lock_timeout, qsnap_vm **ret_vm);
/* Open a VM for reading only. */
int cli_open_readonly(const char *dir, qsnap_vm **ret_vm);

/* Progress on stderr: a bar on a terminal, a plain line about every second
 * elsewhere, nothing when quiet. userdata: a struct cli_progress. */
struct cli_progress {
	bool quiet;
	bool tty;
	double last_print;
	char phase[32]; /* a command with several phases starts over at each */
};
void cli_progress_init(struct cli_progress *p, bool quiet);
void cli_progress(const qsnap_progress *p, void *userdata);

/* Background saves (background.c). */
struct json_object;
struct bg_progress {
	qsnap_vm *vm;
	const char *name;
	double last;
};
void bg_progress_begin(struct bg_progress *bp);
void bg_progress_write(const qsnap_progress *p, void *userdata);
void bg_progress_end(struct bg_progress *bp, const qsnap_error *err);
/* The running background save's progress, or the last one's result
 * ("running": true/false), or NULL. */
struct json_object *bg_status(qsnap_vm *vm);

/* Monotonic seconds, for "did X in N s". */
double cli_clock(void);

/* "1.5 GiB" */
void cli_format_size(char *buf, size_t len, uint64_t bytes);

#endif
