/* SPDX-License-Identifier: MIT */
/* qsnap start: start the VM's QEMU. */
#include <stdio.h>

#include "cli.h"

static bool paused, lazy;
static const char *from, *dump;

static const struct cli_opt opts[] = {
	{"paused", 0, CLI_FLAG, NULL, "leave the vCPUs stopped (continue with qsnap qmp VMDIR cont)",
	 .target = &paused},
	{"from", 0, CLI_STRING, "SNAPSHOT", "start from a snapshot, as restore does", .target = &from},
	{"lazy", 0, CLI_FLAG, NULL, "with --from: map a shared-RAM snapshot's RAM copy-on-write",
	 .target = &lazy},
	{"from-dump", 0, CLI_STRING, "FILE",
	 "load a memory dump (qsnap dump-memory) paused, with\n"
	 "read-only disks, for inspection with qsnap qmp", .target = &dump},
	{0},
};

static int check(struct cli *c)
{
	if (lazy && !from)
		return cli_usage(c, "--lazy goes with --from SNAPSHOT");
	if (dump && from)
		return cli_usage(c, "--from and --from-dump exclude each other");
	return 0;
}

static int run(struct cli *c)
{
	qsnap_start_opts so = {.size = sizeof(so), .paused = paused, .from = from, .lazy = lazy, .timeout = c->timeout,
			       .progress = cli_progress, .userdata = &c->progress};

	if (dump) {
		if (qsnap_vm_start_from_dump(c->vm, dump, c->timeout, &c->err) < 0)
			return CLI_FAILED;
		if (!c->quiet)
			printf("loaded %s into %s, paused, disks read-only: inspect it with qsnap qmp\n",
			       dump, c->argv[0]);
		return 0;
	}
	if (qsnap_vm_start(c->vm, &so, &c->err) < 0)
		return CLI_FAILED;
	cli_vm_notice(c);
	if (!c->quiet)
		printf("started %s%s%s%s\n", c->argv[0], from ? " from " : "", from ? from : "",
		       paused ? " (paused)" : "");
	return 0;
}

const struct cli_cmd cli_cmd_start = {
	.cancel = true,
	.name = "start",
	.summary = "start the VM's QEMU (or start from a snapshot with --from)",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Start QEMU for a stopped VM. The guest's serial console is on\n"
		 "VMDIR/run/serial.sock and everything it prints goes to VMDIR/run/serial.log.\n",
	.opts = opts,
	.common = CLI_TIMEOUT | CLI_LOCK_TIMEOUT | CLI_QUIET,
	.timeout_help = "how long QEMU may take to come up or load state (default 60/600)",
	.quiet_help = "no progress",
	.vm = CLI_VM_LOCKED,
	.check = check,
	.run = run,
};
