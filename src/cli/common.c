/* SPDX-License-Identifier: MIT */
/* Error reporting, option parsing and progress display for every command. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_fail(const qsnap_error *err)
{
	fprintf(stderr, "qsnap: %s\n", err->msg[0] ? err->msg : "failed");
	return EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "qsnap %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see qsnap %s --help)\n", cmd);
	return EXIT_USAGE;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts)
{
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (c == '?') {
		/* A known long option without its value sets optopt to the
		 * option's code (often >= 256, not a character); an unknown
		 * long option leaves it 0. */
		const char *arg = argv[optind - 1];
		const char *eq = strchr(arg, '=');

		if (!strncmp(arg, "--", 2) && optopt && eq)
			cli_usage_error(cmd, "option '%.*s' takes no value", (int)(eq - arg), arg);
		else if (!strncmp(arg, "--", 2) && optopt)
			cli_usage_error(cmd, "option '%s' needs a value", arg);
		else if (!strncmp(arg, "--", 2) || !optopt)
			cli_usage_error(cmd, "unknown option '%s'", arg);
		else
			cli_usage_error(cmd, "unknown option '-%c' or missing value", optopt);
	} else if (c == ':') {
		cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
		c = '?';
	}
	return c;
}

long cli_number(const char *cmd, const char *opt, const char *value)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	/* Callers keep the value in an int. */
	if (!*value || *end || v < 0 || errno || v > INT_MAX) {
		cli_usage_error(cmd, "%s needs a whole number, not '%s'", opt, value);
		return -1;
	}
	return v;
}

int cli_open(const char *dir, int lock_timeout, qsnap_vm **ret_vm)
{
	qsnap_error err = {0};
	int r = qsnap_vm_open(dir, 0, 0, ret_vm, &err);

	if (r == -EBUSY && lock_timeout > 0) {
		/* Say why nothing happens: e.g. a background save runs. */
		fprintf(stderr, "qsnap: %s is busy with another qsnap command; waiting up to %d s\n",
			dir, lock_timeout);
		r = qsnap_vm_open(dir, 0, lock_timeout, ret_vm, &err);
	}
	if (r < 0)
		return cli_fail(&err);
	return EXIT_OK;
}

int cli_open_readonly(const char *dir, qsnap_vm **ret_vm)
{
	qsnap_error err = {0};

	if (qsnap_vm_open(dir, QSNAP_OPEN_READONLY, 0, ret_vm, &err) < 0)
		return cli_fail(&err);
	return EXIT_OK;
}

double cli_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_format_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	size_t u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

void cli_progress_init(struct cli_progress *p, bool quiet)
{
	p->quiet = quiet;
	p->tty = isatty(STDERR_FILENO);
	p->last_print = -1;
	p->phase[0] = '\0';
}

void cli_progress(const qsnap_progress *p, void *userdata)
{
	struct cli_progress *cp = userdata;
	char done[32], total[32], rate[32];
	double r = p->elapsed > 0 ? (double)p->done / p->elapsed : 0;

	if (strncmp(cp->phase, p->phase, sizeof(cp->phase) - 1)) {
		snprintf(cp->phase, sizeof(cp->phase), "%s", p->phase);
		cp->last_print = -1;
	}
	if (cp->quiet || (p->finished && cp->last_print < 0))
		return; /* short work shows no progress at all */
	if (!p->finished && p->elapsed - cp->last_print < (cp->tty ? 0.1 : 1.0))
		return;
	if (!p->finished && p->elapsed < 0.5)
		return;
	cp->last_print = p->elapsed;
	cli_format_size(done, sizeof(done), p->done);
	cli_format_size(total, sizeof(total), p->total);
	cli_format_size(rate, sizeof(rate), (uint64_t)r);
	if (cp->tty) {
		int width = 30, fill = 0;

		if (p->total)
			fill = (int)((double)width * (double)p->done / (double)p->total);
		if (fill > width)
			fill = width;
		fprintf(stderr, "\r%-8s [%.*s%*s] %s / %s  %s/s  %.1fs\033[K", p->phase, fill,
			"##############################", width - fill, "", done,
			p->total ? total : "?", rate, p->elapsed);
		if (p->finished)
			fputc('\n', stderr);
	} else {
		fprintf(stderr, "%s: %s / %s, %s/s, %.1fs%s\n", p->phase, done,
			p->total ? total : "?", rate, p->elapsed, p->finished ? " (done)" : "");
	}
	fflush(stderr);
}
