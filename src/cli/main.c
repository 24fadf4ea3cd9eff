/* SPDX-License-Identifier: MIT */
/* qsnap: the command line. The table of commands; frame.c runs them. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

const struct cli_cmd *const cli_commands[] = {
	&cli_cmd_init,	  &cli_cmd_start,   &cli_cmd_stop,	  &cli_cmd_status,
	&cli_cmd_save,	  &cli_cmd_restore, &cli_cmd_list,	  &cli_cmd_delete,
	&cli_cmd_dump_memory, &cli_cmd_compact, &cli_cmd_config,  &cli_cmd_publish,
	&cli_cmd_verify,  &cli_cmd_export,  &cli_cmd_import,	  &cli_cmd_qmp,
	&cli_cmd_console, &cli_cmd_push, &cli_cmd_pull,
};
const size_t cli_n_commands = sizeof(cli_commands) / sizeof(cli_commands[0]);

static void usage(FILE *f)
{
	fprintf(f, "Usage: qsnap COMMAND [OPTIONS] VMDIR ...\n"
		   "\n"
		   "Run QEMU virtual machines for testing; save and restore them whole\n"
		   "(disks, RAM, CPU and device state) as named snapshots.\n"
		   "\n"
		   "Commands:\n");
	int width = 0;
	for (size_t i = 0; i < cli_n_commands; i++)
		if ((int)strlen(cli_commands[i]->name) > width)
			width = (int)strlen(cli_commands[i]->name);
	for (size_t i = 0; i < cli_n_commands; i++)
		fprintf(f, "  %-*s  %s\n", width, cli_commands[i]->name, cli_commands[i]->summary);
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
		printf("qsnap %s (libqsnap %s)\n", QSNAP_VERSION, qsnap_version());
		return EXIT_OK;
	}
	/* Not in --help: for the build, which installs their output. */
	if (!strcmp(argv[1], "--man")) {
		cli_print_man();
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--bash-completion")) {
		cli_print_bash_completion();
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "__complete"))
		return cli_complete(argc - 2, argv + 2);
	for (size_t i = 0; i < cli_n_commands; i++)
		if (!strcmp(argv[1], cli_commands[i]->name))
			return cli_run(cli_commands[i], argc - 1, argv + 1);
	fprintf(stderr, "qsnap: unknown command '%s' (run qsnap --help for the list)\n", argv[1]);
	return EXIT_USAGE;
}
