/* SPDX-License-Identifier: MIT */
/* qsnap dump-memory: the machine state of a running VM, for debugging. */
#include <stdio.h>

#include "cli.h"

static const struct cli_choice formats[] = {
	{"stream", QSNAP_DUMP_STREAM},
	{"elf", QSNAP_DUMP_ELF},
	{0},
};
static int format = QSNAP_DUMP_STREAM, level;
static bool no_compress;

static const struct cli_opt opts[] = {
	{"format", 0, CLI_CHOICE, "FORMAT",
	 "stream: QEMU's migration stream, RAM and devices (default);\n"
	 "load it for inspection with: qsnap start VMDIR2 --from-dump\n"
	 "OUTPUT (paused, read-only disks), then qsnap qmp VMDIR2 ...\n"
	 "elf: an ELF core of guest memory (QEMU's dump-guest-memory),\n"
	 "for crash(8) or gdb after unzstd", .target = &format, .choices = formats},
	{"level", 0, CLI_NUMBER, "N", "zstd level 1-19 (default 3)", .target = &level, .min = 1, .max = 19},
	{"no-compress", 0, CLI_FLAG, NULL, "write the dump as it is", .target = &no_compress},
	{0},
};

static int check(struct cli *c)
{
	if (level && no_compress)
		return cli_usage(c, "--level and --no-compress exclude each other");
	return 0;
}

static int run(struct cli *c)
{
	qsnap_dump_opts dopts = {.size = sizeof(dopts), .format = (qsnap_dump_format)format,
				 .compress = no_compress ? QSNAP_COMPRESS_OFF : level, .timeout = c->timeout,
				 .progress = cli_progress, .userdata = &c->progress};
	char size[32];

	if (qsnap_vm_dump_memory(c->vm, c->argv[1], &dopts, &c->err) < 0)
		return CLI_FAILED;
	if (!c->quiet) {
		cli_file_size(size, sizeof(size), c->argv[1], false);
		printf("dumped %s to %s (%s) in %.2f s\n", c->argv[0], c->argv[1], size,
		       cli_clock() - c->started);
	}
	return 0;
}

const struct cli_cmd cli_cmd_dump_memory = {
	.name = "dump-memory",
	.summary = "write the running VM's memory to a compressed file",
	.args = "VMDIR OUTPUT",
	.min_args = 2,
	.max_args = 2,
	.about = "Write the machine state of the running (or paused) VM to OUTPUT, compressed\n"
		 "with zstd in several threads; the VM goes on as it was (a running guest is\n"
		 "paused only for milliseconds).\n",
	.opts = opts,
	.common = CLI_TIMEOUT | CLI_LOCK_TIMEOUT | CLI_QUIET,
	.vm = CLI_VM_LOCKED,
	.check = check,
	.run = run,
};
