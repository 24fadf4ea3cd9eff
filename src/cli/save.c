/* SPDX-License-Identifier: MIT */
/* qsnap save: save the whole VM as a snapshot. */
#include <stdio.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap save VMDIR NAME [--replace] [--timeout SECONDS] [--quiet]\n"
	       "\n"
	       "Save every writable disk, RAM, CPU and device state as snapshot NAME. The\n"
	       "guest is paused while its state is written and then runs on as before; a\n"
	       "paused VM stays paused (and restores paused).\n"
	       "NAME: letters, digits, '-', '_', '.'; not starting with '.'.\n"
	       "\n"
	       "  --replace          replace an existing snapshot of that name (e.g. a rolling\n"
	       "                     \"lastgood\")\n"
	       "  --timeout SECONDS  give up after this long (default 600)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_save(int argc, char **argv)
{
	enum { OPT_REPLACE = 256, OPT_TIMEOUT, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"replace", no_argument, NULL, OPT_REPLACE},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_save_opts so = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	struct timespec t0, t1;
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT, n;
	bool quiet = false;
	int c, rc;

	while ((c = cli_getopt("save", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_REPLACE:
			so.replace = true;
			break;
		case OPT_TIMEOUT:
			if ((n = cli_number("save", "--timeout", optarg)) < 0)
				return EXIT_USAGE;
			so.timeout = (int)n;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("save", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("save", "expected VMDIR NAME");
	if (!qsnap_name_valid(argv[optind + 1]))
		return cli_usage_error("save", "snapshot name '%s' is not valid: use letters, digits, '-', '_' and '.', not starting with '.'",
				       argv[optind + 1]);
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (qsnap_vm_save(vm, argv[optind + 1], &so, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("saved %s in %.2f s\n", argv[optind + 1],
		       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	}
	qsnap_vm_close(vm);
	return rc;
}
