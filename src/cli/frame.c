/* SPDX-License-Identifier: MIT */
/* The frame every command runs in: options parsed from the command's table
 * and the common ones, the arguments counted, VMDIR opened, help generated
 * from the same tables, and every error printed here. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_OPTS CLI_MAX_OPTS

/* The common options; their targets are fields of struct cli. */
static const struct cli_opt common_opts[] = {
	{"timeout", 0, CLI_NUMBER, "SECONDS", "give up after this long (default 600)", .target = NULL},
	{"lock-timeout", 0, CLI_NUMBER, "S",
	 "how long to wait for another qsnap command on VMDIR (default " CLI_XSTR(DEFAULT_LOCK_TIMEOUT) ")",
	 .target = NULL},
	{"quiet", 'q', CLI_FLAG, NULL, "no progress and no summary", .target = NULL},
	{"json", 0, CLI_FLAG, NULL, "the output as JSON", .target = NULL},
};
static const unsigned common_bits[] = {CLI_TIMEOUT, CLI_LOCK_TIMEOUT, CLI_QUIET, CLI_JSON};

/* The options cmd takes, in the order help lists them: its own, then the
 * common ones. The common ones' targets and help lines are filled in. */
static size_t cmd_opts(const struct cli_cmd *cmd, struct cli *c, struct cli_opt *out)
{
	size_t n = 0;

	for (const struct cli_opt *o = cmd->opts; o && o->name && n < MAX_OPTS; o++)
		out[n++] = *o;
	for (size_t i = 0; i < sizeof(common_opts) / sizeof(common_opts[0]); i++) {
		struct cli_opt o = common_opts[i];

		if (!(cmd->common & common_bits[i]) || n >= MAX_OPTS)
			continue;
		switch (common_bits[i]) {
		case CLI_TIMEOUT:
			o.target = c ? &c->timeout : NULL;
			o.help = cmd->timeout_help ? cmd->timeout_help : o.help;
			break;
		case CLI_LOCK_TIMEOUT:
			o.target = c ? &c->lock_timeout : NULL;
			break;
		case CLI_QUIET:
			o.target = c ? &c->quiet : NULL;
			o.help = cmd->quiet_help ? cmd->quiet_help : o.help;
			break;
		case CLI_JSON:
			o.target = c ? &c->json : NULL;
			o.help = cmd->json_help ? cmd->json_help : o.help;
			break;
		}
		out[n++] = o;
	}
	return n;
}

int cli_usage(struct cli *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
	va_end(ap);
	return CLI_USAGE;
}

int cli_fail(struct cli *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
	va_end(ap);
	return CLI_FAILED;
}

void cli_vm_notice(struct cli *c)
{
	const char *n = c->vm ? qsnap_vm_notice(c->vm) : NULL;

	if (n)
		fprintf(stderr, "qsnap: note: %s\n", n);
}

size_t cli_cmd_opts(const struct cli_cmd *cmd, struct cli_opt *out)
{
	return cmd_opts(cmd, NULL, out);
}

/* ---- Help ---- */

/* "--name ARG", "-q, --quiet", "--compress[=LEVEL]" */
void cli_opt_form(const struct cli_opt *o, bool with_short, char *buf, size_t len)
{
	size_t k = 0;

	if (with_short && o->short_name)
		k = (size_t)snprintf(buf, len, "-%c, ", o->short_name);
	snprintf(buf + k, len - k, "--%s%s%s%s", o->name,
		 o->arg ? (o->optional_value ? "[=" : " ") : "", o->arg ? o->arg : "",
		 o->arg && o->optional_value ? "]" : "");
}

/* The usage line, wrapped below 80 columns under the first argument. */
struct line {
	int indent, col;
};

static void put(struct line *l, const char *word)
{
	if (l->col + 1 + (int)strlen(word) > 79 && l->col > l->indent)
		l->col = printf("\n%*s%s", l->indent, "", word) - 1;
	else
		l->col += printf(" %s", word);
}

static void print_usage_line(const struct cli_cmd *cmd, const struct cli_opt *opts, size_t n)
{
	struct line l;
	char form[160], word[200];

	l.col = printf("Usage: qsnap %s", cmd->name);
	l.indent = l.col + 1;
	/* Options that must come first (options_first) stand before the
	 * arguments, the others after them. */
	if (!cmd->options_first)
		put(&l, cmd->args);
	for (size_t i = 0; i < n; i++) {
		cli_opt_form(&opts[i], false, form, sizeof(form));
		snprintf(word, sizeof(word), "[%s]%s", form, opts[i].repeat ? "..." : "");
		put(&l, word);
	}
	if (cmd->options_first)
		put(&l, cmd->args);
	if (cmd->usage_tail)
		put(&l, cmd->usage_tail);
	printf("\n");
}

