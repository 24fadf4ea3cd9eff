/* SPDX-License-Identifier: MIT */
/* qsnap config: change how a stopped VM keeps its RAM. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int ram_mode = -1, max_chain = -1;
static const char *ram_dir;

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
	{0},
};

/* The definition's mode, RAM directory and chain limit, as set. */
static int get(struct cli *c, char **mode, char **dir, char **chain)
{
	const qsnap_def *def = qsnap_vm_def(c->vm);

	if (qsnap_def_get(def, "ram-mode", mode, &c->err) < 0 ||
	    qsnap_def_get(def, "ram-dir", dir, &c->err) < 0 ||
	    qsnap_def_get(def, "max-chain", chain, &c->err) < 0)
		return CLI_FAILED;
	return 0;
}

static int run(struct cli *c)
{
	char *mode = NULL, *dir = NULL, *chain = NULL;
	int r = get(c, &mode, &dir, &chain);

	if (!r && (ram_mode >= 0 || ram_dir)) {
		qsnap_ram_mode m = (qsnap_ram_mode)ram_mode;

		if (ram_mode < 0 && qsnap_ram_mode_parse(mode, &m) < 0)
			r = cli_fail(c, "the definition's RAM mode '%s' is unknown", mode);
		else if (qsnap_vm_set_ram(c->vm, m, ram_dir ? ram_dir : dir, &c->err) < 0)
			r = CLI_FAILED;
	}
	if (!r && max_chain >= 0 && qsnap_vm_set_max_chain(c->vm, (unsigned)max_chain, &c->err) < 0)
		r = CLI_FAILED;
	qsnap_free(mode);
	qsnap_free(dir);
	qsnap_free(chain);
	if (r || (r = get(c, &mode, &dir, &chain)))
		return r;
	printf("ram-mode:  %s\nram-dir:   %s\nmax-chain: %s\n", mode,
	       dir ? dir : "(default, under /dev/shm)", chain ? chain : CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN));
	qsnap_free(mode);
	qsnap_free(dir);
	qsnap_free(chain);
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
