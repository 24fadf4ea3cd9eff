/* SPDX-License-Identifier: MIT */
/* qsnap start: start the VM's QEMU. */
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap start VMDIR [--paused] [--from SNAPSHOT] [OPTIONS]\n"
	       "\n"
	       "Start QEMU for a stopped VM. The guest's serial console is on\n"
	       "VMDIR/run/serial.sock and everything it prints goes to VMDIR/run/serial.log.\n"
	       "\n"
	       "  --paused           leave the vCPUs stopped (continue with qsnap qmp VMDIR cont)\n"
	       "  --from SNAPSHOT    start from a snapshot, as restore does\n"
	       "  --lazy             with --from: map a shared-RAM snapshot's RAM copy-on-write\n"
	       "  --from-dump FILE   load a memory dump (qsnap dump-memory) paused, with\n"
	       "                     read-only disks, for inspection with qsnap qmp\n"
	       "  --timeout SECONDS  how long QEMU may take to come up or load state (default 60/600)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress\n");
}

int cmd_start(int argc, char **argv)
{
	enum { OPT_PAUSED = 256, OPT_FROM, OPT_TIMEOUT, OPT_LOCK, OPT_LAZY, OPT_FROM_DUMP };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"paused", no_argument, NULL, OPT_PAUSED},
		{"from", required_argument, NULL, OPT_FROM},
		{"lazy", no_argument, NULL, OPT_LAZY},
		{"from-dump", required_argument, NULL, OPT_FROM_DUMP},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_start_opts so = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT, n;
	bool quiet = false;
	const char *dump = NULL;
	int c, rc;

	while ((c = cli_getopt("start", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_PAUSED:
			so.paused = true;
			break;
		case OPT_FROM:
			so.from = optarg;
			break;
		case OPT_LAZY:
			so.lazy = true;
			break;
		case OPT_FROM_DUMP:
			dump = optarg;
			break;
		case OPT_TIMEOUT:
			if ((n = cli_number("start", "--timeout", optarg)) < 0)
				return EXIT_USAGE;
			so.timeout = (int)n;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("start", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("start", optind < argc ? "too many arguments" : "VMDIR is missing");
	if (so.lazy && !so.from)
		return cli_usage_error("start", "--lazy goes with --from SNAPSHOT");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (dump) {
		if (so.from)
			rc = cli_usage_error("start", "--from and --from-dump exclude each other");
		else if (qsnap_vm_start_from_dump(vm, dump, so.timeout, &err) < 0)
			rc = cli_fail(&err);
		else if (!quiet)
			printf("loaded %s into %s, paused, disks read-only: inspect it with qsnap qmp\n",
			       dump, argv[optind]);
	} else if (qsnap_vm_start(vm, &so, &err) < 0)
		rc = cli_fail(&err);
	else if (!quiet)
		printf("started %s%s%s%s\n", argv[optind], so.from ? " from " : "",
		       so.from ? so.from : "", so.paused ? " (paused)" : "");
	qsnap_vm_close(vm);
	return rc;
}
