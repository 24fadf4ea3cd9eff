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
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "qemu/qemu.h"

/* What the intermediate child and QEMU's own process report over the pipe:
 * QEMU's pid, or the errno of what failed (the fork, or QEMU's exec). One
 * write each, atomic; they may arrive in either order. */
struct spawn_msg {
	int what; /* 'P' or 'E' */
	int value;
};

static void report(int fd, int what, int value)
{
	(void)!write(fd, &(struct spawn_msg){what, value}, sizeof(struct spawn_msg));
}

/* What the intermediate child and QEMU's own process need: only system
 * calls between clone and exec. */
struct spawn_args {
	const char *cwd, *prog, *logpath;
	char *const *argv;
	int console_fd, wr; /* wr: the report pipe's write end */
};

static void read_full(int fd, void *buf, size_t len, ssize_t *ret)
{
	ssize_t n;

	do
		n = read(fd, buf, len);
	while (n < 0 && errno == EINTR);
	*ret = n;
}

/* In QEMU's process: its fds, its directory, its umask (this process's
 * own, not the caller's), exec. */
static __attribute__((noreturn)) void exec_qemu(struct spawn_args *a)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
	unsigned first = a->console_fd >= 0 ? QEMU_CONSOLE_FD + 1 : 3;
	int log, devnull, e, wr = a->wr;

	if (chdir(a->cwd) < 0)
		goto fail;
	log = open(a->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (log < 0 || devnull < 0)
		goto fail;
	if (dup2(devnull, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
		goto fail;
	/* The console's end as fd 3; the pipe is moved above it. */
	if (a->console_fd >= 0) {
		if (wr == QEMU_CONSOLE_FD && (wr = fcntl(wr, F_DUPFD_CLOEXEC, QEMU_CONSOLE_FD + 1)) < 0)
			goto fail;
		if (a->console_fd == QEMU_CONSOLE_FD ? fcntl(a->console_fd, F_SETFD, 0) < 0
						     : dup2(a->console_fd, QEMU_CONSOLE_FD) < 0)
			goto fail;
	}
	/* No other fd of ours leaks into QEMU; the pipe closes on exec. */
	if ((unsigned)wr > first)
		close_range(first, (unsigned)wr - 1, 0);
	close_range((unsigned)wr + 1 > first ? (unsigned)wr + 1 : first, ~0U, 0);
	/* QEMU creates run/qmp.sock, the serial socket and its log with its
	 * umask: only the VM's owner may reach them. */
	umask(077);
	execve(a->prog, a->argv, envp);
fail:
	e = errno;
	report(wr, 'E', e);
	child_exit(127);
}

/* The intermediate child: a session of its own, QEMU forked from it (it
 * inherits the signal state child_start reset), its pid reported, gone. */
static int detach_qemu(void *p)
{
	struct spawn_args *a = p;
	long gc;

	setsid();
	/* fork() as a system call: no glibc fork handlers in a child of
	 * clone. */
	gc = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, 0UL);
	if (gc == 0)
		exec_qemu(a);
	if (gc < 0) {
		report(a->wr, 'E', errno);
		return 1;
	}
	report(a->wr, 'P', (int)gc);
	return 0;
}

int qemu_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err)
{
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_close_ int rd = -1, wr = -1;
	int p[2], status, r;
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
	/* Twice so that QEMU is nobody's child here: it outlives this command,
	 * and no zombie is left when it exits. The intermediate child reports
	 * QEMU's pid, or the errno of a failed exec, over the pipe. */
	r = child_start(detach_qemu,
			&(struct spawn_args){.cwd = cwd, .prog = prog, .logpath = logpath, .argv = argv,
					     .console_fd = console_fd, .wr = wr},
			&child, err);
	closep(&wr);
	if (r < 0)
		return r;
	/* Its status says nothing the pipe does not. */
	(void)child_wait(child, &status, &(qsnap_error){0});
	/* Until the pipe closes (QEMU exec'd, or everything ended); a signal
	 * the caller handles must not turn a started QEMU into a failure that
	 * nobody records (read_full retries). */
	for (;;) {
		struct spawn_msg m;

		read_full(rd, &m, sizeof(m), &n);
		if (n != sizeof(m))
			break;
		if (m.what == 'P' && m.value > 0)
			qemu = m.value;
		else if (m.what == 'E')
			child_err = m.value;
	}
	if (child_err)
		return qerr(err, child_err, "cannot %s %s: %s", qemu ? "run" : "start", prog,
			    strerror(child_err));
	if (qemu <= 0)
		return qerr(err, EIO, "cannot start %s", argv[0]);
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
