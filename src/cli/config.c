/* SPDX-License-Identifier: MIT */
/* qsnap config: change how a stopped VM keeps its RAM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int ram_mode = -1, max_chain = -1;
static const char *ram_dir;
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

static const struct cli_opt opts[] = {
	{"ram-mode", 0, CLI_CHOICE, "MODE", "stream or shared (see qsnap init --help)", .target = &ram_mode,
	 .choices = cli_ram_modes},
	{"ram-dir", 0, CLI_STRING, "DIR", "shared mode: where the RAM file lives", .target = &ram_dir},
	{"max-chain", 0, CLI_NUMBER, "N",
	 "saves compact a live layer chain longer than N (base image\n"
	 "included; 0: the default, " CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN) "); this one works while it runs",
	 .target = &max_chain},
	{"serial-log-max", 0, CLI_CALL, "SIZE",
	 "run/serial.log becomes serial.log.1 at this size (0: the\n"
	 "default, 64M; at least 64K); from the next start",
	 .call = set_log_max},
	{0},
};

/* The definition's mode, RAM directory, chain limit and serial.log size, as
 * set. */
struct settings {
	char *mode, *dir, *chain, *logmax;
};

static int get(struct cli *c, struct settings *g)
{
	const qsnap_def *def = qsnap_vm_def(c->vm);

	if (qsnap_def_get(def, "ram-mode", &g->mode, &c->err) < 0 ||
	    qsnap_def_get(def, "ram-dir", &g->dir, &c->err) < 0 ||
	    qsnap_def_get(def, "max-chain", &g->chain, &c->err) < 0 ||
	    qsnap_def_get(def, "serial-log-max", &g->logmax, &c->err) < 0)
		return CLI_FAILED;
	return 0;
}

static void settings_free(struct settings *g)
{
	qsnap_free(g->mode);
	qsnap_free(g->dir);
	qsnap_free(g->chain);
	qsnap_free(g->logmax);
	*g = (struct settings){0};
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
	if (!r && max_chain >= 0 && qsnap_vm_set_max_chain(c->vm, (unsigned)max_chain, &c->err) < 0)
		r = CLI_FAILED;
	if (!r && have_log_max && qsnap_vm_set_serial_log_max(c->vm, log_max, &c->err) < 0)
		r = CLI_FAILED;
	settings_free(&g);
	if (r || (r = get(c, &g)))
		return r;
	cli_format_size(logmax, sizeof(logmax),
			g.logmax ? strtoull(g.logmax, NULL, 10) : QSNAP_DEFAULT_SERIAL_LOG_MAX);
	printf("ram-mode:  %s\nram-dir:   %s\nmax-chain: %s\nserial-log-max: %s\n", g.mode,
	       g.dir ? g.dir : "(default, under /dev/shm)",
	       g.chain ? g.chain : CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN), logmax);
	settings_free(&g);
	return 0;
}

const struct cli_cmd cli_cmd_config = {
	.name = "config",
	.summary = "change how a stopped VM keeps its RAM",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Change settings of a stopped VM; without options, show them. Snapshots\n"
		 "taken in either RAM mode stay restorable.\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
