/* SPDX-License-Identifier: MIT */
/* Starting QEMU detached: nobody's child here, its output in a log, the
 * console relay's end as a known fd, nothing else of ours inherited; and
 * connecting to its QMP socket while it comes up. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "qemu/qemu.h"

int qemu_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_close_ int rd = -1, wr = -1;
	int p[2], status;
	pid_t child, qemu = 0;
	int child_err = 0;
	ssize_t n;

	if (!prog)
		return qerr(err, ENOENT, "%s not found: install the Debian package qemu-system-x86 (or set \"qemu\" in vm.json)",
			    argv[0]);
	if (pipe2(p, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	rd = p[0];
	wr = p[1];
	/* Fork twice so that QEMU is nobody's child here: it outlives this
	 * command, and no zombie is left when it exits. The intermediate child
	 * reports QEMU's pid, or the errno of a failed exec, over the pipe. */
	child = fork();
	if (child < 0)
		return qerr(err, errno, "cannot fork: %s", strerror(errno));
	if (child == 0) {
		pid_t gc;

		setsid();
		gc = fork();
		if (gc < 0) {
			int e = -errno;
			(void)!write(wr, &e, sizeof(e));
			_exit(1);
		}
		if (gc == 0) {
			int log, devnull;
			unsigned first = console_fd >= 0 ? QEMU_CONSOLE_FD + 1 : 3;

			if (chdir(cwd) < 0)
				goto fail;
			log = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (log < 0 || devnull < 0)
				goto fail;
			if (dup2(devnull, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
				goto fail;
			/* The console's end as fd 3; the pipe is moved above it. */
			if (console_fd >= 0) {
				if (wr == QEMU_CONSOLE_FD &&
				    (wr = fcntl(wr, F_DUPFD_CLOEXEC, QEMU_CONSOLE_FD + 1)) < 0)
					goto fail;
				if (console_fd == QEMU_CONSOLE_FD ? fcntl(console_fd, F_SETFD, 0) < 0
								  : dup2(console_fd, QEMU_CONSOLE_FD) < 0)
					goto fail;
			}
			/* No other fd of ours leaks into QEMU; the pipe closes on exec. */
			if ((unsigned)wr > first)
				close_range(first, (unsigned)wr - 1, 0);
			close_range((unsigned)wr + 1 > first ? (unsigned)wr + 1 : first, ~0U, 0);
			signal(SIGPIPE, SIG_DFL);
			/* QEMU creates run/qmp.sock, the serial socket and its log
			 * with its umask: only the VM's owner may reach them. */
			umask(077);
			execve(prog, argv, envp);
		fail:;
			int e = errno;
			(void)!write(wr, &e, sizeof(e));
			_exit(127);
		}
		(void)!write(wr, &gc, sizeof(gc));
		_exit(0);
	}
	closep(&wr);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	n = read(rd, &qemu, sizeof(qemu));
	if (n != sizeof(qemu) || qemu <= 0)
		return qerr(err, n == sizeof(qemu) && qemu < 0 ? -qemu : EIO,
			    "cannot start %s", argv[0]);
	/* A second message means exec failed. */
	n = read(rd, &child_err, sizeof(child_err));
	if (n == sizeof(child_err))
		return qerr(err, child_err, "cannot run %s: %s", prog, strerror(child_err));
	*ret_pid = qemu;
	*ret_start = proc_start_time(qemu);
	return 0;
}

int qemu_connect(const char *path, int timeout_ms, pid_t pid, unsigned long long start,
		 struct qmp **ret, qsnap_error *err)
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
		sleep_ms(20);
	}
}
