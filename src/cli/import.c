/* SPDX-License-Identifier: MIT */
/* qsnap import: a new VM directory from an exported snapshot. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap import VMDIR INPUT.tar [--quiet]\n"
	       "\n"
	       "Make a new VM directory VMDIR (it must not exist, or be empty) from a file\n"
	       "that 'qsnap export' wrote. The exported disks become the new VM's base\n"
	       "images (VMDIR/images/), the kernel and initrd go to VMDIR/boot/, and the\n"
	       "snapshot is ready: 'qsnap restore VMDIR NAME' or 'qsnap start VMDIR --from\n"
	       "NAME'. Every file is checked against the archive's checksums before VMDIR\n"
	       "appears; a damaged archive leaves nothing behind. An existing VM is never\n"
	       "changed by an import: to bring a snapshot into a VM you have, import it\n"
	       "beside that VM.\n"
	       "\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_import(int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{0},
	};
	struct cli_progress cp;
	qsnap_import_opts io = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	double t0;
	char *name = NULL;
	bool quiet = false;
	int c;

	while ((c = cli_getopt("import", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("import", "expected VMDIR INPUT.tar");
	cli_progress_init(&cp, quiet);
	t0 = cli_clock();
	if (qsnap_import(argv[optind], argv[optind + 1], &io, &name, &err) < 0)
		return cli_fail(&err);
	if (!quiet) {
		printf("imported snapshot %s into %s in %.2f s (restore it with: qsnap restore %s %s)\n",
		       name, argv[optind],
		       cli_clock() - t0,
		       argv[optind], name);
	}
	free(name);
	return EXIT_OK;
}
