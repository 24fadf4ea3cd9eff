/* SPDX-License-Identifier: MIT */
/* qsnap pull: a snapshot from an OCI registry. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static bool insecure, trust_config;
static const char *qemu;

static const struct cli_opt opts[] = {
	{"insecure", 0, CLI_FLAG, NULL, "plain HTTP (a registry on localhost); else HTTPS",
	 .target = &insecure},
	{"qemu", 0, CLI_STRING, "BINARY", "the QEMU that runs the snapshot (default qemu-system-x86_64)",
	 .target = &qemu},
	{"trust-config", 0, CLI_FLAG, NULL,
	 "keep the artifact's qemu, ram_dir, extra_args and machine type\n(only from a source you trust: they run on this host)",
	 .target = &trust_config},
	{0},
};

static void print_json(const char *name, const qsnap_pull_stats *st)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "digest", json_object_new_string(st->digest));
	json_object_object_add(o, "blobs", json_object_new_int64((int64_t)st->blobs));
	json_object_object_add(o, "downloaded", json_object_new_int64((int64_t)st->downloaded));
	json_object_object_add(o, "downloaded_bytes",
			       json_object_new_int64((int64_t)st->downloaded_bytes));
	json_object_object_add(o, "reused", json_object_new_int64((int64_t)st->reused));
	json_object_object_add(o, "reused_bytes", json_object_new_int64((int64_t)st->reused_bytes));
	cli_print_json(o);
}

static int run(struct cli *c)
{
	qsnap_pull_stats st = QSNAP_PULL_STATS_INIT;
	qsnap_pull_opts po = {.size = sizeof(po), .insecure = insecure, .progress = cli_progress,
			      .userdata = &c->progress, .stats = &st,
			      .lock_timeout = c->lock_timeout > 0 ? c->lock_timeout : QSNAP_NO_WAIT,
			      .trust_config = trust_config, .qemu = qemu, .notice = cli_notice};
	const char *dir = c->argv[1];
	char *name = NULL;
	char got[32];

	cli_progress_init(&c->progress, c->quiet || c->json);
	if (qsnap_pull(c->argv[0], dir, &po, &name, &c->err) < 0)
		return CLI_FAILED;
	if (c->json) {
		print_json(name, &st);
	} else if (!c->quiet) {
		cli_format_size(got, sizeof(got), st.downloaded_bytes);
		printf("pulled snapshot %s into %s in %.2f s: downloaded %zu of %zu blobs (%s)\n"
		       "%s\n"
		       "restore it with: qsnap restore %s %s\n",
		       name, dir, cli_clock() - c->started, st.downloaded, st.blobs, got, st.digest,
		       dir, name);
	}
	qsnap_free(name);
	return 0;
}

const struct cli_cmd cli_cmd_pull = {
	.name = "pull",
	.summary = "pull a snapshot from an OCI registry",
	.args = "REF VMDIR",
	.min_args = 2,
	.max_args = 2,
	.about = "Pull the snapshot at REF (host[:port]/repository[:tag], the tag defaults\n"
		 "to 'latest', or host[:port]/repository@sha256:DIGEST for exactly the\n"
		 "manifest that push printed, its digest checked) that 'qsnap push' wrote.\n"
		 "A new (or empty) VMDIR becomes a VM directory; it appears only when\n"
		 "everything has arrived and been checked.\n"
		 "A VMDIR that is a VM already gets the snapshot added when its base images\n"
		 "are the snapshot's (checked by digest), downloading only the layers and\n"
		 "machine state it lacks. Every blob is checked against its sha256 as it\n"
		 "downloads; on failure nothing is left. Then: 'qsnap restore VMDIR NAME'\n"
		 "or 'qsnap start VMDIR --from NAME'.\n"
		 "An artifact is data: its vm.json may not name a QEMU, a RAM folder, extra\n"
		 "QEMU arguments or an unusual machine type unless you give --trust-config;\n"
		 "what was dropped (or taken) is said in one line.\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT | CLI_QUIET | CLI_JSON,
	.json_help = "the result as JSON: name, digest, blobs, downloaded, ...",
	.vm = CLI_VM_NONE,
	.run = run,
};
