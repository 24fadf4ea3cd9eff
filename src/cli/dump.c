/* SPDX-License-Identifier: MIT */
/* qsnap dump-memory: the machine state of a running VM, for debugging. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap dump-memory VMDIR OUTPUT [--format stream|elf] [--level N | --no-compress]\n"
	       "\n"
	       "Write the machine state of the running (or paused) VM to OUTPUT, compressed\n"
	       "with zstd in several threads; the VM goes on as it was (a running guest is\n"
	       "paused only for milliseconds).\n"
	       "\n"
	       "  --format stream    QEMU's migration stream, RAM and devices (default); load\n"
	       "                     it for inspection with: qsnap start VMDIR2 --from-dump OUTPUT\n"
	       "                     (paused, read-only disks), then qsnap qmp VMDIR2 ...\n"
	       "  --format elf       an ELF core of guest memory (QEMU's dump-guest-memory), for\n"
	       "                     crash(8) or gdb after unzstd\n"
	       "  --level N          zstd level 1-19 (default 3)\n"
	       "  --no-compress      write the dump as it is\n"
	       "  --timeout SECONDS  give up after this long (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

int cmd_dump_memory(int argc, char **argv)
{
	enum { OPT_FORMAT = 256, OPT_LEVEL, OPT_NO_COMPRESS, OPT_TIMEOUT };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"format", required_argument, NULL, OPT_FORMAT},
		{"level", required_argument, NULL, OPT_LEVEL},
		{"no-compress", no_argument, NULL, OPT_NO_COMPRESS},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{0},
	};
	struct cli_progress cp;
	qsnap_dump_opts dopts = {.progress = cli_progress, .userdata = &cp};
	qsnap_error err = {0};
	double t0;
	qsnap_vm *vm;
	bool quiet = false;
	long n;
	int c, rc;

	while ((c = cli_getopt("dump-memory", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_FORMAT:
			if (!strcmp(optarg, "stream"))
				dopts.format = QSNAP_DUMP_STREAM;
			else if (!strcmp(optarg, "elf"))
				dopts.format = QSNAP_DUMP_ELF;
			else
				return cli_usage_error("dump-memory", "--format is stream or elf, not '%s'",
						       optarg);
			break;
		case OPT_LEVEL:
			if ((n = cli_number("dump-memory", "--level", optarg)) < 1 || n > 19)
				return n == -1 ? EXIT_USAGE
					       : cli_usage_error("dump-memory", "--level is 1 to 19");
			dopts.compress = (int)n;
			break;
		case OPT_NO_COMPRESS:
			dopts.compress = -1;
			break;
		case OPT_TIMEOUT:
			if ((n = cli_number("dump-memory", "--timeout", optarg)) < 0)
				return EXIT_USAGE;
			dopts.timeout = (int)n;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("dump-memory", "expected VMDIR OUTPUT");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], DEFAULT_LOCK_TIMEOUT, &vm);
	if (rc)
		return rc;
	t0 = cli_clock();
	if (qsnap_vm_dump_memory(vm, argv[optind + 1], &dopts, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		struct stat st;
		char size[32] = "?";

		if (stat(argv[optind + 1], &st) == 0)
			cli_format_size(size, sizeof(size), (uint64_t)st.st_size);
		printf("dumped %s to %s (%s) in %.2f s\n", argv[optind], argv[optind + 1], size,
		       cli_clock() - t0);
	}
	qsnap_vm_close(vm);
	return rc;
}
