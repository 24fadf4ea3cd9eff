/* SPDX-License-Identifier: MIT */
/* qsnap restore: bring the VM back to a snapshot. */
#include <stdio.h>

#include "cli.h"

static bool lazy;

static const struct cli_opt opts[] = {
	{"lazy", 0, CLI_FLAG, NULL,
	 "shared-RAM snapshots: map the snapshot's RAM copy-on-write\n"
	 "instead of copying it (restore time does not grow with RAM;\n"
	 "the next save then carries RAM in the migration stream)", .target = &lazy},
	{0},
};

static int run(struct cli *c)
{
	qsnap_restore_opts ro = {.size = sizeof(ro), .timeout = c->timeout, .lazy = lazy, .progress = cli_progress,
				 .userdata = &c->progress};

	if (qsnap_vm_restore(c->vm, c->argv[1], &ro, &c->err) < 0)
		return CLI_FAILED;
	cli_vm_notice(c);
	if (!c->quiet)
		printf("restored %s in %.2f s\n", c->argv[1], cli_clock() - c->started);
	return 0;
}

const struct cli_cmd cli_cmd_restore = {
	.cancel = true,
	.name = "restore",
	.summary = "bring the VM back to a snapshot",
	.args = "VMDIR NAME",
	.min_args = 2,
	.max_args = 2,
	.about = "Bring the VM back to snapshot NAME, whether or not it runs now: the running\n"
		 "QEMU (if any) ends, and a new one starts with the snapshot's disks, RAM and\n"
		 "device state. What the VM did since is discarded; other snapshots are kept.\n",
	.opts = opts,
	.common = CLI_TIMEOUT | CLI_LOCK_TIMEOUT | CLI_QUIET,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
