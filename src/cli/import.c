/* SPDX-License-Identifier: MIT */
/* qsnap import: a new VM directory from an exported snapshot. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static bool trust_config;
static const char *qemu;

static const struct cli_opt opts[] = {
	{"qemu", 0, CLI_STRING, "BINARY", "the QEMU that runs the snapshot (default qemu-system-x86_64)",
	 .target = &qemu},
	{"trust-config", 0, CLI_FLAG, NULL,
	 "keep the archive's qemu, ram_dir, extra_args and machine type\n(only from a source you trust: they run on this host)",
	 .target = &trust_config},
	{0},
};

static int run(struct cli *c)
{
	qsnap_import_opts io = {.size = sizeof(io), .progress = cli_progress, .userdata = &c->progress,
				.trust_config = trust_config, .qemu = qemu, .notice = cli_notice};
	char *name = NULL;

	if (qsnap_import(c->argv[0], c->argv[1], &io, &name, &c->err) < 0)
		return CLI_FAILED;
	if (!c->quiet)
		printf("imported snapshot %s into %s in %.2f s (restore it with: qsnap restore %s %s)\n",
		       name, c->argv[0], cli_clock() - c->started, c->argv[0], name);
	qsnap_free(name);
	return 0;
}

const struct cli_cmd cli_cmd_import = {
	.name = "import",
	.summary = "make a new VM directory from an exported snapshot",
	.args = "VMDIR INPUT.tar",
	.min_args = 2,
	.max_args = 2,
	.about = "Make a new VM directory VMDIR (it must not exist, or be empty) from a file\n"
		 "that 'qsnap export' wrote. The exported disks become the new VM's base\n"
		 "images (VMDIR/images/), the kernel and initrd go to VMDIR/boot/, and the\n"
		 "snapshot is ready: 'qsnap restore VMDIR NAME' or 'qsnap start VMDIR --from\n"
		 "NAME'. Every file is checked against the archive's checksums before VMDIR\n"
		 "appears; a damaged archive leaves nothing behind. An existing VM is never\n"
		 "changed by an import: to bring a snapshot into a VM you have, import it\n"
		 "beside that VM.\n"
		 "An archive is data: its vm.json may not name a QEMU, a RAM folder, extra\n"
		 "QEMU arguments or an unusual machine type unless you give --trust-config;\n"
		 "what was dropped (or taken) is said in one line.\n",
	.opts = opts,
	.common = CLI_QUIET,
	.run = run,
};
