/* SPDX-License-Identifier: MIT */
/* qsnap's own helper programs (qsnap-console, qsnap-saver): processes the
 * library leaves running are programs of their own, never forks of the
 * caller that go on running library code. Where they are, starting one
 * detached with the descriptors it needs at fixed numbers, and the word it
 * sends once it is ready.
 *
 * Where: the library finds them from where its own code was loaded from
 * (dladdr). In the build tree that built it: that tree's src/helpers.
 * Installed: libexecdir/qsnap under the prefix the library's own folder
 * (libdir) sits in, so that a copy installed with DESTDIR finds the
 * helpers installed with it; else the libexecdir it was built for. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

/* Where the code of this function was loaded from: the shared library, or
 * the program it is linked into. */
static char *own_dir(void)
{
	char path[PATH_MAX];
	const char *obj = NULL;
	Dl_info info;
	char *slash;

	/* glibc names the main program by its argv[0]: that one is found
	 * through /proc. */
	if (dladdr((void *)own_dir, &info) && info.dli_fname && *info.dli_fname &&
	    strcmp(info.dli_fname, program_invocation_name) != 0)
		obj = info.dli_fname;
	if (!obj || !realpath(obj, path)) {
		ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

		if (n <= 0)
			return NULL;
		path[n] = '\0';
	}
	slash = strrchr(path, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	return xstrdup(path);
}

static bool has_suffix(const char *s, const char *suffix, size_t *ret_prefix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	if (ls < lx || strcmp(s + ls - lx, suffix))
		return false;
	*ret_prefix = ls - lx;
	return true;
}

char *helper_dir(void)
{
	_cleanup_free_ char *dir = own_dir();
	char root[PATH_MAX];
	size_t n;

	if (!dir)
		return xstrdup(QSNAP_HELPERDIR);
	if (realpath(QSNAP_BUILD_ROOT, root) && !strncmp(dir, root, strlen(root)) &&
	    (dir[strlen(root)] == '/' || dir[strlen(root)] == '\0'))
		return xstrdup(QSNAP_BUILD_HELPERDIR);
	/* Installed: beside the library (in libdir), or a helper itself. */
	if (has_suffix(dir, QSNAP_LIBDIR, &n) || has_suffix(dir, QSNAP_HELPERDIR, &n))
		return xasprintf("%.*s%s", (int)n, dir, QSNAP_HELPERDIR);
	return xstrdup(QSNAP_HELPERDIR);
}

/* What a helper sends on its ready pipe: 'R', or 'E', its errno and a
 * sentence. */
struct helper_word {
	char what;
	int code;
	char msg[sizeof(((qsnap_error *)0)->msg)];
};

int helper_missing_fd(int last)
{
	for (int fd = 3; fd <= last; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			return fd;
	return -1;
}

void helper_ready(int fd)
{
	(void)!write(fd, "R", 1);
	close(fd);
}

void helper_failed(int fd, const qsnap_error *err)
{
	struct helper_word w = {.what = 'E', .code = err->code ? err->code : EIO};

	snprintf(w.msg, sizeof(w.msg), "%s", err->msg);
	(void)!write(fd, &w, offsetof(struct helper_word, msg) + strlen(w.msg));
	close(fd);
}

int helper_start(char *const argv[], char *const envp[], const int *fds, unsigned n_fds,
		 pid_t *ret_pid, qsnap_error *err)
{
	_cleanup_free_ char *dir = helper_dir();
	_cleanup_free_ char *prog = xasprintf("%s/%s", dir, argv[0]);
	_cleanup_close_ int rd = -1, wr = -1;
	int all[CHILD_MAX_FDS], p[2], r;
	struct helper_word w = {0};
	size_t got = 0;
	pid_t pid;

	if (access(prog, X_OK) < 0)
		return qerr(err, errno,
			    "qsnap's helper program %s cannot be run (%s): install qsnap again "
			    "(meson install puts it into %s), or run it from its build tree",
			    prog, strerror(errno), QSNAP_HELPERDIR);
	if (n_fds + 1 > CHILD_MAX_FDS)
		return qerr(err, EINVAL, "%s: too many descriptors", argv[0]);
	if (pipe2(p, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	rd = p[0];
	wr = p[1];
	/* The ready pipe comes after the descriptors it is given. */
	memcpy(all, fds, n_fds * sizeof(*fds));
	all[n_fds] = wr;
	r = child_exec_detached(&(struct child_exec){.prog = prog, .argv = argv, .envp = envp,
						     .fds = all, .n_fds = n_fds + 1, .umask = -1},
				&pid, err);
	closep(&wr);
	if (r < 0)
		return r;
	/* Until its word is whole, or its end of the pipe closed. */
	for (;;) {
		ssize_t n = read(rd, (char *)&w + got, sizeof(w) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (w.what == 'R' || got == sizeof(w))
			break;
	}
	if (got >= 1 && w.what == 'R') {
		*ret_pid = pid;
		return 0;
	}
	if (got > offsetof(struct helper_word, msg) && w.what == 'E') {
		w.msg[got - offsetof(struct helper_word, msg) < sizeof(w.msg)
			      ? got - offsetof(struct helper_word, msg)
			      : sizeof(w.msg) - 1] = '\0';
		return qerr(err, w.code, "%s", w.msg);
	}
	return qerr(err, ECHILD, "%s (pid %d) ended before it was ready", prog, (int)pid);
}
