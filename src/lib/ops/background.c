/* SPDX-License-Identifier: MIT */
/* A save in a background process (qsnap save --live --no-wait). It reports
 * through two files in the VM's run/ directory, which any process may read
 * while the save holds the lock:
 *   run/save-progress.json  while it runs: name, phase, bytes done and
 *                           expected, elapsed seconds, pid and start time;
 *   run/save-result.json    when it ended: name, ok, error, ended.
 * A progress file whose process is gone (it was killed) reads as a failed
 * save. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>

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

/* The background process: owns the VM (its lock and QMP connection) from
 * here on, tells the caller its pid once run/ shows the save, saves, and
 * leaves the result in run/. Never returns. */
static __attribute__((noreturn)) void bg_run(qsnap_vm *vm, const char *name,
					     const qsnap_save_opts *opts, int ready_fd)
{
	struct bg bg = {.vm = vm, .name = name, .last = -1, .start = proc_start_time(getpid())};
	qsnap_save_opts so = *opts;
	qsnap_error err = {0};
	pid_t self = getpid();
	int devnull, r;

	/* Not the caller's signal state (a blocked SIGTERM, an ignored
	 * SIGCHLD): only SIGHUP is ignored, the process has no terminal. */
	child_reset_signals();
	signal(SIGHUP, SIG_IGN);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		close(devnull);
	}
	unlinkat(vm->dirfd, RESULT_FILE, 0);
	bg_progress(&(qsnap_progress){.phase = "save", .finished = true}, &bg);
	(void)!write(ready_fd, &self, sizeof(self));
	close(ready_fd);

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
	_exit(r < 0 ? 1 : 0);
}

static int save_background(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts,
			   pid_t *ret_pid, qsnap_error *err)
{
	int ready[2];
	pid_t mid, pid = 0;
	ssize_t n;

	if (vm->readonly)
		return qerr(err, EPERM, "%s was opened read-only: a save needs it opened for changes",
			    vm->dir);
	if (!qsnap_name_valid(name))
		return qerr(err, EINVAL, "snapshot name '%s' is not valid: use letters, digits, '-', '_' and '.', not starting with '.'",
			    name);
	if (pipe2(ready, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot start a background save: %s", strerror(errno));
	/* Twice: the middle process ends at once, so the save is not a child
	 * the caller has to reap, and runs in a session of its own. */
	mid = fork();
	if (mid < 0) {
		int e = errno;

		close(ready[0]);
		close(ready[1]);
		return qerr(err, e, "cannot start a background save: %s", strerror(e));
	}
	if (mid == 0) {
		close(ready[0]);
		setsid();
		pid = fork();
		if (pid == 0)
			bg_run(vm, name, opts, ready[1]);
		_exit(pid < 0 ? 1 : 0);
	}
	close(ready[1]);
	/* Reaped here unless the caller's SIGCHLD handling took it first:
	 * the pipe, not its status, says whether the save started. */
	while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
		;
	/* Once the pid arrives, run/ shows the save (a status right after
	 * this call sees it). */
	do
		n = read(ready[0], &pid, sizeof(pid));
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	if (n != (ssize_t)sizeof(pid))
		return qerr(err, ECHILD, "the background save of %s did not start", vm->dir);
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
