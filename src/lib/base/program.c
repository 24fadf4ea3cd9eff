/* SPDX-License-Identifier: MIT */
/* Helper programs: found on PATH, run without a shell. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>

#include "base/base.h"

char *find_program(const char *name)
{
	const char *path = getenv("PATH");
	_cleanup_free_ char *copy = NULL;
	char *save = NULL;

	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
	copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *p = xasprintf("%s/%s", dir, name);

		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

int run_program(const char *cwd, char *const argv[], char **ret_out, qsnap_error *err)
{
	return run_program_ex(cwd, argv, NULL, ret_out, err);
}

/* What the child needs between clone and exec: only system calls. */
struct exec_args {
	const char *cwd, *prog;
	char *const *argv;
	int out, errout, report; /* the pipes' write ends; report: exec's errno */
};

static int exec_child(void *p)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
				     "LC_ALL=C", NULL};
	const struct exec_args *a = p;
	int devnull = child_open("/dev/null", O_RDONLY), e;

	if (devnull < 0 || child_dup2(devnull, 0) < 0 || child_dup2(a->out, 1) < 0 ||
	    child_dup2(a->errout, 2) < 0)
		goto fail;
	/* The report pipe stays (close-on-exec): it closes when exec works. */
	if (a->report > 3)
		child_close_from(3, (unsigned)a->report - 1);
	child_close_from((unsigned)a->report + 1 > 3 ? (unsigned)a->report + 1 : 3, ~0U);
	if (a->cwd && child_chdir(a->cwd) < 0)
		goto fail;
	child_execve(a->prog, a->argv, envp);
fail:
	e = errno;
	child_write(a->report, &e, sizeof(e));
	return 127;
}

int run_program_ex(const char *cwd, char *const argv[], const struct run_opts *o, char **ret_out,
		   qsnap_error *err)
{
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_free_ char *out = NULL, *errout = NULL;
	_cleanup_close_ int report_rd = -1;
	int outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
	size_t outlen = 0, errlen = 0;
	struct pollfd pfd[2];
	struct waited child;
	ssize_t got;
	int status, exec_errno = 0, r;

	if (!prog)
		return qerr(err, ENOENT, "%s not found: install the Debian package %s", argv[0],
			    strstr(argv[0], "qemu-img") ? "qemu-utils" : argv[0]);
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
		int e = errno;
		closep(&outp[0]), closep(&outp[1]), closep(&errp[0]), closep(&errp[1]);
		closep(&rep[0]), closep(&rep[1]);
		return qerr(err, e, "cannot create a pipe: %s", strerror(e));
	}
	report_rd = rep[0];
	r = child_start_waited(exec_child,
			       &(struct exec_args){.cwd = cwd, .prog = prog, .argv = argv,
						   .out = outp[1], .errout = errp[1], .report = rep[1]},
			       &child, err);
	close(rep[1]);
	if (r < 0) {
		closep(&outp[0]), closep(&outp[1]), closep(&errp[0]), closep(&errp[1]);
		return r;
	}
	close(outp[1]);
	close(errp[1]);
	/* Read both pipes until both are closed, so a chatty child never blocks. */
	pfd[0] = (struct pollfd){.fd = outp[0], .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = errp[0], .events = POLLIN};
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			char chunk[4096];
			ssize_t n = read(pfd[i].fd, chunk, sizeof(chunk));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				continue;
			}
			if (i == 0 && o && o->on_stdout)
				o->on_stdout(chunk, (size_t)n, o->userdata);
			char **b = i == 0 ? &out : &errout;
			size_t *l = i == 0 ? &outlen : &errlen;
			*b = xrealloc(*b, *l + (size_t)n + 1);
			memcpy(*b + *l, chunk, (size_t)n);
			*l += (size_t)n;
			(*b)[*l] = '\0';
		}
	}
	r = child_wait_waited(&child, &status, err);
	if (r < 0)
		return qerr_prefix(err, "%s", argv[0]);
	do
		got = read(report_rd, &exec_errno, sizeof(exec_errno));
	while (got < 0 && errno == EINTR);
	if (got == (ssize_t)sizeof(exec_errno))
		return qerr(err, exec_errno, "cannot run %s%s%s: %s", prog, cwd ? " in " : "",
			    cwd ? cwd : "", strerror(exec_errno));
	if (o && o->ret_status && WIFEXITED(status)) {
		/* The caller reads the exit code itself (qemu-img check). */
		*o->ret_status = WEXITSTATUS(status);
		if (o->ret_stderr)
			*o->ret_stderr = errout ? TAKE_PTR(errout) : xstrdup("");
		if (ret_out)
			*ret_out = out ? TAKE_PTR(out) : xstrdup("");
		return 0;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *e = errout ? errout : out ? out : "";
		size_t l = strlen(e);

		while (l > 0 && (e[l - 1] == '\n' || e[l - 1] == '\r'))
			e[--l] = '\0';
		if (WIFSIGNALED(status))
			return qerr(err, EIO, "%s was killed by signal %d%s%s", argv[0],
				    WTERMSIG(status), *e ? ": " : "", e);
		return qerr(err, EIO, "%s failed (exit %d)%s%s", argv[0], WEXITSTATUS(status),
			    *e ? ": " : "", e);
	}
	if (ret_out)
		*ret_out = out ? TAKE_PTR(out) : xstrdup("");
	return 0;
}
