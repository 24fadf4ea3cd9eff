/* SPDX-License-Identifier: MIT */
/* qsnap qmp: one QMP command, passed through. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static int run(struct cli *c)
{
	char *reply = NULL;

	if (qsnap_vm_qmp(c->vm, c->argv[1], c->argc == 3 ? c->argv[2] : NULL, &reply, &c->err) < 0)
		return CLI_FAILED;
	printf("%s\n", reply);
	qsnap_free(reply);
	return 0;
}

const struct cli_cmd cli_cmd_qmp = {
	.name = "qmp",
	.summary = "send one QMP command to the running QEMU",
	.args = "VMDIR COMMAND [JSON-ARGUMENTS]",
	.min_args = 2,
	.max_args = 3,
	.about = "Send one QMP command to the VM's QEMU and print its reply (the \"return\"\n"
		 "value) as JSON. Options go before VMDIR. Example:\n"
		 "  qsnap qmp vm query-status\n"
		 "  qsnap qmp vm human-monitor-command '{\"command-line\": \"info registers\"}'\n",
	.common = CLI_LOCK_TIMEOUT,
	.options_first = true,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
