/* SPDX-License-Identifier: MIT */
/* qsnap delete: delete a snapshot. */
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap delete VMDIR NAME\n"
	       "\n"
	       "Delete snapshot NAME: its machine state, and the layers that no other\n"
	       "snapshot and no live disk needs. Snapshots built on it stay restorable.\n"
	       "\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n");
}

int cmd_delete(int argc, char **argv)
{
	enum { OPT_LOCK = 256 };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	qsnap_error err = {0};
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT;
	int c, rc;

	while ((c = cli_getopt("delete", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case OPT_LOCK:
			if ((lock = cli_number("delete", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("delete", "expected VMDIR NAME");
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (qsnap_vm_delete(vm, argv[optind + 1], &err) < 0)
		rc = cli_fail(&err);
	else
		printf("deleted %s\n", argv[optind + 1]);
	qsnap_vm_close(vm);
	return rc;
}
