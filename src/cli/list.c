/* SPDX-License-Identifier: MIT */
/* qsnap list: the snapshots of a VM. */
#include <json-c/json.h>
#include <stdio.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap list VMDIR [--json]\n"
	       "\n"
	       "List the snapshots: name, parent, creation time, mode, size on disk (machine\n"
	       "state and the layers the snapshot froze), whether the VM was running, and\n"
	       "(marked *) the one the current state descends from.\n"
	       "\n"
	       "  --json   the same as a JSON array\n");
}

int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	qsnap_error err = {0};
	qsnap_snapshot_info *list;
	qsnap_vm *vm;
	size_t n;
	bool json = false;
	int c, rc;

	while ((c = cli_getopt("list", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'j':
			json = true;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("list", optind < argc ? "too many arguments" : "VMDIR is missing");
	rc = cli_open_readonly(argv[optind], &vm);
	if (rc)
		return rc;
	if (qsnap_vm_list(vm, &list, &n, &err) < 0) {
		qsnap_vm_close(vm);
		return cli_fail(&err);
	}
	if (json) {
		json_object *a = json_object_new_array();

		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "name", json_object_new_string(list[i].name));
			json_object_object_add(o, "parent", list[i].parent ? json_object_new_string(list[i].parent) : NULL);
			json_object_object_add(o, "created", json_object_new_int64(list[i].created));
			json_object_object_add(o, "mode", json_object_new_string(list[i].mode));
			json_object_object_add(o, "compressed", json_object_new_boolean(list[i].compressed));
			json_object_object_add(o, "size", json_object_new_int64((int64_t)list[i].size));
			json_object_object_add(o, "was_running", json_object_new_boolean(list[i].was_running));
			json_object_object_add(o, "current", json_object_new_boolean(list[i].current));
			json_object_array_add(a, o);
		}
		printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY));
		json_object_put(a);
	} else if (n == 0) {
		printf("no snapshots in %s (make one with qsnap save)\n", qsnap_vm_dir(vm));
	} else {
		printf("  %-20s %-20s %-19s %-7s %10s  %s\n", "NAME", "PARENT", "CREATED", "MODE",
		       "SIZE", "VM WAS");
		for (size_t i = 0; i < n; i++) {
			char when[32], size[32];
			time_t t = (time_t)list[i].created;
			struct tm tm;

			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
			cli_format_size(size, sizeof(size), list[i].size);
			printf("%s %-20s %-20s %-19s %-7s %10s  %s%s\n", list[i].current ? "*" : " ",
			       list[i].name, list[i].parent ? list[i].parent : "-", when,
			       list[i].mode, size, list[i].was_running ? "running" : "paused",
			       list[i].compressed ? ", zstd" : "");
		}
	}
	qsnap_snapshot_info_free(list, n);
	qsnap_vm_close(vm);
	return rc;
}
