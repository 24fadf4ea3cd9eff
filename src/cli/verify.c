/* SPDX-License-Identifier: MIT */
/* qsnap verify: are a snapshot's files all there and intact? */
#include <json-c/json.h>
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap verify VMDIR [NAME] [--json] [--quiet]\n"
	       "\n"
	       "Check that every file snapshot NAME needs (every snapshot when NAME is left\n"
	       "out) exists and is intact: the machine state against the size and checksum\n"
	       "recorded when it was saved, meta.json, qemu-img check of every layer of its\n"
	       "disks, and each disk's chain of backing files in the qcow2 headers against\n"
	       "the one state.json records. Prints one line per problem, naming the file\n"
	       "and what is wrong with it; exits 1 if there is any.\n"
	       "\n"
	       "  --json             the result as JSON: {\"ok\", \"snapshots\", \"files\", \"problems\"}\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress, and nothing printed when all is well\n");
}

static void print_json(const qsnap_verify_report *rep)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();

	json_object_object_add(o, "ok", json_object_new_boolean(rep->n_problems == 0));
	json_object_object_add(o, "snapshots", json_object_new_int64((int64_t)rep->n_snapshots));
	json_object_object_add(o, "files", json_object_new_int64((int64_t)rep->n_files));
	for (size_t i = 0; i < rep->n_problems; i++) {
		const qsnap_verify_problem *q = &rep->problems[i];
		json_object *p = json_object_new_object();

		json_object_object_add(p, "snapshot", json_object_new_string(q->snapshot));
		json_object_object_add(p, "file", json_object_new_string(q->file));
		json_object_object_add(p, "problem", json_object_new_string(q->what));
		json_object_array_add(a, p);
	}
	json_object_object_add(o, "problems", a);
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int cmd_verify(int argc, char **argv)
{
	enum { OPT_JSON = 256, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"json", no_argument, NULL, OPT_JSON},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_verify_opts vo = {.progress = cli_progress, .userdata = &cp};
	qsnap_verify_report rep;
	qsnap_error err = {0};
	qsnap_vm *vm;
	long lock = DEFAULT_LOCK_TIMEOUT;
	bool quiet = false, json = false;
	const char *name;
	int c, rc;

	while ((c = cli_getopt("verify", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_LOCK:
			if ((lock = cli_number("verify", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cli_usage_error("verify", "expected VMDIR [NAME]");
	name = argc - optind == 2 ? argv[optind + 1] : NULL;
	cli_progress_init(&cp, quiet || json);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	if (qsnap_vm_verify(vm, name, &vo, &rep, &err) < 0) {
		qsnap_vm_close(vm);
		return cli_fail(&err);
	}
	if (json) {
		print_json(&rep);
	} else {
		for (size_t i = 0; i < rep.n_problems; i++)
			printf("%s: %s (snapshot '%s')\n", rep.problems[i].file, rep.problems[i].what,
			       rep.problems[i].snapshot);
		if (rep.n_problems)
			fprintf(stderr, "qsnap: %zu problem%s in %s: the snapshot%s named above cannot be restored as saved\n",
				rep.n_problems, rep.n_problems == 1 ? "" : "s", qsnap_vm_dir(vm),
				rep.n_problems == 1 ? "" : "s");
		else if (!quiet && rep.n_snapshots == 0)
			printf("no snapshots in %s to verify\n", qsnap_vm_dir(vm));
		else if (!quiet)
			printf("verified %zu snapshot%s, %zu files: all intact\n", rep.n_snapshots,
			       rep.n_snapshots == 1 ? "" : "s", rep.n_files);
	}
	rc = rep.n_problems ? EXIT_FAIL : EXIT_OK;
	qsnap_verify_report_free(&rep);
	qsnap_vm_close(vm);
	return rc;
}
