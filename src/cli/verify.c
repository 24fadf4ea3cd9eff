/* SPDX-License-Identifier: MIT */
/* qsnap verify: are a snapshot's files all there and intact? */
#include <json-c/json.h>
#include <stdio.h>

#include "cli.h"

static json_object *entries(qsnap_verify_problem *const *list, size_t n, const char *key)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		json_object *p = json_object_new_object();

		json_object_object_add(p, "snapshot", json_object_new_string(list[i]->snapshot));
		json_object_object_add(p, "file", json_object_new_string(list[i]->file));
		json_object_object_add(p, key, json_object_new_string(list[i]->what));
		json_object_array_add(a, p);
	}
	return a;
}

static void print_json(const qsnap_verify_report *rep)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(rep->n_problems == 0));
	json_object_object_add(o, "snapshots", json_object_new_int64((int64_t)rep->n_snapshots));
	json_object_object_add(o, "files", json_object_new_int64((int64_t)rep->n_files));
	json_object_object_add(o, "problems", entries(rep->problems, rep->n_problems, "problem"));
	json_object_object_add(o, "notes", entries(rep->notes, rep->n_notes, "note"));
	cli_print_json(o);
}

static void print_text(struct cli *c, const qsnap_verify_report *rep)
{
	const char *dir = qsnap_vm_dir(c->vm);

	for (size_t i = 0; i < rep->n_problems; i++)
		printf("%s: %s (snapshot '%s')\n", rep->problems[i]->file, rep->problems[i]->what,
		       rep->problems[i]->snapshot);
	for (size_t i = 0; i < rep->n_notes; i++)
		printf("%s: note: %s (snapshot '%s')\n", rep->notes[i]->file, rep->notes[i]->what,
		       rep->notes[i]->snapshot);
	if (c->quiet || rep->n_problems)
		return;
	if (rep->n_snapshots == 0)
		printf("no snapshots in %s to verify\n", dir);
	else
		printf("verified %zu snapshot%s, %zu files: all intact\n", rep->n_snapshots,
		       rep->n_snapshots == 1 ? "" : "s", rep->n_files);
}

static int run(struct cli *c)
{
	qsnap_verify_opts vo = {.size = sizeof(vo), .progress = cli_progress, .userdata = &c->progress};
	qsnap_verify_report *rep;
	size_t n;

	c->progress.quiet = c->quiet || c->json;
	if (qsnap_vm_verify(c->vm, c->argc == 2 ? c->argv[1] : NULL, &vo, &rep, &c->err) < 0)
		return CLI_FAILED;
	if (c->json)
		print_json(rep);
	else
		print_text(c, rep);
	n = rep->n_problems;
	qsnap_verify_report_free(rep);
	if (n && !c->json)
		return cli_fail(c, "%zu problem%s in %s: the snapshot%s named above cannot be restored as saved",
				n, n == 1 ? "" : "s", qsnap_vm_dir(c->vm), n == 1 ? "" : "s");
	return n ? CLI_FAILED_QUIETLY : 0;
}

const struct cli_cmd cli_cmd_verify = {
	.name = "verify",
	.summary = "check that a snapshot's files are all there and intact",
	.args = "VMDIR [NAME]",
	.min_args = 1,
	.max_args = 2,
	.about = "Check that every file snapshot NAME needs (every snapshot when NAME is left\n"
		 "out) exists and is intact: the machine state and a shared-RAM snapshot's RAM\n"
		 "file against the size and checksum recorded when it was saved, meta.json,\n"
		 "qemu-img check of every layer of its disks, and each disk's chain of backing\n"
		 "files in the qcow2 headers against the one state.json records. Prints one\n"
		 "line per problem, naming the file and what is wrong with it; exits 1 if\n"
		 "there is any. A RAM file saved before qsnap recorded RAM checksums is noted\n"
		 "(\"RAM not checksummed\"), not counted as a problem.\n",
	.common = CLI_JSON | CLI_LOCK_TIMEOUT | CLI_QUIET,
	.json_help = "the result as JSON: {\"ok\", \"snapshots\", \"files\", \"problems\", \"notes\"}",
	.quiet_help = "no progress, and nothing printed when all is well",
	.vm = CLI_VM_LOCKED,
	.run = run,
};
