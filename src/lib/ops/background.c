/* SPDX-License-Identifier: MIT */
/* A save in a background process (qsnap save --live --no-wait): the
 * program qsnap-saver (src/helpers/saver.c), started detached with the
 * VM's lock and directory at fixed descriptors (SAVER_FD_*). It reports
 * through two files in the VM's run/ directory, which any process may read
 * while the save holds the lock:
 *   run/save-progress.json  while it runs: name, phase, bytes done and
 *                           expected, elapsed seconds, pid and start time;
 *   run/save-result.json    when it ended: name, ok, error, ended.
 * A progress file whose process is gone (it was killed) reads as a failed
 * save. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ops/ops.h"

#define PROGRESS_FILE "run/save-progress.json"
#define RESULT_FILE "run/save-result.json"

struct bg {
	qsnap_vm *vm;
	const char *name;
	double last;
	unsigned long long start; /* this process's start time */
};

/* Replace a small file in run/ by rename, so that a reader never sees half
 * of it. Not fsynced: run/ describes the running moment only. */
static void write_run_json(qsnap_vm *vm, const char *path, json_object *o_take)
{
	_cleanup_json_ json_object *o = o_take;
	_cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
	const char *s = json_object_to_json_string(o);
	_cleanup_close_ int fd = openat(vm->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return;
	if (write(fd, s, strlen(s)) == (ssize_t)strlen(s))
		(void)!renameat(vm->dirfd, tmp, vm->dirfd, path);
	else
		unlinkat(vm->dirfd, tmp, 0);
}

static void bg_progress(const qsnap_progress *p, void *userdata)
{
	struct bg *bg = userdata;

	if (p->elapsed - bg->last < 0.5 && !p->finished)
		return;
	bg->last = p->elapsed;
	write_run_json(bg->vm, PROGRESS_FILE,
		       jbuild("name", json_object_new_string(bg->name),
			      "phase", json_object_new_string(p->phase),
			      "done", json_object_new_int64((int64_t)p->done),
			      "total", json_object_new_int64((int64_t)p->total),
			      "elapsed", json_object_new_double(p->elapsed),
			      "pid", json_object_new_int(getpid()), "start_time",
			      json_object_new_int64((int64_t)bg->start), NULL));
}

int background_saver(const char *dir, const char *name, const qsnap_save_opts *opts)
{
	struct bg bg = {.name = name, .last = -1, .start = proc_start_time(getpid())};
	qsnap_save_opts so = *opts;
	qsnap_error err = {0};
	qsnap_vm *vm;
	int r;

	/* The VM as the caller had it, under the lock it handed over. */
	r = vm_adopt(dir, SAVER_FD_DIR, SAVER_FD_LOCK, &vm, &err);
	if (r < 0) {
		helper_failed(SAVER_FD_READY, &err);
		return 1;
	}
	bg.vm = vm;
	unlinkat(vm->dirfd, RESULT_FILE, 0);
	bg_progress(&(qsnap_progress){.phase = "save", .finished = true}, &bg);
	/* Once it is ready, run/ shows the save (a status right after the
	 * call sees it). */
	helper_ready(SAVER_FD_READY);

	so.progress = bg_progress;
	so.userdata = &bg;
	so.stats = NULL;
	r = qsnap_vm_save(vm, name, &so, &err);
	json_object *res = jbuild("name", json_object_new_string(name),
				  "ok", json_object_new_boolean(r >= 0), NULL);
	if (r < 0)
		json_object_object_add(res, "error", json_object_new_string(err.msg));
	json_object_object_add(res, "ended", json_object_new_int64((int64_t)time(NULL)));
	write_run_json(vm, RESULT_FILE, res);
	unlinkat(vm->dirfd, PROGRESS_FILE, 0);
	qsnap_vm_close(vm);
	return r < 0 ? 1 : 0;
}

/* What the saver's environment may hold besides PATH and LC_ALL: the
 * knobs of a save that the caller may have set. */
static const char *const saver_env_keep[] = {"QSNAP_NO_PRECOPY", "QSNAP_MULTIFD_CHANNELS",
					     "QSNAP_DIRECT_IO"};

static int save_background(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts,
			   pid_t *ret_pid, qsnap_error *err)
{
	const char *path = getenv("PATH");
	_cleanup_strv_ char **argv = NULL, **envp = NULL;
	_cleanup_close_ int devnull = -1;
	size_t na = 0, ne = 0;
	pid_t pid;
	int r;

	if (vm->readonly)
		return qerr(err, EPERM, "%s was opened read-only: a save needs it opened for changes",
			    vm->dir);
	if (!qsnap_name_valid(name))
		return qerr(err, EINVAL, "snapshot name '%s' is not valid: use letters, digits, '-', '_' and '.', not starting with '.'",
			    name);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return qerr(err, errno, "cannot open /dev/null: %s", strerror(errno));
	strv_push(&argv, &na, "qsnap-saver");
	if (opts->live)
		strv_push(&argv, &na, "--live");
	if (opts->replace)
		strv_push(&argv, &na, "--replace");
	strv_pushf(&argv, &na, "--compress=%d", opts->compress);
	strv_pushf(&argv, &na, "--timeout=%d", opts->timeout);
	strv_push(&argv, &na, vm->dir);
	strv_push(&argv, &na, name);
	/* The programs the save runs (qemu-img) are found on the caller's
	 * PATH, as in a save that waits. */
	strv_pushf(&envp, &ne, "PATH=%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	strv_push(&envp, &ne, "LC_ALL=C");
	for (size_t i = 0; i < ARRAY_SIZE(saver_env_keep); i++)
		if (getenv(saver_env_keep[i]))
			strv_pushf(&envp, &ne, "%s=%s", saver_env_keep[i], getenv(saver_env_keep[i]));
	/* QEMU serves one QMP client at a time: the saver connects anew. */
	vm_qmp_close(vm);
	/* The saver (qsnap-saver), detached, gets the VM's lock: the same open
	 * file description, so it keeps the lock after the caller closed its
	 * copy. */
	r = helper_start(argv, envp, (int[]){devnull, devnull, devnull, vm->lockfd, vm->dirfd},
			 SAVER_FD_READY, &pid, err);
	if (r < 0)
		return qerr_prefix(err, "the background save of %s did not start", vm->dir);
	if (ret_pid)
		*ret_pid = pid;
	return 0;
}

int qsnap_vm_save_background(qsnap_vm **vmp, const char *name, const qsnap_save_opts *opts,
			     pid_t *ret_pid, qsnap_error *err)
{
	qsnap_vm *vm = vmp ? *vmp : NULL;
	qsnap_save_opts o;
	int r;

	if (!vm)
		return qerr(err, EINVAL, "qsnap_vm_save_background: no VM handle given");
	*vmp = NULL;
	r = sized_in(&o, sizeof(o), opts, "qsnap_save_opts", err);
	if (r == 0)
		r = save_background(vm, name, &o, ret_pid, err);
	/* Whatever happened, the handle is gone: on success our copies of
	 * the lock and the QMP connection, as the background process holds
	 * the lock on the same open file description. */
	qsnap_vm_close(vm);
	return r;
}

int qsnap_vm_background_save(qsnap_vm *vm, qsnap_background_save **ret_bg, qsnap_error *err)
{
	qsnap_background_save *ret;
	_cleanup_json_ json_object *o = NULL;
	_cleanup_free_ char *data = NULL;
	bool running = true;
	size_t len;

	*ret_bg = NULL;
	if (read_file(vm->dirfd, PROGRESS_FILE, &data, &len, NULL) < 0) {
		running = false;
		if (read_file(vm->dirfd, RESULT_FILE, &data, &len, NULL) < 0)
			return 0;
	}
	o = json_tokener_parse(data);
	if (!o || !json_object_is_type(o, json_type_object))
		return 0; /* being replaced just now, or not ours: nothing to show */
	if (running && !proc_alive((pid_t)jint(o, "pid", 0),
				   (unsigned long long)jint(o, "start_time", 0))) {
		_cleanup_free_ char *res = NULL;
		json_object *ended = NULL;

		/* It ended between our two reads: its result is there. */
		if (read_file(vm->dirfd, RESULT_FILE, &res, &len, NULL) == 0 &&
		    (ended = json_tokener_parse(res)) && json_object_is_type(ended, json_type_object)) {
			json_object_put(o);
			o = ended;
		} else {
			/* Killed: the next command that takes the lock undoes
			 * what it began. */
			if (ended)
				json_object_put(ended);
			json_object_object_add(
				o, "error",
				json_object_new_string("the background save process ended without a result (it was killed)"));
		}
		running = false;
	}
	ret = xmalloc(sizeof(*ret));
	*ret = (qsnap_background_save){
		.name = xstrdup(jstr(o, "name") ? jstr(o, "name") : "?"),
		.running = running,
		.pid = (pid_t)jint(o, "pid", 0),
		.phase = xstrdup_or_null(jstr(o, "phase")),
		.done = (uint64_t)jint(o, "done", 0),
		.total = (uint64_t)jint(o, "total", 0),
		.ok = jbool(o, "ok", false),
		.error = xstrdup_or_null(jstr(o, "error")),
		.ended = jint(o, "ended", 0),
	};
	{
		json_object *v;

		if (json_object_object_get_ex(o, "elapsed", &v))
			ret->elapsed = json_object_get_double(v);
	}
	*ret_bg = ret;
	return 1;
}

void qsnap_background_save_free(qsnap_background_save *b)
{
	if (!b)
		return;
	free(b->name);
	free(b->phase);
	free(b->error);
	free(b);
}