void cli_help(const struct cli_cmd *cmd)
{
	struct cli_opt opts[MAX_OPTS];
	size_t n = cmd_opts(cmd, NULL, opts);

	print_usage_line(cmd, opts, n);
	printf("\n%s", cmd->about);
	if (n)
		printf("\n");
	for (size_t i = 0; i < n; i++) {
		char form[160];
		const char *h = opts[i].help;

		cli_opt_form(&opts[i], true, form, sizeof(form));
		if (strlen(form) > 18)
			printf("  %s\n%21s", form, "");
		else
			printf("  %-18s ", form);
		for (const char *nl; (nl = strchr(h, '\n')); h = nl + 1)
			printf("%.*s\n%21s", (int)(nl - h), h, "");
		printf("%s\n", h);
	}
}

/* ---- Parsing ---- */

/* A whole number in 0..INT_MAX (the value is kept in an int). */
static int parse_number(struct cli *c, const struct cli_opt *o, const char *value, int *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (!*value || *end || v < 0 || errno || v > INT_MAX)
		return cli_usage(c, "--%s needs a whole number, not '%s'", o->name, value);
	if (o->max && (v < o->min || v > o->max))
		return cli_usage(c, "--%s takes a number from %ld to %ld", o->name, o->min, o->max);
	if (v < o->min)
		return cli_usage(c, "--%s must be at least %ld", o->name, o->min);
	*ret = (int)v;
	return 0;
}

static int set_option(struct cli *c, const struct cli_opt *o, const char *value)
{
	switch (o->kind) {
	case CLI_FLAG:
		*(bool *)o->target = true;
		return 0;
	case CLI_STRING:
		*(const char **)o->target = value;
		return 0;
	case CLI_NUMBER:
		if (!value) {
			*(int *)o->target = o->dflt;
			return 0;
		}
		return parse_number(c, o, value, o->target);
	case CLI_CHOICE: {
		char words[256] = "";

		for (const struct cli_choice *ch = o->choices; ch->word; ch++) {
			if (!strcmp(value, ch->word)) {
				*(int *)o->target = ch->value;
				return 0;
			}
			snprintf(words + strlen(words), sizeof(words) - strlen(words), "%s%s",
				 ch == o->choices ? "" : ch[1].word ? ", " : " or ", ch->word);
		}
		return cli_usage(c, "--%s is %s, not '%s'", o->name, words, value);
	}
	case CLI_CALL:
		return o->call(c, value);
	}
	return 0;
}

/* getopt_long over opts; the error for a bad option in c->err. */
static int parse(struct cli *c, int argc, char **argv, const struct cli_opt *opts, size_t n)
{
	struct option longopts[MAX_OPTS + 2];
	char shortopts[2 * MAX_OPTS + 4] = "";
	size_t ns = 0;
	int r;

	if (c->cmd->options_first)
		shortopts[ns++] = '+';
	shortopts[ns++] = 'h';
	longopts[0] = (struct option){"help", no_argument, NULL, 'h'};
	for (size_t i = 0; i < n; i++) {
		int has = !opts[i].arg ? no_argument
			  : opts[i].optional_value ? optional_argument : required_argument;

		longopts[i + 1] = (struct option){opts[i].name, has, NULL, 256 + (int)i};
		if (opts[i].short_name) {
			shortopts[ns++] = opts[i].short_name;
			if (has == required_argument)
				shortopts[ns++] = ':';
		}
	}
	longopts[n + 1] = (struct option){0};
	shortopts[ns] = '\0';
	opterr = 0;
	optind = 1;
	for (;;) {
		int k = getopt_long(argc, argv, shortopts, longopts, NULL);
		const char *arg = argv[optind - 1];
		const char *eq;

		if (k == -1)
			return 0;
		if (k == 'h') {
			cli_help(c->cmd);
			return 1;
		}
		if (k == '?') {
			/* A known long option without its value sets optopt to the
			 * option's code (often >= 256, not a character); an unknown
			 * long option leaves it 0. */
			eq = strchr(arg, '=');
			if (!strncmp(arg, "--", 2) && optopt && eq)
				return cli_usage(c, "option '%.*s' takes no value", (int)(eq - arg), arg);
			if (!strncmp(arg, "--", 2) && optopt)
				return cli_usage(c, "option '%s' needs a value", arg);
			if (!strncmp(arg, "--", 2) || !optopt)
				return cli_usage(c, "unknown option '%s'", arg);
			return cli_usage(c, "unknown option '-%c' or missing value", optopt);
		}
		for (size_t i = 0; i < n; i++) {
			if (k == 256 + (int)i || (opts[i].short_name && k == opts[i].short_name)) {
				r = set_option(c, &opts[i], optarg);
				if (r)
					return r;
				break;
			}
		}
	}
}

