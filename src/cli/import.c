/* SPDX-License-Identifier: MIT */
/* qsnap import: a new VM directory from an exported snapshot. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static int run(struct cli *c)
{
	qsnap_import_opts io = {.size = sizeof(io), .progress = cli_progress, .userdata = &c->progress};
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
		 "beside that VM.\n",
	.common = CLI_QUIET,
	.run = run,
};
