/* SPDX-License-Identifier: MIT */
/* qsnap save: save the whole VM as a snapshot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static bool replace, live, no_wait, diff, verbose;
static int compress;

static const struct cli_opt opts[] = {
	{"live", 0, CLI_FLAG, NULL,
	 "pause the guest only for milliseconds: RAM is written while\n"
	 "it runs (QEMU's background-snapshot); the snapshot is the\n"
	 "guest at that pause", .target = &live},
	{"no-wait", 0, CLI_FLAG, NULL,
	 "with --live: return at once; the save goes on in the\n"
	 "background (qsnap status shows its progress, and other\n"
	 "commands on VMDIR wait for it)", .target = &no_wait},
	{"compress", 0, CLI_NUMBER, "LEVEL",
	 "compress the migration stream with zstd (level 1-19,\n"
	 "default 3) in several threads", .target = &compress, .min = 1, .max = 19, .optional_value = true,
	 .dflt = 3},
	{"diff", 0, CLI_FLAG, NULL,
	 "a differential snapshot of a lazily restored VM: only the\n"
	 "pages the guest wrote since its shared-RAM base", .target = &diff},
	{"replace", 0, CLI_FLAG, NULL,
	 "replace an existing snapshot of that name (e.g. a rolling\n\"lastgood\")", .target = &replace},
	{"verbose", 'v', CLI_FLAG, NULL,
	 "also say how QEMU wrote RAM (qsnap config's save settings)\n"
	 "and where the time went, phase by phase", .target = &verbose},
	{0},
};

static int check(struct cli *c)
{
	if (!qsnap_name_valid(c->argv[1]))
		return cli_usage(c, "snapshot name '%s' is not valid: use letters, digits, '-', '_' and '.', not starting with '.'",
				 c->argv[1]);
	if (no_wait && !live)
		return cli_usage(c, "--no-wait goes with --live");
	if (diff && (live || compress))
		return cli_usage(c, "--diff goes with neither --live nor --compress");
	if (no_wait && (c->json || verbose))
		return cli_usage(c, "--no-wait says nothing of the save: qsnap status --json does");
	return 0;
}

/* --no-wait: the library saves in a detached process, which reports
 * through files in run/ that qsnap status reads. */
static int save_in_background(struct cli *c, qsnap_save_opts *so)
{
	char *dir = strdup(qsnap_vm_dir(c->vm)); /* the call takes the vm */
	pid_t pid;
	int r;

	fflush(NULL);
	cli_cancel_off();
	r = qsnap_vm_save_background(&c->vm, c->argv[1], so, &pid, &c->err);
	if (r == 0) {
		printf("saving %s in the background (pid %d); qsnap status %s shows its progress\n",
		       c->argv[1], (int)pid, dir);
	}
	free(dir);
	return r < 0 ? CLI_FAILED : 0;
}

static void print_json(const char *name, const qsnap_save_stats *st)
{
	json_object *o = json_object_new_object(), *phases = json_object_new_array();

	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "total", json_object_new_double(st->total));
	json_object_object_add(o, "paused", json_object_new_double(st->paused));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)st->bytes));
	json_object_object_add(o, "live", json_object_new_boolean(st->live));
	json_object_object_add(o, "ram_mode", json_object_new_string(qsnap_ram_mode_name(st->mode)));
	json_object_object_add(o, "path", json_object_new_string(st->path ? st->path : "stream"));
	json_object_object_add(o, "channels", json_object_new_int((int)st->channels));
	json_object_object_add(o, "direct_io", json_object_new_boolean(st->direct_io));
	json_object_object_add(o, "precopy", json_object_new_boolean(st->precopy));
	json_object_object_add(o, "diff", json_object_new_boolean(st->diff));
	if (st->diff) {
		json_object_object_add(o, "pages_written", json_object_new_int64((int64_t)st->pages_written));
		json_object_object_add(o, "pages_left_out", json_object_new_int64((int64_t)st->pages_left_out));
	}
	for (size_t i = 0; i < st->n_phases; i++) {
		json_object *p = json_object_new_object();

		json_object_object_add(p, "name", json_object_new_string(st->phases[i].name));
		json_object_object_add(p, "start", json_object_new_double(st->phases[i].start));
		json_object_object_add(p, "seconds", json_object_new_double(st->phases[i].seconds));
		json_object_array_add(phases, p);
	}
	json_object_object_add(o, "phases", phases);
	cli_print_json(o);
}

static void print_phases(const qsnap_save_stats *st)
{
	if (st->channels)
		printf("path: %s, %u channel%s%s%s\n", st->path, st->channels,
		       st->channels == 1 ? "" : "s", st->direct_io ? ", direct-io" : "",
		       st->precopy ? ", precopy" : "");
	else
		printf("path: %s%s\n", st->path ? st->path : "stream", st->precopy ? ", precopy" : "");
	printf("%8s %8s  phase\n", "start", "seconds");
	for (size_t i = 0; i < st->n_phases; i++)
		printf("%8.3f %8.3f  %s\n", st->phases[i].start, st->phases[i].seconds,
		       st->phases[i].name);
}

static int run(struct cli *c)
{
	qsnap_save_stats stats = QSNAP_SAVE_STATS_INIT;
	qsnap_save_opts so = {.size = sizeof(so),
			      .replace = replace, .live = live, .compress = compress, .diff = diff,
			      .timeout = c->timeout, .progress = cli_progress,
			      .userdata = &c->progress, .stats = &stats};
	char size[32];

	if (no_wait)
		return save_in_background(c, &so);
	if (qsnap_vm_save(c->vm, c->argv[1], &so, &c->err) < 0)
		return CLI_FAILED;
	if (c->json) {
		print_json(c->argv[1], &stats);
		return 0;
	}
	if (!c->quiet) {
		cli_format_size(size, sizeof(size), stats.bytes);
		printf("saved %s in %.2f s (guest paused %.3f s%s; %s, %s%s)\n", c->argv[1],
		       stats.total, stats.paused, stats.live ? ", live" : "", size,
		       stats.diff ? "differential" : qsnap_ram_mode_name(stats.mode),
		       stats.diff ? "" : " mode");
		if (stats.diff)
			printf("  %llu RAM pages written, %llu left to the base's RAM file\n",
			       (unsigned long long)stats.pages_written,
			       (unsigned long long)stats.pages_left_out);
		if (verbose)
			print_phases(&stats);
	}
	return 0;
}

const struct cli_cmd cli_cmd_save = {
	.cancel = true,
	.name = "save",
	.summary = "save the whole VM as a named snapshot",
	.args = "VMDIR NAME",
	.min_args = 2,
	.max_args = 2,
	.about = "Save every writable disk, RAM, CPU and device state as snapshot NAME. The\n"
		 "guest is paused while its state is written and then runs on as before; a\n"
		 "paused VM stays paused (and restores paused).\n"
		 "NAME: letters, digits, '-', '_', '.'; not starting with '.'.\n",
	.opts = opts,
	.common = CLI_TIMEOUT | CLI_LOCK_TIMEOUT | CLI_QUIET | CLI_JSON,
	.json_help = "the result as JSON: total, paused, path, channels, phases, ...",
	.vm = CLI_VM_LOCKED,
	.check = check,
	.run = run,
};
