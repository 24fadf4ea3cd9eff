/* SPDX-License-Identifier: MIT */
/* Starting QEMU detached: nobody's child here, its output in a log, the
 * console relay's end as a known fd, nothing else of ours inherited; and
 * connecting to its QMP socket while it comes up. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qemu/qemu.h"

int qemu_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_free_ char *log_path = NULL;
	_cleanup_close_ int devnull = -1, log = -1;
	pid_t qemu;
	int r;

	if (!prog)
		return qerr(err, ENOENT, "%s not found: install the Debian package qemu-system-x86 (or set \"qemu\" in vm.json)",
			    argv[0]);
	log_path = logpath[0] == '/' ? xstrdup(logpath) : xasprintf("%s/%s", cwd, logpath);
	log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log < 0)
		return qerr(err, errno, "cannot open %s: %s", log_path, strerror(errno));
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0)
		return qerr(err, errno, "cannot open /dev/null: %s", strerror(errno));
	/* Twice so that QEMU is nobody's child here: it outlives this command,
	 * and no zombie is left when it exits. It gets stdin from /dev/null,
	 * its output in the log, the console relay's end as fd 3 and nothing
	 * else of ours; it creates run/qmp.sock with its umask (its own, not
	 * the caller's): only the VM's owner may reach it. */
	r = child_exec_detached(
		&(struct child_exec){.prog = prog, .argv = argv, .envp = envp,
				     .fds = (int[]){devnull, log, log, console_fd},
				     .n_fds = console_fd >= 0 ? QEMU_CONSOLE_FD + 1 : 3,
				     .cwd = cwd, .umask = 077},
		&qemu, err);
	if (r < 0)
		return r;
	*ret_pid = qemu;
	*ret_start = proc_start_time(qemu);
	return 0;
}

int qemu_connect(const char *path, int timeout_ms, pid_t pid, unsigned long long start,
		 int cancel_fd, struct qmp **ret, qsnap_error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = now_ms() + timeout_ms;

	if (strlen(path) >= sizeof(sa.sun_path))
		return qerr(err, ENAMETOOLONG, "QMP socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	for (;;) {
		_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return qerr(err, errno, "cannot create a socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			int64_t left = deadline - now_ms();

			/* The greeting, within what is left of the time (and a
			 * second more). */
			return qmp_open_fd_take(TAKE_FD(fd), (int)(left > 0 ? left : 0) + 1000, ret,
						err);
		}
		if (errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN)
			return qerr(err, errno, "cannot connect to %s: %s", path, strerror(errno));
		if (pid > 0 && !proc_alive(pid, start))
			return qerr(err, ESRCH, "QEMU exited");
		if (now_ms() >= deadline)
			return qerr(err, ETIMEDOUT, "QEMU's QMP socket %s did not come up in %d s", path,
				    timeout_ms / 1000);
		/* QEMU makes the socket early in its start: a short step. */
		if (wait_fd(-1, 0, cancel_fd, now_ms() + 20) == -ECANCELED)
			return qerr(err, ECANCELED, "cancelled");
	}
}
