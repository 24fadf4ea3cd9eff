/* SPDX-License-Identifier: MIT */
/* qsnap compact: shorten the drives' layer chains. */
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap compact VMDIR [--max-chain N]\n"
	       "\n"
	       "Shorten the drives' layer chains without changing what any snapshot\n"
	       "restores to: layers that no snapshot and no live disk needs are merged into\n"
	       "the layer above, and a live chain longer than N (base image included) is\n"
	       "flattened onto its base. Works with the VM running or stopped. Saves do this\n"
	       "by themselves past the limit set with qsnap config --max-chain (default %d).\n"
	       "\n"
	       "  --max-chain N      the limit for this run (default: the VM's)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n",
	       QSNAP_DEFAULT_MAX_CHAIN);
}

int cmd_compact(int argc, char **argv)
{
	enum { OPT_MAX = 256, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"max-chain", required_argument, NULL, OPT_MAX},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	qsnap_compact_stats stats;
	qsnap_error err = {0};
	long max = 0, lock = DEFAULT_LOCK_TIMEOUT;
	qsnap_vm *vm;
	int c, rc;

	while ((c = cli_getopt("compact", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case OPT_MAX:
			if ((max = cli_number("compact", "--max-chain", optarg)) < 0)
				return EXIT_USAGE;
			if (max < 2)
				return cli_usage_error("compact", "--max-chain must be 2 or more");
			break;
		case OPT_LOCK:
			if ((lock = cli_number("compact", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("compact", optind < argc ? "too many arguments" : "VMDIR is missing");
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (qsnap_vm_compact(vm, (unsigned)max, &stats, &err) < 0)
		rc = cli_fail(&err);
	else
		printf("compacted %s: %u layers merged, %u chains flattened, longest chain now %zu\n",
		       argv[optind], stats.merged, stats.flattened, stats.longest);
	qsnap_vm_close(vm);
	return rc;
}
