/* SPDX-License-Identifier: MIT */
/* QEMU's command line for a VM: a pure function of the definition, the
 * drives' chains and how QEMU starts (tests/unit/test_plan.c). */
#include <string.h>

#include "qemu/qemu.h"

static const char *const iface_device[] = {
	[QSNAP_IF_VIRTIO] = "virtio-blk-pci",
	[QSNAP_IF_SCSI] = "scsi-hd",
	[QSNAP_IF_IDE] = "ide-hd",
};

/* A value inside a QEMU option list: commas are doubled. */
static char *opt_escape(const char *s)
{
	char *out = xmalloc(strlen(s) * 2 + 1), *o = out;

	for (; *s; s++) {
		*o++ = *s;
		if (*s == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

char *qemu_layer_node(const char *layer_path)
{
	const char *dash = strrchr(layer_path, '-');

	/* layers/<drive>-<seq>.qcow2 -> n<seq>: unique in one QEMU, and short
	 * enough for QEMU's 31-character node names. */
	return xasprintf("n%lu", dash ? strtoul(dash + 1, NULL, 10) : 0UL);
}

char *qemu_base_node(size_t index)
{
	return xasprintf("base%zu", index);
}

/* The node the guest's device reads: the chain's top, or the base image. */
static char *top_node(const struct qemu_cmd *c, size_t idx)
{
	const struct qemu_chain *ch = &c->chains[idx];

	return ch->n ? qemu_layer_node(ch->layers[ch->n - 1]) : qemu_base_node(idx);
}

/* -blockdev for every image of a drive's chain, each with a node name we
 * know (chain_node_name, chain_base_node), so that block jobs can name any
 * of them: the base image and all layers but the top read-only. */
static void push_blockdev(char ***argv, size_t *n, const struct qemu_cmd *c, size_t idx)
{
	const qsnap_drive_def *d = &c->def->drives[idx];
	const struct qemu_chain *ch = &c->chains[idx];
	_cleanup_free_ char *base = opt_escape(d->path), *below = qemu_base_node(idx);

	strv_push(argv, n, "-blockdev");
	strv_pushf(argv, n, "driver=%s,node-name=%s,read-only=on,file.driver=file,file.filename=%s",
		   d->format, below, base);
	for (size_t i = 0; i < ch->n; i++) {
		char *node = qemu_layer_node(ch->layers[i]);
		bool ro = c->readonly_disks || i + 1 < ch->n;

		strv_push(argv, n, "-blockdev");
		strv_pushf(argv, n, "driver=qcow2,node-name=%s,%sfile.driver=file,file.filename=%s,backing=%s",
			   node, ro ? "read-only=on," : "", ch->layers[i], below);
		free(below);
		below = node;
	}
}

char **qemu_argv(const struct qemu_cmd *c)
{
	const qsnap_def *def = c->def;
	char **argv = NULL;
	size_t n = 0, n_pflash = 0;
	bool scsi = false;
	_cleanup_free_ char *accel = xstrdup(def->accel);
	char *save = NULL;
	_cleanup_free_ char *machine = NULL;

	strv_push(&argv, &n, def->qemu ? def->qemu : "qemu-system-x86_64");
	/* Only what we ask for: no default NIC, VGA, monitor or config file. */
	strv_push(&argv, &n, "-nodefaults");
	strv_push(&argv, &n, "-no-user-config");
	strv_push(&argv, &n, "-display");
	strv_push(&argv, &n, "none");
	/* Every accelerator in the list, tried by QEMU in order. */
	for (char *a = strtok_r(accel, ":", &save); a; a = strtok_r(NULL, ":", &save)) {
		strv_push(&argv, &n, "-accel");
		strv_push(&argv, &n, a);
	}
	/* Guest RAM is always the backend "ram0", so that its RAM block has the
	 * same name in every mode and a snapshot loads into either. */
	machine = c->machine ? xasprintf("%s,memory-backend=ram0", c->machine)
			     : xstrdup("memory-backend=ram0");
	for (size_t i = 0; i < def->n_drives; i++) {
		if (def->drives[i].iface != QSNAP_IF_PFLASH)
			continue;
		_cleanup_free_ char *node = top_node(c, i);
		char *m = xasprintf("%s,pflash%zu=%s", machine, n_pflash++, node);
		free(machine);
		machine = m;
	}
	strv_push(&argv, &n, "-machine");
	strv_push(&argv, &n, machine);
	if (def->cpu) {
		strv_push(&argv, &n, "-cpu");
		strv_push(&argv, &n, def->cpu);
	}
	strv_push(&argv, &n, "-smp");
	strv_pushf(&argv, &n, "%u", def->smp);
	strv_push(&argv, &n, "-m");
	strv_pushf(&argv, &n, "%lluM", (unsigned long long)(def->memory >> 20));
	strv_push(&argv, &n, "-object");
	if (c->ram_file) {
		_cleanup_free_ char *path = opt_escape(c->ram_file);

		strv_pushf(&argv, &n, "memory-backend-file,id=ram0,size=%lluM,mem-path=%s,share=%s%s",
			   (unsigned long long)(def->memory >> 20), path, c->ram_share ? "on" : "off",
			   c->ram_readonly ? ",readonly=on,rom=off" : "");
	} else {
		_cleanup_free_ char *prealloc =
			c->ram_prealloc ? xasprintf(",prealloc=on,prealloc-threads=%u", c->ram_prealloc)
					: xstrdup("");

		strv_pushf(&argv, &n, "memory-backend-ram,id=ram0,size=%lluM%s",
			   (unsigned long long)(def->memory >> 20), prealloc);
	}
	strv_push(&argv, &n, "-qmp");
	strv_pushf(&argv, &n, "unix:%s,server=on,wait=off", c->qmp_socket);
	strv_push(&argv, &n, "-pidfile");
	strv_push(&argv, &n, c->pid_file);
	if (def->serial) {
		/* The console relay's socket pair, passed as fd 3 (console.c). */
		strv_push(&argv, &n, "-chardev");
		strv_push(&argv, &n, "socket,id=serial0,fd=" QEMU_CONSOLE_FD_STR);
		strv_push(&argv, &n, "-serial");
		strv_push(&argv, &n, "chardev:serial0");
	}
	if (def->kernel) {
		strv_push(&argv, &n, "-kernel");
		strv_push(&argv, &n, def->kernel);
	}
	if (def->initrd) {
		strv_push(&argv, &n, "-initrd");
		strv_push(&argv, &n, def->initrd);
	}
	if (def->append) {
		strv_push(&argv, &n, "-append");
		strv_push(&argv, &n, def->append);
	}
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];

		push_blockdev(&argv, &n, c, i);
		if (d->iface == QSNAP_IF_PFLASH)
			continue;
		_cleanup_free_ char *node = top_node(c, i);
		if (d->iface == QSNAP_IF_SCSI && !scsi) {
			strv_push(&argv, &n, "-device");
			strv_push(&argv, &n, "virtio-scsi-pci,id=scsi0");
			scsi = true;
		}
		strv_push(&argv, &n, "-device");
		strv_pushf(&argv, &n, "%s,drive=%s,id=%s", iface_device[d->iface], node, d->id);
	}
	/* The vCPUs start only when qsnap says so (cont), after it is connected. */
	strv_push(&argv, &n, "-S");
	if (c->incoming) {
		strv_push(&argv, &n, "-incoming");
		strv_push(&argv, &n, "defer");
	}
	for (size_t i = 0; i < def->n_extra; i++)
		strv_push(&argv, &n, def->extra[i]);
	return argv;
}

