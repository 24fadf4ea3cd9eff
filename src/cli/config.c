/* SPDX-License-Identifier: MIT */
/* qsnap config: change how a stopped VM keeps its RAM. */
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap config VMDIR [--ram-mode stream|shared] [--ram-dir DIR]\n"
	       "\n"
	       "Change settings of a stopped VM; without options, show them. Snapshots\n"
	       "taken in either RAM mode stay restorable.\n"
	       "\n"
	       "  --ram-mode MODE    stream or shared (see qsnap init --help)\n"
	       "  --ram-dir DIR      shared mode: where the RAM file lives\n"
	       "  --max-chain N      saves compact a live layer chain longer than N (base image\n"
	       "                     included; 0: the default, %d); this one works while it runs\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n",
	       QSNAP_DEFAULT_MAX_CHAIN);
}

int cmd_config(int argc, char **argv)
{
	enum { OPT_RAM_MODE = 256, OPT_RAM_DIR, OPT_LOCK, OPT_MAX_CHAIN };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"ram-mode", required_argument, NULL, OPT_RAM_MODE},
		{"ram-dir", required_argument, NULL, OPT_RAM_DIR},
		{"max-chain", required_argument, NULL, OPT_MAX_CHAIN},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	qsnap_error err = {0};
	qsnap_ram_mode mode = QSNAP_RAM_STREAM;
	const char *ram_dir = NULL;
	bool set_mode = false, set_dir = false;
	long lock = DEFAULT_LOCK_TIMEOUT, max_chain = -1;
	qsnap_vm *vm;
	int c, rc;

	while ((c = cli_getopt("config", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case OPT_RAM_MODE:
			if (qsnap_ram_mode_parse(optarg, &mode) < 0)
				return cli_usage_error("config", "--ram-mode is stream or shared, not '%s'",
						       optarg);
			set_mode = true;
			break;
		case OPT_RAM_DIR:
			ram_dir = optarg;
			set_dir = true;
			break;
		case OPT_MAX_CHAIN:
			if ((max_chain = cli_number("config", "--max-chain", optarg)) < 0)
				return EXIT_USAGE;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("config", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("config", optind < argc ? "too many arguments" : "VMDIR is missing");
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (set_mode || set_dir) {
		const qsnap_def *def = qsnap_vm_def(vm);

		if (!set_mode)
			mode = def->ram_mode;
		if (!set_dir)
			ram_dir = def->ram_dir;
		if (qsnap_vm_set_ram(vm, mode, ram_dir, &err) < 0)
			rc = cli_fail(&err);
	}
	if (!rc && max_chain >= 0 && qsnap_vm_set_max_chain(vm, (unsigned)max_chain, &err) < 0)
		rc = cli_fail(&err);
	if (!rc) {
		const qsnap_def *def = qsnap_vm_def(vm);

		printf("ram-mode:  %s\nram-dir:   %s\nmax-chain: %u\n", qsnap_ram_mode_name(def->ram_mode),
		       def->ram_dir ? def->ram_dir : "(default, under /dev/shm)",
		       def->max_chain ? def->max_chain : QSNAP_DEFAULT_MAX_CHAIN);
	}
	qsnap_vm_close(vm);
	return rc;
}
