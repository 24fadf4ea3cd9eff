/* SPDX-License-Identifier: MIT */
/* qsnap stop: stop the VM's QEMU. */
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap stop VMDIR [--timeout SECONDS]\n"
	       "\n"
	       "Stop QEMU (QMP quit; SIGKILL if it has not ended after the timeout).\n"
	       "The disks keep what the guest wrote; RAM is lost unless saved.\n"
	       "\n"
	       "  --timeout SECONDS  grace period before SIGKILL (default 10)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n");
}

int cmd_stop(int argc, char **argv)
{
	enum { OPT_TIMEOUT = 256, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	qsnap_error err = {0};
	qsnap_vm *vm;
	long timeout = 0, lock = DEFAULT_LOCK_TIMEOUT;
	int c, rc;

	while ((c = cli_getopt("stop", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case OPT_TIMEOUT:
			if ((timeout = cli_number("stop", "--timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("stop", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("stop", optind < argc ? "too many arguments" : "VMDIR is missing");
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (qsnap_vm_stop(vm, (int)timeout, &err) < 0)
		rc = cli_fail(&err);
	qsnap_vm_close(vm);
	return rc;
}
