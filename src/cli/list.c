/* SPDX-License-Identifier: MIT */
/* qsnap list: the snapshots of a VM. */
#include <json-c/json.h>
#include <stdio.h>
#include <time.h>

#include "cli.h"

static int run(struct cli *c)
{
	qsnap_snapshot_info **list;
	size_t n;

	if (qsnap_vm_list(c->vm, &list, &n, &c->err) < 0)
		return CLI_FAILED;
	if (c->json) {
		json_object *a = json_object_new_array();

		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "name", json_object_new_string(list[i]->name));
			json_object_object_add(o, "parent", list[i]->parent ? json_object_new_string(list[i]->parent) : NULL);
			json_object_object_add(o, "created", json_object_new_int64(list[i]->created));
			json_object_object_add(o, "mode", json_object_new_string(qsnap_ram_mode_name(list[i]->mode)));
			json_object_object_add(o, "ram_base", list[i]->ram_base ? json_object_new_string(list[i]->ram_base) : NULL);
			json_object_object_add(o, "ram_after", list[i]->ram_after ? json_object_new_string(list[i]->ram_after) : NULL);
			json_object_object_add(o, "ram_deltas", json_object_new_int64((int64_t)list[i]->ram_deltas));
			json_object_object_add(o, "compressed", json_object_new_boolean(list[i]->compressed));
			json_object_object_add(o, "size", json_object_new_int64((int64_t)list[i]->size));
			json_object_object_add(o, "was_running", json_object_new_boolean(list[i]->was_running));
			json_object_object_add(o, "current", json_object_new_boolean(list[i]->current));
			json_object_array_add(a, o);
		}
		cli_print_json(a);
	} else if (n == 0) {
		printf("no snapshots in %s (make one with qsnap save)\n", qsnap_vm_dir(c->vm));
	} else {
		printf("  %-20s %-20s %-19s %-7s %10s  %s\n", "NAME", "PARENT", "CREATED", "MODE",
		       "SIZE", "VM WAS");
		for (size_t i = 0; i < n; i++) {
			char when[32], size[32];
			time_t t = (time_t)list[i]->created;
			struct tm tm;

			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
			cli_format_size(size, sizeof(size), list[i]->size);
			printf("%s %-20s %-20s %-19s %-7s %10s  %s%s\n", list[i]->current ? "*" : " ",
			       list[i]->name, list[i]->parent ? list[i]->parent : "-", when,
			       list[i]->ram_base ? "diff" : qsnap_ram_mode_name(list[i]->mode), size, list[i]->was_running ? "running" : "paused",
			       list[i]->compressed ? ", zstd" : "");
			if (list[i]->ram_after)
				printf("  %-20s RAM: what changed since %s (%zu older delta%s over %s's RAM file)\n",
				       "", list[i]->ram_after, list[i]->ram_deltas,
				       list[i]->ram_deltas == 1 ? "" : "s", list[i]->ram_base);
			else if (list[i]->ram_base)
				printf("  %-20s RAM builds on %s\n", "", list[i]->ram_base);
		}
	}
	qsnap_snapshot_info_free(list, n);
	return 0;
}

const struct cli_cmd cli_cmd_list = {
	.name = "list",
	.summary = "list the snapshots",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "List the snapshots: name, parent, creation time, mode, size on disk (machine\n"
		 "state and the layers the snapshot froze), whether the VM was running, and\n"
		 "(marked *) the one the current state descends from. A differential snapshot\n"
		 "(mode diff) names the snapshot whose RAM file it builds on and the delta it\n"
		 "follows, if any; its size is its own.\n",
	.common = CLI_JSON,
	.json_help = "the same as a JSON array",
	.vm = CLI_VM_READONLY,
	.run = run,
};
