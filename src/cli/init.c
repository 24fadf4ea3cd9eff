/* SPDX-License-Identifier: MIT */
/* qsnap init: create a VM directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The definition --drive and --memory fill in as they are parsed (static:
 * reachable until the process ends, also after a usage error). */
static qsnap_def def;
static bool def_ready;
static const char *machine, *accel, *cpu, *kernel, *initrd, *append, *qemu, *ram_dir;
static int smp = -1, ram_mode = -1;
static bool no_serial;

static qsnap_def *the_def(void)
{
	if (!def_ready)
		qsnap_def_init(&def);
	def_ready = true;
	return &def;
}

static int add_drive(struct cli *c, const char *spec)
{
	return qsnap_def_add_drive(the_def(), spec, &c->err) < 0 ? CLI_USAGE : 0;
}

static int set_memory(struct cli *c, const char *size)
{
	qsnap_error err = {0};

	if (qsnap_parse_size(size, &the_def()->memory, &err) < 0)
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

static void set(char **field, const char *value)
{
	if (value) {
		free(*field);
		*field = strdup(value);
	}
}

static int run(struct cli *c)
{
	qsnap_def *d = the_def();
	int r = 0;

	/* getopt moved VMDIR in front of what followed "--": QEMU's own. */
	if (c->argv[0][0] == '-') {
		r = cli_usage(c, "VMDIR is missing");
		goto out;
	}
	set(&d->machine, machine);
	set(&d->accel, accel);
	set(&d->cpu, cpu);
	set(&d->kernel, kernel);
	set(&d->initrd, initrd);
	set(&d->append, append);
	set(&d->qemu, qemu);
	set(&d->ram_dir, ram_dir);
	if (smp > 0)
		d->smp = (unsigned)smp;
	if (ram_mode >= 0)
		d->ram_mode = (qsnap_ram_mode)ram_mode;
	if (no_serial)
		d->serial = false;
	d->extra = calloc((size_t)c->argc, sizeof(char *));
	for (int i = 1; i < c->argc; i++)
		d->extra[d->n_extra++] = strdup(c->argv[i]);
	if (qsnap_vm_create(c->argv[0], d, &c->err) < 0) {
		r = CLI_FAILED;
		goto out;
	}
	printf("created %s\n", c->argv[0]);
out:
	qsnap_def_free(d);
	def_ready = false;
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
