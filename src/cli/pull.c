/* SPDX-License-Identifier: MIT */
/* qsnap pull: a snapshot from an OCI registry. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap pull REF VMDIR [--insecure] [--quiet] [--json]\n"
	       "\n"
	       "Pull the snapshot at REF (host[:port]/repository[:tag], the tag defaults\n"
	       "to 'latest') that 'qsnap push' wrote. A new (or empty) VMDIR becomes a VM\n"
	       "directory; it appears only when everything has arrived and been checked.\n"
	       "A VMDIR that is a VM already gets the snapshot added when its base images\n"
	       "are the snapshot's (checked by digest), downloading only the layers and\n"
	       "machine state it lacks. Every blob is checked against its sha256 as it\n"
	       "downloads; on failure nothing is left. Then: 'qsnap restore VMDIR NAME'\n"
	       "or 'qsnap start VMDIR --from NAME'.\n"
	       "\n"
	       "  --insecure         plain HTTP (a registry on localhost); else HTTPS\n"
	       "  --json             the result as JSON: name, digest, blobs, downloaded, ...\n"
	       "  --lock-timeout S   an existing VMDIR: how long to wait for its lock (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

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
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							       JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int cmd_pull(int argc, char **argv)
{
	enum { OPT_INSECURE = 256, OPT_JSON, OPT_LOCK };
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"quiet", no_argument, NULL, 'q'},
		{"insecure", no_argument, NULL, OPT_INSECURE},
		{"json", no_argument, NULL, OPT_JSON},
		{"lock-timeout", required_argument, NULL, OPT_LOCK},
		{0},
	};
	struct cli_progress cp;
	qsnap_pull_stats st;
	qsnap_pull_opts po = {.progress = cli_progress, .userdata = &cp, .stats = &st,
			      .lock_timeout = DEFAULT_LOCK_TIMEOUT};
	qsnap_error err = {0};
	bool quiet = false, json = false;
	char *name = NULL;
	double t0;
	int c;

	while ((c = cli_getopt("pull", argc, argv, "hq", opts)) != -1) {
		switch (c) {
		case 'h':
			help();
			return EXIT_OK;
		case 'q':
			quiet = true;
			break;
		case OPT_INSECURE:
			po.insecure = true;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_LOCK: {
			long l = cli_number("pull", "--lock-timeout", optarg);

			if (l < 0)
				return EXIT_USAGE;
			po.lock_timeout = (int)l;
			break;
		}
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("pull", "expected REF VMDIR");
	cli_progress_init(&cp, quiet || json);
	t0 = cli_clock();
	if (qsnap_pull(argv[optind], argv[optind + 1], &po, &name, &err) < 0)
		return cli_fail(&err);
	if (json) {
		print_json(name, &st);
	} else if (!quiet) {
		char got[32];

		cli_format_size(got, sizeof(got), st.downloaded_bytes);
		printf("pulled snapshot %s into %s in %.2f s: downloaded %zu of %zu blobs (%s)\n"
		       "restore it with: qsnap restore %s %s\n",
		       name, argv[optind + 1], cli_clock() - t0, st.downloaded, st.blobs, got,
		       argv[optind + 1], name);
	}
	free(name);
	return EXIT_OK;
}
