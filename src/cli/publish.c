/* SPDX-License-Identifier: MIT */
/* qsnap publish: one standalone image of a drive, for later VMs' bases. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap publish VMDIR DRIVE OUTPUT [--at SNAPSHOT] [--compress]\n"
	       "                     [--format qcow2|raw] [--replace] [--quiet]\n"
	       "\n"
	       "Write drive DRIVE as one standalone image OUTPUT, with no backing files:\n"
	       "its whole layer chain (the base image included) as it was at SNAPSHOT, or\n"
	       "as it is now when the VM is stopped. Use OUTPUT as the base image of later\n"
	       "VMs (qsnap init --drive ID=OUTPUT). With --at the VM may keep running. The\n"
	       "image is written beside OUTPUT under a temporary name, checked with\n"
	       "qemu-img check and renamed to OUTPUT only when complete.\n"
	       "\n"
	       "  --at SNAPSHOT      the drive as it was at this snapshot (needed while the\n"
	       "                     VM runs)\n"
	       "  -c, --compress     compressed qcow2 (smaller, slower; several threads)\n"
	       "  --format FORMAT    qcow2 (default) or raw\n"
	       "  --replace          replace OUTPUT if it exists\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_publish(int argc, char **argv)
{
	enum { OPT_AT = 256, OPT_FORMAT, OPT_REPLACE, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"compress", no_argument, NULL, 'c'},
		{"at", required_argument, NULL, OPT_AT},
		{"format", required_argument, NULL, OPT_FORMAT},
		{"replace", no_argument, NULL, OPT_REPLACE},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_publish_opts po = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	double t0;
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT;
	bool quiet = false;
	int c, rc;

	while ((c = cli_getopt("publish", argc, argv, "hqc", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case 'c':
			po.compress = true;
			break;
		case OPT_AT:
			po.at = optarg;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "qcow2") && strcmp(optarg, "raw"))
				return cli_usage_error("publish", "--format takes qcow2 or raw, not '%s'",
						       optarg);
			po.format = optarg;
			break;
		case OPT_REPLACE:
			po.replace = true;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("publish", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 3)
		return cli_usage_error("publish", "expected VMDIR DRIVE OUTPUT");
	if (po.compress && po.format && strcmp(po.format, "qcow2"))
		return cli_usage_error("publish", "--compress needs --format qcow2");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	t0 = cli_clock();
	if (qsnap_vm_publish(vm, argv[optind + 1], argv[optind + 2], &po, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		struct stat st;
		char size[32] = "?";

		if (stat(argv[optind + 2], &st) == 0)
			cli_format_size(size, sizeof(size), (uint64_t)st.st_blocks * 512);
		printf("published %s%s%s to %s (%s) in %.2f s\n", argv[optind + 1],
		       po.at ? " at " : "", po.at ? po.at : "", argv[optind + 2], size,
		       cli_clock() - t0);
	}
	qsnap_vm_close(vm);
	return rc;
}
