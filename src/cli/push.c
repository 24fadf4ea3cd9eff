/* SPDX-License-Identifier: MIT */
/* qsnap push: a snapshot to an OCI registry. */
#include <json-c/json.h>
#include <stdio.h>

#include "cli.h"

static bool insecure;

static const struct cli_opt opts[] = {
	{"insecure", 0, CLI_FLAG, NULL, "plain HTTP (a registry on localhost); else HTTPS",
	 .target = &insecure},
	{0},
};

static void print_json(const char *ref, const qsnap_push_stats *st)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ref", json_object_new_string(ref));
	json_object_object_add(o, "digest", json_object_new_string(st->digest));
	json_object_object_add(o, "blobs", json_object_new_int64((int64_t)st->blobs));
	json_object_object_add(o, "uploaded", json_object_new_int64((int64_t)st->uploaded));
	json_object_object_add(o, "uploaded_bytes", json_object_new_int64((int64_t)st->uploaded_bytes));
	json_object_object_add(o, "present", json_object_new_int64((int64_t)st->present));
	json_object_object_add(o, "present_bytes", json_object_new_int64((int64_t)st->present_bytes));
	json_object_object_add(o, "zero_chunks", json_object_new_int64((int64_t)st->zero_chunks));
	json_object_object_add(o, "zero_bytes", json_object_new_int64((int64_t)st->zero_bytes));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)st->bytes));
	cli_print_json(o);
}

static int run(struct cli *c)
{
	qsnap_push_stats st = QSNAP_PUSH_STATS_INIT;
	qsnap_push_opts po = {.size = sizeof(po), .insecure = insecure, .progress = cli_progress,
			      .userdata = &c->progress, .stats = &st};
	char up[32], all[32];

	cli_progress_init(&c->progress, c->quiet || c->json);
	if (qsnap_vm_push(c->vm, c->argv[1], c->argv[2], &po, &c->err) < 0)
		return CLI_FAILED;
	if (c->json) {
		print_json(c->argv[2], &st);
	} else if (!c->quiet) {
		cli_format_size(up, sizeof(up), st.uploaded_bytes);
		cli_format_size(all, sizeof(all), st.bytes);
		printf("pushed %s to %s in %.2f s: uploaded %zu of %zu blobs (%s of %s), %zu zero chunks left out\n"
		       "%s\n",
		       c->argv[1], c->argv[2], cli_clock() - c->started, st.uploaded, st.blobs, up,
		       all, st.zero_chunks, st.digest);
	}
	return 0;
}

const struct cli_cmd cli_cmd_push = {
	.name = "push",
	.summary = "push a snapshot to an OCI registry",
	.args = "VMDIR NAME REF",
	.min_args = 3,
	.max_args = 3,
	.about = "Push snapshot NAME to an OCI registry as an artifact; REF is\n"
		 "host[:port]/repository[:tag] (the tag defaults to NAME). The drives'\n"
		 "base images and layers go as they are, so snapshots of one VM share them\n"
		 "in the registry; the machine state, shared RAM and a differential\n"
		 "snapshot's older deltas go in 32 MiB chunks, all-zero chunks not at\n"
		 "all. Only blobs the registry lacks are uploaded.\n"
		 "The VM may keep running. Credentials: QSNAP_REGISTRY_USER and\n"
		 "QSNAP_REGISTRY_PASSWORD, or ~/.docker/config.json ($DOCKER_CONFIG).\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT | CLI_QUIET | CLI_JSON,
	.json_help = "the result as JSON: digest, blobs, uploaded, bytes, ...",
	.vm = CLI_VM_LOCKED,
	.run = run,
};
