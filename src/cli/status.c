/* SPDX-License-Identifier: MIT */
/* qsnap status: is the VM running, its drives and their layer chains. */
#include <json-c/json.h>
#include <stdio.h>

#include "cli.h"

static json_object *bg_json(const qsnap_background_save *bg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(bg->name));
	if (bg->running) {
		json_object_object_add(o, "phase", bg->phase ? json_object_new_string(bg->phase) : NULL);
		json_object_object_add(o, "done", json_object_new_int64((int64_t)bg->done));
		json_object_object_add(o, "total", json_object_new_int64((int64_t)bg->total));
		json_object_object_add(o, "elapsed", json_object_new_double(bg->elapsed));
		json_object_object_add(o, "pid", json_object_new_int(bg->pid));
	} else {
		json_object_object_add(o, "ok", json_object_new_boolean(bg->ok));
		if (bg->error)
			json_object_object_add(o, "error", json_object_new_string(bg->error));
		json_object_object_add(o, "ended", json_object_new_int64(bg->ended));
	}
	json_object_object_add(o, "running", json_object_new_boolean(bg->running));
	return o;
}

static void print_json(const qsnap_status *st, const char *dir, const qsnap_background_save *bg)
{
	json_object *o = json_object_new_object(), *drives = json_object_new_array();

	json_object_object_add(o, "vm", json_object_new_string(dir));
	json_object_object_add(o, "state", json_object_new_string(qsnap_run_state_name(st->state)));
	if (st->qemu_status)
		json_object_object_add(o, "qemu_status", json_object_new_string(st->qemu_status));
	json_object_object_add(o, "pid", st->pid ? json_object_new_int(st->pid) : NULL);
	json_object_object_add(o, "current", st->current ? json_object_new_string(st->current) : NULL);
	json_object_object_add(o, "snapshots", json_object_new_int((int)st->n_snapshots));
	json_object_object_add(o, "ram_mode", json_object_new_string(qsnap_ram_mode_name(st->ram_mode)));
	json_object_object_add(o, "ram_file", st->ram_file ? json_object_new_string(st->ram_file) : NULL);
	json_object_object_add(o, "ram_lazy", json_object_new_boolean(st->ram_lazy));
	for (size_t i = 0; i < st->n_drives; i++) {
		json_object *d = json_object_new_object(), *chain = json_object_new_array();

		json_object_object_add(d, "id", json_object_new_string(st->drives[i]->id));
		json_object_object_add(d, "readonly", json_object_new_boolean(st->drives[i]->readonly));
		for (size_t j = 0; j < st->drives[i]->n_chain; j++)
			json_object_array_add(chain, json_object_new_string(st->drives[i]->chain[j]));
		json_object_object_add(d, "chain", chain);
		json_object_object_add(d, "chain_length",
				       json_object_new_int((int)st->drives[i]->n_chain));
		json_object_array_add(drives, d);
	}
	json_object_object_add(o, "drives", drives);
	json_object_object_add(o, "background_save", bg ? bg_json(bg) : NULL);
	cli_print_json(o);
}

static void print_background(const qsnap_background_save *bg)
{
	if (bg->running) {
		char d[32], t[32];

		cli_format_size(d, sizeof(d), bg->done);
		cli_format_size(t, sizeof(t), bg->total);
		printf("saving:    %s in the background: %s of %s", bg->name, d, bg->total ? t : "?");
		if (bg->total)
			printf(" (%d%%)", (int)(100 * bg->done / bg->total));
		printf("\n");
	} else if (bg->ok) {
		printf("last background save: %s, done\n", bg->name);
	} else {
		printf("last background save: %s FAILED: %s\n", bg->name, bg->error ? bg->error : "?");
	}
}

static void print_text(const qsnap_status *st, const char *dir, const qsnap_background_save *bg)
{
	printf("vm:        %s\n", dir);
	printf("state:     %s", qsnap_run_state_name(st->state));
	if (st->pid)
		printf(" (pid %d, QEMU: %s)", (int)st->pid, st->qemu_status);
	if (st->state == QSNAP_CRASHED)
		printf(" (QEMU is gone; see %s/run/qemu.log; restore a snapshot or start again)", dir);
	printf("\ncurrent:   %s\n", st->current ? st->current : "(no snapshot)");
	printf("snapshots: %zu\n", st->n_snapshots);
	if (bg)
		print_background(bg);
	printf("ram:       %s mode", qsnap_ram_mode_name(st->ram_mode));
	if (st->ram_lazy)
		printf(", mapped copy-on-write from %s (the next save carries RAM in the stream;\n"
		       "           save --diff only what changed since the last restore or --diff save)",
		       st->ram_file);
	else if (st->ram_file)
		printf(", shared file %s (saves copy it; the stream carries device state only)",
		       st->ram_file);
	printf("\n");
	for (size_t i = 0; i < st->n_drives; i++) {
		printf("drive %s%s: %zu in chain\n", st->drives[i]->id,
		       st->drives[i]->readonly ? " (read-only)" : "", st->drives[i]->n_chain);
		for (size_t j = 0; j < st->drives[i]->n_chain; j++)
			printf("  %s %s\n", j + 1 == st->drives[i]->n_chain ? "*" : "-",
			       st->drives[i]->chain[j]);
	}
}

static int run(struct cli *c)
{
	qsnap_status *st;
	qsnap_background_save *bg = NULL;

	if (qsnap_vm_status(c->vm, &st, &c->err) < 0)
		return CLI_FAILED;
	if (qsnap_vm_background_save(c->vm, &bg, &c->err) <= 0)
		bg = NULL;
	if (c->json)
		print_json(st, qsnap_vm_dir(c->vm), bg);
	else
		print_text(st, qsnap_vm_dir(c->vm), bg);
	qsnap_background_save_free(bg);
	qsnap_status_free(st);
	return 0;
}

const struct cli_cmd cli_cmd_status = {
	.name = "status",
	.summary = "show whether the VM runs, its drives and their layer chains",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Show whether the VM runs (running, paused, stopped, or crashed: QEMU is gone\n"
		 "without qsnap stopping it), QEMU's pid, the snapshot the current state\n"
		 "descends from, how RAM is kept, and every drive's layer chain (base image\n"
		 "first).\n",
	.common = CLI_JSON,
	.json_help = "the same as one JSON object",
	.vm = CLI_VM_READONLY,
	.run = run,
};
