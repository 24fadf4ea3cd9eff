/* SPDX-License-Identifier: MIT */
/* qsnap export: a snapshot and all it needs as one tar file. */
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap export VMDIR NAME OUTPUT.tar [--compress] [--replace] [--quiet]\n"
	       "\n"
	       "Write snapshot NAME as one tar file that another host imports with\n"
	       "'qsnap import' and restores with nothing else: the machine state and\n"
	       "meta.json, every drive flattened into one standalone image as it was at\n"
	       "the snapshot (base image included), the kernel and initrd, a vm.json that\n"
	       "names them, and a manifest with a checksum of every file. The VM may keep\n"
	       "running. Needs free space beside OUTPUT for the flattened disks while it\n"
	       "works. Files named in vm.json's extra QEMU arguments are not included.\n"
	       "\n"
	       "  -c, --compress     compressed qcow2 disk images (smaller, slower)\n"
	       "  --replace          replace OUTPUT if it exists\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_export(int argc, char **argv)
{
	enum { OPT_REPLACE = 256, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"compress", no_argument, NULL, 'c'},
		{"replace", no_argument, NULL, OPT_REPLACE},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_export_opts eo = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	double t0;
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT;
	bool quiet = false;
	int c, rc;

	while ((c = cli_getopt("export", argc, argv, "hqc", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case 'c':
			eo.compress = true;
			break;
		case OPT_REPLACE:
			eo.replace = true;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("export", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 3)
		return cli_usage_error("export", "expected VMDIR NAME OUTPUT.tar");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	t0 = cli_clock();
	if (qsnap_vm_export(vm, argv[optind + 1], argv[optind + 2], &eo, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		struct stat st;
		char size[32] = "?";

		if (stat(argv[optind + 2], &st) == 0)
			cli_format_size(size, sizeof(size), (uint64_t)st.st_size);
		printf("exported %s to %s (%s) in %.2f s\n", argv[optind + 1], argv[optind + 2], size,
		       cli_clock() - t0);
	}
	qsnap_vm_close(vm);
	return rc;
}
