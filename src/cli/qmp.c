/* SPDX-License-Identifier: MIT */
/* qsnap qmp: one QMP command, passed through. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap qmp VMDIR COMMAND [JSON-ARGUMENTS]\n"
	       "\n"
	       "Send one QMP command to the VM's QEMU and print its reply (the \"return\"\n"
	       "value) as JSON. Example:\n"
	       "  qsnap qmp vm query-status\n"
	       "  qsnap qmp vm human-monitor-command '{\"command-line\": \"info registers\"}'\n");
}

int cmd_qmp(int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	qsnap_error err = {0};
	char *reply = NULL;
	qsnap_vm *vm;
	int c, rc;

	while ((c = cli_getopt("qmp", argc, argv, "+h", opts)) != -1) {
		if (c == 'h') {
			help();
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (argc - optind < 2 || argc - optind > 3)
		return cli_usage_error("qmp", "expected VMDIR COMMAND [JSON-ARGUMENTS]");
	rc = cli_open(argv[optind], DEFAULT_LOCK_TIMEOUT, &vm);
	if (rc)
		return rc;
	if (qsnap_vm_qmp(vm, argv[optind + 1], argc - optind == 3 ? argv[optind + 2] : NULL, &reply,
			 &err) < 0)
		rc = cli_fail(&err);
	else
		printf("%s\n", reply);
	free(reply);
	qsnap_vm_close(vm);
	return rc;
}
