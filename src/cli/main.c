/* SPDX-License-Identifier: MIT */
/* qsnap: the command line. Parses arguments, calls libqsnap, prints. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct cli_cmd commands[] = {
	{"init", "create a VM directory from drives, a kernel and settings", cmd_init},
	{"start", "start the VM's QEMU (or start from a snapshot with --from)", cmd_start},
	{"stop", "stop the VM's QEMU", cmd_stop},
	{"status", "show whether the VM runs, its drives and their layer chains", cmd_status},
	{"save", "save the whole VM as a named snapshot", cmd_save},
	{"restore", "bring the VM back to a snapshot", cmd_restore},
	{"list", "list the snapshots", cmd_list},
	{"delete", "delete a snapshot", cmd_delete},
	{"dump-memory", "write the running VM's memory to a compressed file", cmd_dump_memory},
	{"compact", "shorten the drives' layer chains", cmd_compact},
	{"config", "change how a stopped VM keeps its RAM", cmd_config},
	{"publish", "write a drive as one standalone image (at a snapshot, or now)", cmd_publish},
	{"verify", "check that a snapshot's files are all there and intact", cmd_verify},
	{"export", "write a snapshot and all it needs as one tar file", cmd_export},
	{"import", "make a new VM directory from an exported snapshot", cmd_import},
	{"push", "push a snapshot to an OCI registry", cmd_push},
	{"pull", "pull a snapshot from an OCI registry", cmd_pull},
	{"qmp", "send one QMP command to the running QEMU", cmd_qmp},
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: qsnap COMMAND [OPTIONS] VMDIR ...\n"
		   "\n"
		   "Run QEMU virtual machines for testing; save and restore them whole\n"
		   "(disks, RAM, CPU and device state) as named snapshots.\n"
		   "\n"
		   "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n"
		   "Run 'qsnap COMMAND --help' for the options of a command.\n"
		   "Example:\n"
		   "  qsnap init vm --drive disk=base.qcow2 --memory 1G\n"
		   "  qsnap start vm\n"
		   "  qsnap save vm booted\n"
		   "  qsnap restore vm booted\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("qsnap %s\n", QSNAP_VERSION);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "qsnap: unknown command '%s' (run qsnap --help for the list)\n", argv[1]);
	return EXIT_USAGE;
}
