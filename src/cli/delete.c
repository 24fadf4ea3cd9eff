/* SPDX-License-Identifier: MIT */
/* qsnap delete: delete a snapshot. */
#include <stdio.h>

#include "cli.h"

static int run(struct cli *c)
{
	if (qsnap_vm_delete(c->vm, c->argv[1], &c->err) < 0)
		return CLI_FAILED;
	printf("deleted %s\n", c->argv[1]);
	return 0;
}

const struct cli_cmd cli_cmd_delete = {
	.name = "delete",
	.summary = "delete a snapshot",
	.args = "VMDIR NAME",
	.min_args = 2,
	.max_args = 2,
	.about = "Delete snapshot NAME: its machine state, and the layers that no other\n"
		 "snapshot and no live disk needs. Snapshots built on it stay restorable.\n"
		 "The files are gone when it returns; a short-lived process of its own frees\n"
		 "the space of the big ones a moment later.\n",
	.common = CLI_LOCK_TIMEOUT,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