static int open_vm(struct cli *c)
{
	const char *dir = c->argv[0];
	int r;

	if (c->cmd->vm == CLI_VM_READONLY)
		return qsnap_vm_open(dir, QSNAP_OPEN_READONLY, 0, &c->vm, &c->err) < 0 ? CLI_FAILED : 0;
	r = qsnap_vm_open(dir, 0, QSNAP_NO_WAIT, &c->vm, &c->err);
	if (r == -EBUSY && c->lock_timeout > 0) {
		/* Say why nothing happens: e.g. a background save runs. */
		fprintf(stderr, "qsnap: %s is busy with another qsnap command; waiting up to %d s\n",
			dir, c->lock_timeout);
		r = qsnap_vm_open(dir, 0, c->lock_timeout, &c->vm, &c->err);
	}
	return r < 0 ? CLI_FAILED : 0;
}

/* The VM whose call SIGINT and SIGTERM cancel (cli_cmd.cancel). */
static qsnap_vm *volatile cancel_vm;

static void on_signal(int sig)
{
	qsnap_vm *vm = cancel_vm;

	/* One write() to an eventfd: async-signal-safe. */
	if (vm)
		qsnap_vm_cancel(vm);
}

static struct sigaction old_int, old_term;
static bool cancel_set;

/* A signal ignored when qsnap started (a job in the background of a
 * script) stays ignored. */
static void catch(int sig, struct sigaction *old)
{
	/* Reset at the first: a second signal ends qsnap as it always did. */
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND | SA_RESTART};

	sigemptyset(&sa.sa_mask);
	sigaction(sig, NULL, old);
	if (old->sa_handler != SIG_IGN)
		sigaction(sig, &sa, NULL);
}

static void cancel_on(qsnap_vm *vm)
{
	cancel_vm = vm;
	catch(SIGINT, &old_int);
	catch(SIGTERM, &old_term);
	cancel_set = true;
}

void cli_cancel_off(void)
{
	if (!cancel_set)
		return;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	cancel_set = false;
	cancel_vm = NULL;
}

static int run(struct cli *c, int argc, char **argv)
{
	const struct cli_cmd *cmd = c->cmd;
	struct cli_opt opts[MAX_OPTS];
	size_t n = cmd_opts(cmd, c, opts);
	int r = parse(c, argc, argv, opts, n);

	if (r)
		return r > 0 ? 0 : r;
	c->argc = argc - optind;
	c->argv = argv + optind;
	if (c->argc < cmd->min_args || (cmd->max_args >= 0 && c->argc > cmd->max_args)) {
		if (!strcmp(cmd->args, "VMDIR"))
			return cli_usage(c, c->argc ? "too many arguments" : "VMDIR is missing");
		return cli_usage(c, "expected %s", cmd->args);
	}
	cli_progress_init(&c->progress, c->quiet);
	if (cmd->check && (r = cmd->check(c)))
		return r;
	if (cmd->vm != CLI_VM_NONE && (r = open_vm(c)))
		return r;
	c->started = cli_clock();
	if (!cmd->cancel)
		return cmd->run(c);
	cancel_on(c->vm);
	r = cmd->run(c);
	cli_cancel_off();
	return r;
}

int cli_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct cli c = {.cmd = cmd, .lock_timeout = DEFAULT_LOCK_TIMEOUT};
	int r = run(&c, argc, argv);

	qsnap_vm_close(c.vm);
	if (r == CLI_USAGE) {
		fprintf(stderr, "qsnap %s: %s (see qsnap %s --help)\n", cmd->name, c.err.msg, cmd->name);
		return EXIT_USAGE;
	}
	if (r == CLI_FAILED_QUIETLY)
		return EXIT_FAIL;
	if (r < 0) {
		fprintf(stderr, "qsnap: %s\n", c.err.msg[0] ? c.err.msg : "failed");
		return EXIT_FAIL;
	}
	return EXIT_OK;
}
