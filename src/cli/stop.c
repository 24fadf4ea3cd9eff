/* SPDX-License-Identifier: MIT */
/* qsnap stop: stop the VM's QEMU. */
#include "cli.h"

static int run(struct cli *c)
{
	return qsnap_vm_stop(c->vm, c->timeout, &c->err) < 0 ? CLI_FAILED : 0;
}

const struct cli_cmd cli_cmd_stop = {
	.cancel = true,
	.name = "stop",
	.summary = "stop the VM's QEMU",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Stop QEMU (QMP quit; SIGKILL if it has not ended after the timeout).\n"
		 "The disks keep what the guest wrote; RAM is lost unless saved.\n",
	.common = CLI_TIMEOUT | CLI_LOCK_TIMEOUT,
	.timeout_help = "grace period before SIGKILL (default 10)",
	.vm = CLI_VM_LOCKED,
	.run = run,
};
