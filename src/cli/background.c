/* SPDX-License-Identifier: MIT */
/* A background save (qsnap save --live --no-wait) reports through two files
 * in the VM's run/ directory, which qsnap status reads:
 *   save-progress.json  while it runs: name, bytes done and expected;
 *   save-result.json    when it ended: name, ok, error. */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static char *run_file(qsnap_vm *vm, const char *name)
{
	char *p = NULL;

	if (asprintf(&p, "%s/run/%s", qsnap_vm_dir(vm), name) < 0)
		return NULL;
	return p;
}

/* Replace a small file atomically, so a reader never sees half of it. */
static void write_json(qsnap_vm *vm, const char *name, json_object *o)
{
	char *path = run_file(vm, name), *tmp = NULL;
	FILE *f;

	if (!path || asprintf(&tmp, "%s.tmp", path) < 0)
		goto out;
	f = fopen(tmp, "we");
	if (f) {
		fputs(json_object_to_json_string(o), f);
		if (fclose(f) == 0)
			rename(tmp, path);
	}
out:
	free(tmp);
	free(path);
	json_object_put(o);
}

void bg_progress_begin(struct bg_progress *bp)
{
	char *res = run_file(bp->vm, "save-result.json");

	if (res)
		unlink(res);
	free(res);
	bp->last = -1;
	bg_progress_write(&(qsnap_progress){.phase = "save", .finished = true}, bp);
}

void bg_progress_write(const qsnap_progress *p, void *userdata)
{
	struct bg_progress *bp = userdata;
	json_object *o;

	if (p->elapsed - bp->last < 0.5 && !p->finished)
		return;
	bp->last = p->elapsed;
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(bp->name));
	json_object_object_add(o, "phase", json_object_new_string(p->phase));
	json_object_object_add(o, "done", json_object_new_int64((int64_t)p->done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)p->total));
	json_object_object_add(o, "elapsed", json_object_new_double(p->elapsed));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	write_json(bp->vm, "save-progress.json", o);
}

void bg_progress_end(struct bg_progress *bp, const qsnap_error *err)
{
	json_object *o = json_object_new_object();
	char *prog = run_file(bp->vm, "save-progress.json");

	json_object_object_add(o, "name", json_object_new_string(bp->name));
	json_object_object_add(o, "ok", json_object_new_boolean(err == NULL));
	if (err)
		json_object_object_add(o, "error", json_object_new_string(err->msg));
	json_object_object_add(o, "ended", json_object_new_int64((int64_t)time(NULL)));
	write_json(bp->vm, "save-result.json", o);
	if (prog)
		unlink(prog);
	free(prog);
}

json_object *bg_status(qsnap_vm *vm)
{
	const char *names[] = {"save-progress.json", "save-result.json"};

	for (size_t i = 0; i < 2; i++) {
		char *path = run_file(vm, names[i]);
		json_object *o = path ? json_object_from_file(path) : NULL;

		free(path);
		if (o) {
			json_object_object_add(o, "running", json_object_new_boolean(i == 0));
			return o;
		}
	}
	return NULL;
}
