/* SPDX-License-Identifier: MIT */
/* The frame of the qsnap command line (main.c, frame.c): one table of
 * commands, each described by a struct cli_cmd in its own file, which uses
 * only the public API. The frame parses every command's options (its own
 * table and the common ones), checks the number of arguments, opens the VM,
 * prints help generated from the same tables, and prints every error. */
#ifndef QSNAP_CLI_H
#define QSNAP_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "qsnap.h"

/* Exit codes. */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_LOCK_TIMEOUT 600

#define CLI_STR(x) #x
#define CLI_XSTR(x) CLI_STR(x)

/* What a command's check and run return besides 0: the frame prints
 * c->err.msg as one line and exits 1 (CLI_FAILED: "qsnap: MESSAGE") or 2
 * (CLI_USAGE: "qsnap CMD: MESSAGE (see qsnap CMD --help)"). */
enum { CLI_FAILED = -1, CLI_USAGE = -2, CLI_FAILED_QUIETLY = -3 /* exit 1, print nothing:
								    the output said it */ };

struct cli;

struct cli_choice {
	const char *word;
	int value;
};

enum cli_opt_kind {
	CLI_FLAG,   /* bool *target = true */
	CLI_STRING, /* const char **target = the value */
	CLI_NUMBER, /* int *target: a whole number from min to max (max 0: no limit);
		       with optional_value, --NAME alone sets dflt */
	CLI_CHOICE, /* int *target = the value of the word given */
	CLI_CALL,   /* call(c, value) returns 0 or CLI_USAGE */
};

struct cli_opt {
	const char *name; /* the long option, without "--" */
	char short_name;  /* or 0 */
	enum cli_opt_kind kind;
	const char *arg;  /* the value's name in help ("SECONDS"); NULL: a flag */
	const char *help; /* lines after the first start with '\n' */
	void *target;
	long min, max;
	bool optional_value; /* --NAME[=ARG] */
	int dflt;
	bool repeat;		       /* may be given several times (help shows "...") */
	const struct cli_choice *choices; /* CLI_CHOICE: ends with {0} */
	int (*call)(struct cli *c, const char *value);
};

/* Options every command may take (struct cli_cmd.common). */
enum {
	CLI_LOCK_TIMEOUT = 1 << 0, /* --lock-timeout S: c->lock_timeout */
	CLI_TIMEOUT = 1 << 1,	   /* --timeout SECONDS: c->timeout */
	CLI_QUIET = 1 << 2,	   /* -q, --quiet: c->quiet */
	CLI_JSON = 1 << 3,	   /* --json: c->json */
};

/* How the frame opens VMDIR (the first argument) before run. */
enum cli_vm { CLI_VM_NONE, CLI_VM_LOCKED, CLI_VM_READONLY };

struct cli_cmd {
	const char *name;
	const char *summary; /* one line in qsnap --help */
	const char *args;    /* the arguments in the usage line: "VMDIR NAME" */
	int min_args, max_args; /* max_args -1: no limit */
	const char *usage_tail; /* after the options in the usage line, or NULL */
	const char *about;	/* the help text between the usage line and the options */
	const struct cli_opt *opts; /* its own options, ending with {0}; may be NULL */
	unsigned common;	    /* CLI_LOCK_TIMEOUT | ... */
	/* The help lines of the common options where this command's differ. */
	const char *timeout_help, *quiet_help, *json_help;
	bool options_first; /* options only before the first argument (qmp) */
	/* SIGINT and SIGTERM cancel the call (qsnap_vm_cancel): Ctrl-C undoes
	 * it; a second signal ends qsnap at once. */
	bool cancel;
	enum cli_vm vm;
	/* Checks of the arguments before the VM is opened (may be NULL). */
	int (*check)(struct cli *c);
	int (*run)(struct cli *c);
};

/* The VM of cancellable commands stops taking signals (before a call
 * that takes the handle: qsnap_vm_save_background). */
void cli_cancel_off(void);

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

/* One command's run. */
struct cli {
	const struct cli_cmd *cmd;
	int argc; /* the arguments after the options */
	char **argv;
	int lock_timeout; /* DEFAULT_LOCK_TIMEOUT unless --lock-timeout */
	int timeout;	  /* 0 (the library's default) unless --timeout */
	bool quiet, json;
	qsnap_vm *vm; /* VMDIR, opened as cmd->vm says; closed by the frame */
	double started; /* cli_clock() just before run */
	struct cli_progress progress; /* quiet as c->quiet */
	qsnap_error err; /* the message the frame prints for CLI_FAILED/CLI_USAGE */
};

/* Format a usage error into c->err; returns CLI_USAGE. */
int cli_usage(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Format a failure into c->err; returns CLI_FAILED. */
int cli_fail(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print what the library wants the user to know about the call that just
 * succeeded (qsnap_vm_notice), on stderr, one line. */
void cli_vm_notice(struct cli *c);

/* Run command cmd with its argv (argv[0] is the command's name); returns
 * the exit code. */
int cli_run(const struct cli_cmd *cmd, int argc, char **argv);
/* Print cmd's help (generated from its tables) on stdout. */
void cli_help(const struct cli_cmd *cmd);
/* The options cmd takes (at most CLI_MAX_OPTS), as help lists them: its
 * own, then the common ones (frame.c). */
#define CLI_MAX_OPTS 32
size_t cli_cmd_opts(const struct cli_cmd *cmd, struct cli_opt *out);
/* "--name ARG", "-q, --quiet" (with_short), "--compress[=LEVEL]". */
void cli_opt_form(const struct cli_opt *o, bool with_short, char *buf, size_t len);

/* The command table (main.c), in the order --help lists it. */
extern const struct cli_cmd *const cli_commands[];
extern const size_t cli_n_commands;

/* qsnap --man: the qsnap(1) man page in roff, from the tables (manpage.c). */
void cli_print_man(void);
/* qsnap __complete CWORD WORD...: what bash may complete the word at CWORD
 * to, one per line (complete.c); "@files" or "@dirs" for a path. qsnap
 * --bash-completion prints the script that asks it. */
int cli_complete(int argc, char **argv);
void cli_print_bash_completion(void);

/* The commands, one file each; main.c lists them. */
extern const struct cli_cmd cli_cmd_init, cli_cmd_start, cli_cmd_stop, cli_cmd_status,
	cli_cmd_save, cli_cmd_restore, cli_cmd_list, cli_cmd_delete, cli_cmd_dump_memory,
	cli_cmd_compact, cli_cmd_config, cli_cmd_publish, cli_cmd_verify, cli_cmd_export,
	cli_cmd_import, cli_cmd_qmp, cli_cmd_console, cli_cmd_push, cli_cmd_pull;

/* stream, shared: --ram-mode's words (config.c). */
extern const struct cli_choice cli_ram_modes[];

/* A library's notice (qsnap_notice_fn): one line on stderr, "qsnap: LINE". */
void cli_notice(const char *line, void *userdata);

/* Monotonic seconds, for "did X in N s". */
double cli_clock(void);

/* "1.5 GiB" */
void cli_format_size(char *buf, size_t len, uint64_t bytes);
/* The size of file path as "1.5 GiB" (allocated: what it takes on disk),
 * "?" when it cannot be read. */
void cli_file_size(char *buf, size_t len, const char *path, bool allocated);
/* Pretty JSON on stdout; takes o. */
struct json_object;
void cli_print_json(struct json_object *o);

#endif
