/* SPDX-License-Identifier: MIT */
/* qsnap config: change how a stopped VM keeps its RAM, and how saves
 * write it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static int ram_mode = -1, max_chain = -1, save_path = -1, direct_io = -1, precopy = -1;
static const char *ram_dir, *channels, *qemu;
static bool have_log_max;
static uint64_t log_max;

static int set_log_max(struct cli *c, const char *size)
{
	qsnap_error err;

	if (qsnap_parse_size(size, &log_max, &err) < 0)
		return cli_usage(c, "--serial-log-max: %s", err.msg);
	have_log_max = true;
	return 0;
}

const struct cli_choice cli_ram_modes[] = {
	{"stream", QSNAP_RAM_STREAM},
	{"shared", QSNAP_RAM_SHARED},
	{0},
};

static const struct cli_choice save_paths[] = {
	{"auto", 0},
	{"stream", 1},
	{"mapped-ram", 2},
	{"ram-file", 3},
	{0},
};

static const struct cli_choice settings[] = {
	{"auto", 0},
	{"on", 1},
	{"off", 2},
	{0},
};

static const struct cli_opt opts[] = {
	{"ram-mode", 0, CLI_CHOICE, "MODE", "stream or shared (see qsnap init --help)", .target = &ram_mode,
	 .choices = cli_ram_modes},
	{"ram-dir", 0, CLI_STRING, "DIR", "shared mode: where the RAM file lives", .target = &ram_dir},
	{"qemu", 0, CLI_STRING, "PATH",
	 "the QEMU binary, from the next start (stopped VMs;\n"
	 "snapshots of an older QEMU restore on a newer one)", .target = &qemu},
	{"max-chain", 0, CLI_NUMBER, "N",
	 "saves compact a live layer chain longer than N (base image\n"
	 "included; 0: the default, " CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN) "); this one works while it runs",
	 .target = &max_chain},
	{"serial-log-max", 0, CLI_CALL, "SIZE",
	 "run/serial.log becomes serial.log.1 at this size (0: the\n"
	 "default, 64M; at least 64K); from the next start",
	 .call = set_log_max},
	{"save-path", 0, CLI_CHOICE, "PATH",
	 "how a plain save (stream mode, not --live or --compress)\n"
	 "writes RAM: stream (one sequential stream), mapped-ram\n"
	 "(pages at fixed offsets, in parallel channels; QEMU >= 9.0),\n"
	 "ram-file (the stream through qsnap, RAM into a file of its\n"
	 "own that a restore maps) or auto (the default: mapped-ram\n"
	 "where QEMU has it, else stream); these four work while it\n"
	 "runs, from the next save",
	 .target = &save_path, .choices = save_paths},
	{"multifd-channels", 0, CLI_STRING, "N",
	 "mapped-ram's channels, 1-" CLI_XSTR(QSNAP_MAX_MULTIFD_CHANNELS) " (auto: the default)", .target = &channels},
	{"direct-io", 0, CLI_CHOICE, "on|off",
	 "mapped-ram saves write with O_DIRECT (auto: off)", .target = &direct_io, .choices = settings},
	{"precopy", 0, CLI_CHOICE, "on|off",
	 "a running guest's RAM is written while it runs, and it is\n"
	 "paused only for the rest (auto: on where QEMU sees every\n"
	 "guest write: under KVM, or QEMU >= 9.0, and after a lazy\n"
	 "restore, where qsnap rereads what the guest wrote; on: also\n"
	 "where not)",
	 .target = &precopy,
	 .choices = settings},
	{0},
};

/* The definition's mode, RAM directory, chain limit, serial.log size and
 * save settings, as set (NULL: the default). */
struct settings {
	char *mode, *dir, *chain, *logmax, *save_path, *channels, *direct_io, *precopy, *qemu;
};

static int get(struct cli *c, struct settings *g)
{
	const qsnap_def *def = qsnap_vm_def(c->vm);

	if (qsnap_def_get(def, "ram-mode", &g->mode, &c->err) < 0 ||
	    qsnap_def_get(def, "ram-dir", &g->dir, &c->err) < 0 ||
	    qsnap_def_get(def, "max-chain", &g->chain, &c->err) < 0 ||
	    qsnap_def_get(def, "serial-log-max", &g->logmax, &c->err) < 0 ||
	    qsnap_def_get(def, "save-path", &g->save_path, &c->err) < 0 ||
	    qsnap_def_get(def, "multifd-channels", &g->channels, &c->err) < 0 ||
	    qsnap_def_get(def, "direct-io", &g->direct_io, &c->err) < 0 ||
	    qsnap_def_get(def, "precopy", &g->precopy, &c->err) < 0 ||
	    qsnap_def_get(def, "qemu", &g->qemu, &c->err) < 0)
		return CLI_FAILED;
	return 0;
}

static void settings_free(struct settings *g)
{
	qsnap_free(g->mode);
	qsnap_free(g->dir);
	qsnap_free(g->chain);
	qsnap_free(g->logmax);
	qsnap_free(g->save_path);
	qsnap_free(g->channels);
	qsnap_free(g->direct_io);
	qsnap_free(g->precopy);
	qsnap_free(g->qemu);
	*g = (struct settings){0};
}

