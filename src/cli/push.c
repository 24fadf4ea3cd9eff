/* SPDX-License-Identifier: MIT */
/* qsnap push: a snapshot to an OCI registry. */
#include <json-c/json.h>
#include <stdio.h>

#include "cli.h"

static void help(void)
{
	printf("Usage: qsnap push VMDIR NAME REF [--insecure] [--quiet] [--json]\n"
	       "\n"
	       "Push snapshot NAME to an OCI registry as an artifact; REF is\n"
	       "host[:port]/repository[:tag] (the tag defaults to NAME). The drives'\n"
	       "base images and layers go as they are, so snapshots of one VM share them\n"
	       "in the registry; the machine state and shared RAM go in 32 MiB chunks,\n"
	       "all-zero chunks not at all. Only blobs the registry lacks are uploaded.\n"
	       "The VM may keep running. Credentials: QSNAP_REGISTRY_USER and\n"
	       "QSNAP_REGISTRY_PASSWORD, or ~/.docker/config.json ($DOCKER_CONFIG).\n"
	       "\n"
	       "  --insecure         plain HTTP (a registry on localhost); else HTTPS\n"
	       "  --json             the result as JSON: digest, blobs, uploaded, bytes, ...\n"
	       "  --lock-timeout S   how long to wait for another qsnap command on VMDIR (default 600)\n"
	       "  -q, --quiet        no progress and no summary\n");
}

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
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							       JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int cmd_push(int argc, char **argv)
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
	qsnap_push_stats st;
	qsnap_push_opts po = {.progress = cli_progress, .userdata = &cp, .stats = &st};
	qsnap_error err = {0};
	long lock = DEFAULT_LOCK_TIMEOUT;
	bool quiet = false, json = false;
	qsnap_vm *vm;
	double t0;
	int c, rc;

	while ((c = cli_getopt("push", argc, argv, "hq", opts)) != -1) {
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
		case OPT_LOCK:
			if ((lock = cli_number("push", "--lock-timeout", optarg)) < 0)
				return EXIT_USAGE;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 3)
		return cli_usage_error("push", "expected VMDIR NAME REF");
	cli_progress_init(&cp, quiet || json);
	rc = cli_open(argv[optind], (int)lock, &vm);
	if (rc)
		return rc;
	t0 = cli_clock();
	if (qsnap_vm_push(vm, argv[optind + 1], argv[optind + 2], &po, &err) < 0) {
		rc = cli_fail(&err);
	} else if (json) {
		print_json(argv[optind + 2], &st);
	} else if (!quiet) {
		char up[32], all[32];

		cli_format_size(up, sizeof(up), st.uploaded_bytes);
		cli_format_size(all, sizeof(all), st.bytes);
		printf("pushed %s to %s in %.2f s: uploaded %zu of %zu blobs (%s of %s), %zu zero chunks left out\n"
		       "%s\n",
		       argv[optind + 1], argv[optind + 2], cli_clock() - t0, st.uploaded, st.blobs, up,
		       all, st.zero_chunks, st.digest);
	}
	qsnap_vm_close(vm);
	return rc;
}
