/* SPDX-License-Identifier: MIT */
/* What several commands print: sizes, JSON, progress. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

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

void cli_file_size(char *buf, size_t len, const char *path, bool allocated)
{
	struct stat st;

	if (stat(path, &st) < 0)
		snprintf(buf, len, "?");
	else
		cli_format_size(buf, len, allocated ? (uint64_t)st.st_blocks * 512 : (uint64_t)st.st_size);
}

void cli_print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
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

void cli_notice(const char *line, void *userdata)
{
	(void)userdata;
	fprintf(stderr, "qsnap: %s\n", line);
}
