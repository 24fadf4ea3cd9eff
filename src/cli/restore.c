/* SPDX-License-Identifier: MIT */
/* qsnap restore: bring the VM back to a snapshot. */
#include <stdio.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap restore VMDIR NAME [--timeout SECONDS] [--quiet]\n"
	       "\n"
	       "Bring the VM back to snapshot NAME, whether or not it runs now: the running\n"
	       "QEMU (if any) ends, and a new one starts with the snapshot's disks, RAM and\n"
	       "device state. What the VM did since is discarded; other snapshots are kept.\n"
	       "\n"
	       "  --lazy             shared-RAM snapshots: map the snapshot's RAM copy-on-write\n"
	       "                     instead of copying it (restore time does not grow with RAM;\n"
	       "                     the next save then carries RAM in the migration stream)\n"
	       "  --timeout SECONDS  give up after this long (default 600)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_restore(int argc, char **argv)
{
	enum { OPT_TIMEOUT = 256, OPT_LOCK, OPT_LAZY };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"lazy", no_argument, NULL, OPT_LAZY},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_restore_opts ro = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	double t0;
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT, n;
	bool quiet = false;
	int c, rc;

	while ((c = cli_getopt("restore", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_LAZY:
			ro.lazy = true;
			break;
		case OPT_TIMEOUT:
			if ((n = cli_number("restore", "--timeout", optarg)) < 0)
				return EXIT_USAGE;
			ro.timeout = (int)n;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("restore", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("restore", "expected VMDIR NAME");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	t0 = cli_clock();
	if (qsnap_vm_restore(vm, argv[optind + 1], &ro, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		printf("restored %s in %.2f s\n", argv[optind + 1],
		       cli_clock() - t0);
	}
	qsnap_vm_close(vm);
	return rc;
}
