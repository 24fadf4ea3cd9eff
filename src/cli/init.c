/* SPDX-License-Identifier: MIT */
/* qsnap init: create a VM directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap init VMDIR --drive ID=PATH[,OPTIONS] ... [OPTIONS] [-- QEMU-ARGS...]\n"
	       "\n"
	       "Create a VM directory. Base images are never written: every writable drive\n"
	       "gets its own qcow2 layer in VMDIR/layers/.\n"
	       "\n"
	       "  --drive ID=PATH[,if=virtio|scsi|ide|pflash][,format=qcow2|raw][,readonly]\n"
	       "                     a disk (repeatable); ID: a letter, then letters, digits, - or _\n"
	       "  --memory SIZE      guest RAM, e.g. 512M, 4G (default 1G)\n"
	       "  --smp N            vCPUs (default 1)\n"
	       "  --machine TYPE     QEMU machine type, e.g. q35 (default: QEMU's)\n"
	       "  --accel LIST       accelerators tried in order (default kvm:tcg)\n"
	       "  --cpu MODEL        CPU model (default: QEMU's)\n"
	       "  --kernel FILE      boot this kernel directly\n"
	       "  --initrd FILE      initial ramdisk for --kernel\n"
	       "  --append CMDLINE   kernel command line for --kernel\n"
	       "  --qemu BINARY      QEMU binary (default qemu-system-x86_64)\n"
	       "  --no-serial        no serial console on VMDIR/run/serial.sock\n"
	       "  --ram-mode MODE    stream: RAM is saved inside QEMU's migration stream (default)\n"
	       "                     shared: RAM lives in a shared file that qsnap copies itself,\n"
	       "                     much faster to save and restore (see qsnap restore --lazy)\n"
	       "  --ram-dir DIR      shared mode: where the RAM file lives (default: a private\n"
	       "                     folder under /dev/shm; a disk or hugetlbfs path also works)\n"
	       "  -- QEMU-ARGS       extra QEMU arguments, appended as given\n");
}

int cmd_init(int argc, char **argv)
{
	enum { OPT_DRIVE = 256, OPT_MEMORY, OPT_SMP, OPT_MACHINE, OPT_ACCEL, OPT_CPU, OPT_KERNEL,
	       OPT_INITRD, OPT_APPEND, OPT_QEMU, OPT_NO_SERIAL, OPT_RAM_MODE, OPT_RAM_DIR };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"drive", required_argument, NULL, OPT_DRIVE},
		{"memory", required_argument, NULL, OPT_MEMORY},
		{"smp", required_argument, NULL, OPT_SMP},
		{"machine", required_argument, NULL, OPT_MACHINE},
		{"accel", required_argument, NULL, OPT_ACCEL},
		{"cpu", required_argument, NULL, OPT_CPU},
		{"kernel", required_argument, NULL, OPT_KERNEL},
		{"initrd", required_argument, NULL, OPT_INITRD},
		{"append", required_argument, NULL, OPT_APPEND},
		{"qemu", required_argument, NULL, OPT_QEMU},
		{"no-serial", no_argument, NULL, OPT_NO_SERIAL},
		{"ram-mode", required_argument, NULL, OPT_RAM_MODE},
		{"ram-dir", required_argument, NULL, OPT_RAM_DIR},
		{0},
	};
	qsnap_error err = {0};
	qsnap_def def;
	const char *dir = NULL;
	int c, rc = EXIT_USAGE;
	long n;

	qsnap_def_init(&def);
	while ((c = cli_getopt("init", argc, argv, "h", opts)) != -1) {
		char **field = NULL;

		switch (c) {
		case 'h':
			help();
			rc = EXIT_OK;
			goto out;
		case OPT_DRIVE:
			if (qsnap_def_add_drive(&def, optarg, &err) < 0) {
				rc = cli_usage_error("init", "%s", err.msg);
				goto out;
			}
			break;
		case OPT_MEMORY:
			if (qsnap_parse_size(optarg, &def.memory, &err) < 0) {
				rc = cli_usage_error("init", "--memory: %s", err.msg);
				goto out;
			}
			break;
		case OPT_SMP:
			if ((n = cli_number("init", "--smp", optarg)) < 1) {
				if (n == 0)
					cli_usage_error("init", "--smp must be at least 1");
				goto out;
			}
			def.smp = (unsigned)n;
			break;
		case OPT_MACHINE: field = &def.machine; break;
		case OPT_ACCEL: field = &def.accel; break;
		case OPT_CPU: field = &def.cpu; break;
		case OPT_KERNEL: field = &def.kernel; break;
		case OPT_INITRD: field = &def.initrd; break;
		case OPT_APPEND: field = &def.append; break;
		case OPT_QEMU: field = &def.qemu; break;
		case OPT_NO_SERIAL:
			def.serial = false;
			break;
		case OPT_RAM_MODE:
			if (qsnap_ram_mode_parse(optarg, &def.ram_mode) < 0) {
				rc = cli_usage_error("init", "--ram-mode is stream or shared, not '%s'", optarg);
				goto out;
			}
			break;
		case OPT_RAM_DIR: field = &def.ram_dir; break;
		default:
			goto out;
		}
		if (field) {
			free(*field);
			*field = strdup(optarg);
		}
	}
	/* getopt moved VMDIR in front of what followed "--": QEMU's own. */
	if (optind < argc && argv[optind][0] != '-')
		dir = argv[optind++];
	if (!dir) {
		rc = cli_usage_error("init", "VMDIR is missing");
		goto out;
	}
	def.extra = calloc((size_t)(argc - optind) + 1, sizeof(char *));
	for (int i = optind; i < argc; i++)
		def.extra[def.n_extra++] = strdup(argv[i]);
	if (qsnap_vm_create(dir, &def, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	printf("created %s\n", dir);
	rc = EXIT_OK;
out:
	qsnap_def_free(&def);
	return rc;
}
