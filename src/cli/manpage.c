/* SPDX-License-Identifier: MIT */
/* qsnap --man: the qsnap(1) man page, made from the same tables as --help
 * (the build installs it; tests/integration/test_cli_docs.py renders it). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Text as roff reads it: backslashes and dashes escaped, a line that
 * would start with a control character guarded; with join, the help's
 * line breaks become spaces (roff fills the paragraph itself). */
static bool roff_text(const char *s, bool join, bool bol)
{
	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", stdout);
		bol = false;
		switch (*s) {
		case '\\':
			fputs("\\e", stdout);
			break;
		case '-':
			fputs("\\-", stdout);
			break;
		case '\n':
			if (join && s[1]) {
				putchar(' ');
			} else {
				putchar('\n');
				bol = true;
			}
			break;
		default:
			putchar(*s);
		}
	}
	return bol;
}

/* The same, ending the line. */
static void roff(const char *s, bool join)
{
	if (!roff_text(s, join, true))
		putchar('\n');
}

static void command(const struct cli_cmd *cmd)
{
	struct cli_opt opts[CLI_MAX_OPTS];
	size_t n = cli_cmd_opts(cmd, opts);
	char form[160];

	printf(".SS \"qsnap ");
	roff_text(cmd->name, true, false);
	printf(cmd->options_first ? " [OPTIONS] %s" : " %s [OPTIONS]", cmd->args);
	if (cmd->usage_tail) {
		putchar(' ');
		roff_text(cmd->usage_tail, true, false);
	}
	printf("\"\n");
	roff(cmd->summary, true);
	printf(".PP\n");
	roff(cmd->about, false);
	for (size_t i = 0; i < n; i++) {
		cli_opt_form(&opts[i], true, form, sizeof(form));
		printf(".TP\n.B ");
		roff(form, true);
		roff(opts[i].help, true);
		if (opts[i].choices) {
			printf("One of:");
			for (const struct cli_choice *ch = opts[i].choices; ch->word; ch++)
				printf(" %s", ch->word);
			printf(".\n");
		}
		if (opts[i].repeat)
			printf("May be given more than once.\n");
	}
}

void cli_print_man(void)
{
	printf(".TH QSNAP 1 \"\" \"qsnap %s\" \"User Commands\"\n", QSNAP_VERSION);
	printf(".SH NAME\nqsnap \\- run QEMU virtual machines for testing; save and restore them whole\n");
	printf(".SH SYNOPSIS\n.B qsnap\n.I COMMAND\n[\\fIOPTIONS\\fR] \\fIVMDIR\\fR ...\n.br\n"
	       ".B qsnap\n\\-\\-help | \\-\\-version\n");
	printf(".SH DESCRIPTION\n"
	       "qsnap runs QEMU virtual machines for automated testing and saves and restores\n"
	       "them whole (disks, RAM, CPU and device state) as named snapshots. A VM lives in\n"
	       "one directory, VMDIR. Every command also takes \\-\\-help.\n");
	printf(".SH COMMANDS\n");
	for (size_t i = 0; i < cli_n_commands; i++)
		command(cli_commands[i]);
	printf(".SH EXIT STATUS\n0 on success, 1 when the command failed, 2 for a usage error.\n");
	printf(".SH EXAMPLES\n.nf\n"
	       "qsnap init vm \\-\\-drive disk=base.qcow2 \\-\\-memory 1G\n"
	       "qsnap start vm\nqsnap save vm booted\nqsnap restore vm booted\n.fi\n");
	printf(".SH SEE ALSO\n.BR qemu-system-x86_64 (1),\n.BR qemu-img (1)\n");
}