/* The save settings given on the command line, each in turn. */
static int set_save(struct cli *c)
{
	const struct {
		const char *key;
		const char *value;
	} set[] = {
		{"save-path", save_path >= 0 ? save_paths[save_path].word : NULL},
		{"multifd-channels", channels},
		{"direct-io", direct_io >= 0 ? settings[direct_io].word : NULL},
		{"precopy", precopy >= 0 ? settings[precopy].word : NULL},
	};

	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		if (set[i].value && qsnap_vm_set_save_setting(c->vm, set[i].key, set[i].value, &c->err) < 0)
			return CLI_FAILED;
	return 0;
}

static void print_json(const struct settings *g)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ram_mode", json_object_new_string(g->mode));
	json_object_object_add(o, "ram_dir", g->dir ? json_object_new_string(g->dir) : NULL);
	json_object_object_add(o, "max_chain",
			       json_object_new_int64(g->chain ? strtoll(g->chain, NULL, 10) : QSNAP_DEFAULT_MAX_CHAIN));
	json_object_object_add(o, "serial_log_max",
			       json_object_new_int64(g->logmax ? strtoll(g->logmax, NULL, 10)
							       : (int64_t)QSNAP_DEFAULT_SERIAL_LOG_MAX));
	json_object_object_add(o, "save_path", json_object_new_string(g->save_path ? g->save_path : "auto"));
	json_object_object_add(o, "multifd_channels",
			       g->channels ? json_object_new_int64(strtoll(g->channels, NULL, 10))
					   : json_object_new_string("auto"));
	json_object_object_add(o, "direct_io", json_object_new_string(g->direct_io ? g->direct_io : "auto"));
	json_object_object_add(o, "precopy", json_object_new_string(g->precopy ? g->precopy : "auto"));
	json_object_object_add(o, "qemu", json_object_new_string(g->qemu ? g->qemu : "qemu-system-x86_64"));
	cli_print_json(o);
}

static int run(struct cli *c)
{
	struct settings g = {0};
	char logmax[32];
	int r = get(c, &g);

	if (!r && (ram_mode >= 0 || ram_dir)) {
		qsnap_ram_mode m = (qsnap_ram_mode)ram_mode;

		if (ram_mode < 0 && qsnap_ram_mode_parse(g.mode, &m) < 0)
			r = cli_fail(c, "the definition's RAM mode '%s' is unknown", g.mode);
		else if (qsnap_vm_set_ram(c->vm, m, ram_dir ? ram_dir : g.dir, &c->err) < 0)
			r = CLI_FAILED;
	}
	if (!r && qemu && qsnap_vm_set_qemu(c->vm, *qemu ? qemu : NULL, &c->err) < 0)
		r = CLI_FAILED;
	if (!r && max_chain >= 0 && qsnap_vm_set_max_chain(c->vm, (unsigned)max_chain, &c->err) < 0)
		r = CLI_FAILED;
	if (!r && have_log_max && qsnap_vm_set_serial_log_max(c->vm, log_max, &c->err) < 0)
		r = CLI_FAILED;
	if (!r)
		r = set_save(c);
	settings_free(&g);
	if (r || (r = get(c, &g)))
		return r;
	if (c->json) {
		print_json(&g);
		settings_free(&g);
		return 0;
	}
	cli_format_size(logmax, sizeof(logmax),
			g.logmax ? strtoull(g.logmax, NULL, 10) : QSNAP_DEFAULT_SERIAL_LOG_MAX);
	printf("ram-mode:  %s\nram-dir:   %s\nmax-chain: %s\nserial-log-max: %s\n", g.mode,
	       g.dir ? g.dir : "(default, under /dev/shm)",
	       g.chain ? g.chain : CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN), logmax);
	printf("save-path: %s\nmultifd-channels: %s\ndirect-io: %s\nprecopy:   %s\n",
	       g.save_path ? g.save_path : "auto", g.channels ? g.channels : "auto",
	       g.direct_io ? g.direct_io : "auto", g.precopy ? g.precopy : "auto");
	printf("qemu:      %s\n", g.qemu ? g.qemu : "qemu-system-x86_64 (from PATH)");
	settings_free(&g);
	return 0;
}

const struct cli_cmd cli_cmd_config = {
	.name = "config",
	.summary = "change how a VM keeps its RAM and how saves write it",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Change settings of a VM; without options, show them. The RAM mode and\n"
		 "directory change only while the VM is stopped; snapshots taken in either\n"
		 "RAM mode stay restorable. The save settings apply to plain saves (stream\n"
		 "mode, not --live, not --compress); QSNAP_NO_PRECOPY=1,\n"
		 "QSNAP_MULTIFD_CHANNELS=N and QSNAP_DIRECT_IO=save,restore override them\n"
		 "for one command.\n",
	.json_help = "the settings as JSON (defaults as \"auto\")",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT | CLI_JSON,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
