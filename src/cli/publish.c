/* SPDX-License-Identifier: MIT */
/* qsnap publish: one standalone image of a drive, for later VMs' bases. */
#include <stdio.h>

#include "cli.h"

static const struct cli_choice formats[] = {
	{"qcow2", QSNAP_IMAGE_QCOW2},
	{"raw", QSNAP_IMAGE_RAW},
	{0},
};
static bool compress, replace;
static const char *at;
static int format = QSNAP_IMAGE_QCOW2;

static const struct cli_opt opts[] = {
	{"at", 0, CLI_STRING, "SNAPSHOT",
	 "the drive as it was at this snapshot (needed while the\nVM runs)", .target = &at},
	{"compress", 'c', CLI_FLAG, NULL, "compressed qcow2 (smaller, slower; several threads)",
	 .target = &compress},
	{"format", 0, CLI_CHOICE, "FORMAT", "qcow2 (default) or raw", .target = &format, .choices = formats},
	{"replace", 0, CLI_FLAG, NULL, "replace OUTPUT if it exists", .target = &replace},
	{0},
};

static int check(struct cli *c)
{
	if (compress && format != QSNAP_IMAGE_QCOW2)
		return cli_usage(c, "--compress needs --format qcow2");
	return 0;
}

static int run(struct cli *c)
{
	qsnap_publish_opts po = {.size = sizeof(po), .at = at, .format = (qsnap_image_format)format, .compress = compress,
				 .replace = replace, .progress = cli_progress,
				 .userdata = &c->progress};
	char size[32];

	if (qsnap_vm_publish(c->vm, c->argv[1], c->argv[2], &po, &c->err) < 0)
		return CLI_FAILED;
	if (!c->quiet) {
		cli_file_size(size, sizeof(size), c->argv[2], true);
		printf("published %s%s%s to %s (%s) in %.2f s\n", c->argv[1], at ? " at " : "",
		       at ? at : "", c->argv[2], size, cli_clock() - c->started);
	}
	return 0;
}

const struct cli_cmd cli_cmd_publish = {
	.name = "publish",
	.summary = "write a drive as one standalone image (at a snapshot, or now)",
	.args = "VMDIR DRIVE OUTPUT",
	.min_args = 3,
	.max_args = 3,
	.about = "Write drive DRIVE as one standalone image OUTPUT, with no backing files:\n"
		 "its whole layer chain (the base image included) as it was at SNAPSHOT, or\n"
		 "as it is now when the VM is stopped. Use OUTPUT as the base image of later\n"
		 "VMs (qsnap init --drive ID=OUTPUT). With --at the VM may keep running. The\n"
		 "image is written beside OUTPUT under a temporary name, checked with\n"
		 "qemu-img check and renamed to OUTPUT only when complete.\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT | CLI_QUIET,
	.vm = CLI_VM_LOCKED,
	.check = check,
	.run = run,
};
