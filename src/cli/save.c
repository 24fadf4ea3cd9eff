/* SPDX-License-Identifier: MIT */
/* qsnap save: save the whole VM as a snapshot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap save VMDIR NAME [--live [--no-wait]] [--replace] [--timeout SECONDS] [--quiet]\n"
	       "\n"
	       "Save every writable disk, RAM, CPU and device state as snapshot NAME. The\n"
	       "guest is paused while its state is written and then runs on as before; a\n"
	       "paused VM stays paused (and restores paused).\n"
	       "NAME: letters, digits, '-', '_', '.'; not starting with '.'.\n"
	       "\n"
	       "  --live             pause the guest only for milliseconds: RAM is written while\n"
	       "                     it runs (QEMU's background-snapshot); the snapshot is the\n"
	       "                     guest at that pause\n"
	       "  --no-wait          with --live: return at once; the save goes on in the\n"
	       "                     background (qsnap status shows its progress, and other\n"
	       "                     commands on VMDIR wait for it)\n"
	       "  --compress[=LEVEL] compress the migration stream with zstd (level 1-19,\n"
	       "                     default 3) in several threads\n"
	       "  --replace          replace an existing snapshot of that name (e.g. a rolling\n"
	       "                     \"lastgood\")\n"
	       "  --timeout SECONDS  give up after this long (default 600)\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

/* --no-wait: the library saves in a detached process, which reports
 * through files in run/ that qsnap status reads. */
static int save_in_background(qsnap_vm *vm, const char *name, qsnap_save_opts *so)
{
	qsnap_error err = {0};
	char *dir = strdup(qsnap_vm_dir(vm)); /* vm is closed on success */
	pid_t pid;
	int rc = EXIT_OK;

	fflush(NULL);
	if (qsnap_vm_save_background(vm, name, so, &pid, &err) < 0) {
		qsnap_vm_close(vm);
		rc = cli_fail(&err);
	} else {
		printf("saving %s in the background (pid %d); qsnap status %s shows its progress\n",
		       name, (int)pid, dir);
	}
	free(dir);
	return rc;
}

int cmd_save(int argc, char **argv)
{
	enum { OPT_REPLACE = 256, OPT_TIMEOUT, OPT_LOCK, OPT_LIVE, OPT_NO_WAIT, OPT_COMPRESS };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"replace", no_argument, NULL, OPT_REPLACE},
		{"live", no_argument, NULL, OPT_LIVE},
		{"no-wait", no_argument, NULL, OPT_NO_WAIT},
		{"compress", optional_argument, NULL, OPT_COMPRESS},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_save_stats stats = {0};
	qsnap_save_opts so = {.progress = cli_progress, .userdata = &cp, .stats = &stats};
	qsnap_error err = {0};
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT, n;
	bool quiet = false, no_wait = false;
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
		case OPT_LIVE:
			so.live = true;
			break;
		case OPT_NO_WAIT:
			no_wait = true;
			break;
		case OPT_COMPRESS:
			so.compress = 3;
			if (optarg && ((n = cli_number("save", "--compress", optarg)) < 1 || n > 19))
				return n == -1 ? EXIT_USAGE
					       : cli_usage_error("save", "--compress takes a level from 1 to 19");
			if (optarg)
				so.compress = (int)n;
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
	if (no_wait && !so.live)
		return cli_usage_error("save", "--no-wait goes with --live");
	cli_progress_init(&cp, quiet);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (no_wait)
		return save_in_background(vm, argv[optind + 1], &so);
	if (qsnap_vm_save(vm, argv[optind + 1], &so, &err) < 0) {
		rc = cli_fail(&err);
	} else if (!quiet) {
		char size[32];

		cli_format_size(size, sizeof(size), stats.bytes);
		printf("saved %s in %.2f s (guest paused %.3f s%s; %s, %s mode)\n", argv[optind + 1],
		       stats.total, stats.paused, stats.live ? ", live" : "", size, stats.mode);
	}
	qsnap_vm_close(vm);
	return rc;
}
