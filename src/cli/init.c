/* SPDX-License-Identifier: MIT */
/* qsnap init: create a VM directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The definition --drive and --memory fill in as they are parsed (static:
 * reachable until the process ends, also after a usage error). */
static qsnap_def *def;
static const char *machine, *accel, *cpu, *kernel, *initrd, *append, *qemu, *ram_dir;
static int smp = -1, ram_mode = -1;
static bool no_serial;

static qsnap_def *the_def(void)
{
	if (!def && !(def = qsnap_def_new())) {
		fprintf(stderr, "qsnap init: out of memory\n");
		exit(EXIT_FAIL);
	}
	return def;
}

static int add_drive(struct cli *c, const char *spec)
{
	return qsnap_def_set(the_def(), "drive", spec, &c->err) < 0 ? CLI_USAGE : 0;
}

static int set_memory(struct cli *c, const char *size)
{
	qsnap_error err = {0};

	if (qsnap_def_set(the_def(), "memory", size, &err) < 0)
		return cli_usage(c, "--memory: %s", err.msg);
	return 0;
}

static const struct cli_opt opts[] = {
	{"drive", 0, CLI_CALL, "ID=PATH[,OPTIONS]",
	 "a disk (repeatable); ID: a letter, then letters,\n"
	 "digits, - or _; OPTIONS: if=virtio|scsi|ide|pflash,\n"
	 "format=qcow2|raw, readonly",
	 .call = add_drive, .repeat = true},
	{"memory", 0, CLI_CALL, "SIZE", "guest RAM, e.g. 512M, 4G (default 1G)", .call = set_memory},
	{"smp", 0, CLI_NUMBER, "N", "vCPUs (default 1)", .target = &smp, .min = 1},
	{"machine", 0, CLI_STRING, "TYPE", "QEMU machine type, e.g. q35 (default: QEMU's)", .target = &machine},
	{"accel", 0, CLI_STRING, "LIST", "accelerators tried in order (default kvm:tcg)", .target = &accel},
	{"cpu", 0, CLI_STRING, "MODEL", "CPU model (default: QEMU's)", .target = &cpu},
	{"kernel", 0, CLI_STRING, "FILE", "boot this kernel directly", .target = &kernel},
	{"initrd", 0, CLI_STRING, "FILE", "initial ramdisk for --kernel", .target = &initrd},
	{"append", 0, CLI_STRING, "CMDLINE", "kernel command line for --kernel", .target = &append},
	{"qemu", 0, CLI_STRING, "BINARY", "QEMU binary (default qemu-system-x86_64)", .target = &qemu},
	{"no-serial", 0, CLI_FLAG, NULL, "no serial console on VMDIR/run/serial.sock", .target = &no_serial},
	{"ram-mode", 0, CLI_CHOICE, "MODE",
	 "stream: RAM is saved inside QEMU's migration stream (default)\n"
	 "shared: RAM lives in a shared file that qsnap copies itself,\n"
	 "much faster to save and restore (see qsnap restore --lazy)", .target = &ram_mode,
	 .choices = cli_ram_modes},
	{"ram-dir", 0, CLI_STRING, "DIR",
	 "shared mode: where the RAM file lives (default: a private\n"
	 "folder under /dev/shm; a disk or hugetlbfs path also works)", .target = &ram_dir},
	{0},
};

static int set(struct cli *c, const char *key, const char *value)
{
	return value ? qsnap_def_set(the_def(), key, value, &c->err) : 0;
}

static int fill(struct cli *c)
{
	char n[16];

	snprintf(n, sizeof(n), "%d", smp);
	if (set(c, "machine", machine) < 0 || set(c, "accel", accel) < 0 || set(c, "cpu", cpu) < 0 ||
	    set(c, "kernel", kernel) < 0 || set(c, "initrd", initrd) < 0 ||
	    set(c, "append", append) < 0 || set(c, "qemu", qemu) < 0 ||
	    set(c, "ram-dir", ram_dir) < 0 || set(c, "smp", smp > 0 ? n : NULL) < 0 ||
	    set(c, "ram-mode", ram_mode >= 0 ? qsnap_ram_mode_name((qsnap_ram_mode)ram_mode) : NULL) < 0 ||
	    set(c, "serial", no_serial ? "off" : NULL) < 0)
		return CLI_FAILED;
	for (int i = 1; i < c->argc; i++)
		if (set(c, "extra", c->argv[i]) < 0)
			return CLI_FAILED;
	return 0;
}

static int run(struct cli *c)
{
	int r = 0;

	/* getopt moved VMDIR in front of what followed "--": QEMU's own. */
	if (c->argv[0][0] == '-')
		r = cli_usage(c, "VMDIR is missing");
	if (!r)
		r = fill(c);
	if (!r && qsnap_vm_create(c->argv[0], the_def(), &c->err) < 0)
		r = CLI_FAILED;
	if (!r)
		printf("created %s\n", c->argv[0]);
	qsnap_def_free(def);
	def = NULL;
	return r;
}

const struct cli_cmd cli_cmd_init = {
	.name = "init",
	.summary = "create a VM directory from drives, a kernel and settings",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = -1,
	.usage_tail = "[-- QEMU-ARGS...]",
	.about = "Create a VM directory. Base images are never written: every writable drive\n"
		 "gets its own qcow2 layer in VMDIR/layers/. QEMU-ARGS after -- are extra QEMU\n"
		 "arguments, appended as given.\n",
	.opts = opts,
	.run = run,
};
