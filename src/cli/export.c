/* SPDX-License-Identifier: MIT */
/* qsnap export: a snapshot and all it needs as one tar file. */
#include <stdio.h>

#include "cli.h"

static bool compress, replace;

static const struct cli_opt opts[] = {
	{"compress", 'c', CLI_FLAG, NULL, "compressed qcow2 disk images (smaller, slower)", .target = &compress},
	{"replace", 0, CLI_FLAG, NULL, "replace OUTPUT if it exists", .target = &replace},
	{0},
};

static int run(struct cli *c)
{
	qsnap_export_opts eo = {.size = sizeof(eo), .compress = compress, .replace = replace, .progress = cli_progress,
				.userdata = &c->progress};
	char size[32];

	if (qsnap_vm_export(c->vm, c->argv[1], c->argv[2], &eo, &c->err) < 0)
		return CLI_FAILED;
	if (!c->quiet) {
		cli_file_size(size, sizeof(size), c->argv[2], false);
		printf("exported %s to %s (%s) in %.2f s\n", c->argv[1], c->argv[2], size,
		       cli_clock() - c->started);
	}
	return 0;
}

const struct cli_cmd cli_cmd_export = {
	.name = "export",
	.summary = "write a snapshot and all it needs as one tar file",
	.args = "VMDIR NAME OUTPUT.tar",
	.min_args = 3,
	.max_args = 3,
	.about = "Write snapshot NAME as one tar file that another host imports with\n"
		 "'qsnap import' and restores with nothing else: the machine state and\n"
		 "meta.json (with a shared-RAM snapshot its RAM file, with a differential\n"
		 "one its older deltas too; files with holes as sparse entries), every\n"
		 "drive flattened into one standalone image as it was at the snapshot\n"
		 "(base image included), the kernel and initrd, a vm.json that names them,\n"
		 "and a manifest with a checksum of every file. The VM may keep running.\n"
		 "Needs free space beside OUTPUT for the flattened disks while it works.\n"
		 "Files named in vm.json's extra QEMU arguments are not included.\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT | CLI_QUIET,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
