/* SPDX-License-Identifier: MIT */
/* How every child of qsnap begins, whatever the caller did to its own
 * process: default signal dispositions and an empty signal mask (a caller
 * that ignores SIGCHLD or blocks SIGTERM must not pass that on to QEMU),
 * and, for the children qsnap waits for, a wait that no caller can take
 * away.
 *
 * That wait: the child is cloned with an exit signal of 0. The kernel
 * reaps automatically only children whose exit signal is SIGCHLD (when the
 * parent ignores SIGCHLD or set SA_NOCLDWAIT: kernel/signal.c,
 * do_notify_parent), and waitpid(-1) without __WALL does not see other
 * children; so neither a caller's SIGCHLD=SIG_IGN nor its reaper loop can
 * take the exit status, and the caller gets no SIGCHLD for it. But exec
 * makes the exit signal SIGCHLD again (fs/exec.c, de_thread: measured, an
 * exec'd child of a SIG_IGN parent is reaped at once): a program qsnap
 * waits for runs under a waiter of exit signal 0 that never execs, whose
 * own SIGCHLD is default, and which passes the program's wait status back
 * through a pipe (child_start_waited). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "base/base.h"

/* The kernel's struct sigaction (x86-64, and the generic one): glibc's
 * sigaction() refuses its own signals 32 and 33 (SIGCANCEL, SIGSETXID), but
 * a caller can hand them down ignored (GNU make does), and exec keeps an
 * ignored signal ignored. */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

/* Every process qsnap starts begins with default signal dispositions and
 * an empty signal mask. */
static void child_reset_signals(void)
{
	struct kernel_sigaction dfl = {.handler = SIG_DFL};
	unsigned long none = 0;

	/* Async-signal-safe: runs between clone and exec; system calls only.
	 * SIGKILL and SIGSTOP fail, harmlessly. */
	for (int sig = 1; sig < NSIG; sig++)
		syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(none));
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none));
}

void child_exit(int status)
{
	/* The system call, not _exit(): a runtime that wraps _exit (a
	 * sanitizer's) may take locks that another thread of the parent held
	 * at the clone, and wait forever. */
	for (;;)
		syscall(SYS_exit_group, status);
}

int child_open(const char *path, int flags)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC, 0);
}

int child_dup2(int oldfd, int newfd)
{
	/* dup2 onto itself would leave close-on-exec set. */
	if (oldfd == newfd)
		return (int)syscall(SYS_fcntl, oldfd, F_SETFD, 0);
	return (int)syscall(SYS_dup3, oldfd, newfd, 0);
}

int child_dupfd_above(int fd, int min)
{
	return (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, min);
}

void child_close_from(unsigned first, unsigned last)
{
	if (first <= last)
		syscall(SYS_close_range, first, last, 0);
}

int child_chdir(const char *path)
{
	return (int)syscall(SYS_chdir, path);
}

void child_umask(unsigned mask)
{
	syscall(SYS_umask, mask);
}

void child_write(int fd, const void *buf, size_t len)
{
	syscall(SYS_write, fd, buf, len);
}

int child_execve(const char *prog, char *const argv[], char *const envp[])
{
	return (int)syscall(SYS_execve, prog, argv, envp);
}

int child_start(int (*fn)(void *), void *arg, pid_t *ret_pid, qsnap_error *err)
{
	sigset_t all, old;
	long pid;
	int e;

	/* No signal of the caller's may run its handler in the child before
	 * the child has reset them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* A fork (no CLONE_VM: the child has its own copy) with exit signal 0.
	 * The raw system call skips glibc's fork handlers, so the child makes
	 * only system calls until it execs or exits. */
	pid = syscall(SYS_clone, 0UL, NULL, NULL, NULL, 0UL);
	if (pid == 0) {
		child_reset_signals();
		child_exit(fn(arg));
	}
	e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		return qerr(err, e, "cannot start a process: %s", strerror(e));
	*ret_pid = (pid_t)pid;
	return 0;
}

int child_wait(pid_t pid, int *ret_status, qsnap_error *err)
{
	for (;;) {
		pid_t r = waitpid(pid, ret_status, __WALL);

		if (r == pid)
			return 0;
		if (r < 0 && errno == EINTR)
			continue;
		/* Only a caller that waits with __WALL for any child can have
		 * taken it: its exit status is lost, never made up. */
		return qerr(err, ECHILD, "the exit status of process %d was taken by another waiter",
			    (int)pid);
	}
}

struct waiter {
	int (*fn)(void *);
	void *arg;
	int status_fd;
};

/* The waiter: the program's process forked by the system call (no glibc
 * fork handlers here), waited for with SIGCHLD at its default, its status
 * passed on. */
static int waiter(void *p)
{
	const struct waiter *w = p;
	long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, 0UL);
	int status;

	if (pid == 0)
		child_exit(w->fn(w->arg));
	if (pid < 0)
		return 1;
	while (syscall(SYS_wait4, (pid_t)pid, &status, 0, NULL) < 0)
		if (errno != EINTR)
			return 1;
	child_write(w->status_fd, &status, sizeof(status));
	return 0;
}

int child_start_waited(int (*fn)(void *), void *arg, struct waited *ret, qsnap_error *err)
{
	int p[2], r;

	if (pipe2(p, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	r = child_start(waiter, &(struct waiter){.fn = fn, .arg = arg, .status_fd = p[1]}, &ret->pid,
			err);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		return r;
	}
	ret->status_fd = p[0];
	return 0;
}

int child_wait_waited(struct waited *c, int *ret_status, qsnap_error *err)
{
	_cleanup_close_ int fd = c->status_fd;
	int r = child_wait(c->pid, NULL, err);
	ssize_t n;

	c->status_fd = -1;
	if (r < 0)
		return r;
	do
		n = read(fd, ret_status, sizeof(*ret_status));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*ret_status))
		return qerr(err, ECHILD, "the program could not be started or waited for");
	return 0;
}

/* What the detached program's two processes need: only system calls
 * between clone and exec. */
struct detach_args {
	const struct child_exec *x;
	int wr; /* the report pipe's write end */
};

/* What the intermediate child and the program's process report over the
 * pipe: the program's pid, or the errno of what failed (the fork, or the
 * exec). One write each, atomic; they may arrive in either order. */
struct detach_msg {
	int what; /* 'P' or 'E' */
	int value;
};

static void detach_report(int fd, int what, int value)
{
	child_write(fd, &(struct detach_msg){what, value}, sizeof(struct detach_msg));
}

/* In the program's process: x->fds[i] becomes descriptor i, every other
 * descriptor closes (the report pipe on exec), then the directory, the
 * umask, exec. */
static __attribute__((noreturn)) void detach_exec(const struct child_exec *x, int wr)
{
	unsigned n = x->n_fds;
	int moved[CHILD_MAX_FDS], e;

	if (n > CHILD_MAX_FDS) {
		e = EINVAL;
		goto fail;
	}
	/* Everything above n first, so that no dup2 below closes a source. */
	if ((unsigned)wr < n && (wr = child_dupfd_above(wr, (int)n)) < 0)
		goto fail_errno;
	for (unsigned i = 0; i < n; i++)
		if ((moved[i] = child_dupfd_above(x->fds[i], (int)n)) < 0)
			goto fail_errno;
	/* dup2 clears close-on-exec on the new descriptor. */
	for (unsigned i = 0; i < n; i++)
		if (child_dup2(moved[i], (int)i) < 0)
			goto fail_errno;
	if ((unsigned)wr > n)
		child_close_from(n, (unsigned)wr - 1);
	child_close_from((unsigned)wr + 1, ~0U);
	if (child_chdir(x->cwd ? x->cwd : "/") < 0)
		goto fail_errno;
	if (x->umask >= 0)
		child_umask((unsigned)x->umask);
	child_execve(x->prog, x->argv, x->envp);
fail_errno:
	e = errno;
fail:
	detach_report(wr, 'E', e);
	child_exit(127);
}

/* The intermediate child: a session of its own, the program forked from
 * it (it inherits the signal state child_start reset), its pid reported,
 * gone. */
static int detach(void *p)
{
	const struct detach_args *a = p;
	long pid;

	syscall(SYS_setsid);
	/* fork() as a system call: no glibc fork handlers in a child of
	 * clone. */
	pid = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, 0UL);
	if (pid == 0)
		detach_exec(a->x, a->wr);
	if (pid < 0) {
		detach_report(a->wr, 'E', errno);
		return 1;
	}
	detach_report(a->wr, 'P', (int)pid);
	return 0;
}

int child_exec_detached(const struct child_exec *x, pid_t *ret_pid, qsnap_error *err)
{
	_cleanup_close_ int rd = -1, wr = -1;
	int p[2], r, exec_errno = 0;
	pid_t mid, pid = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	rd = p[0];
	wr = p[1];
	r = child_start(detach, &(struct detach_args){.x = x, .wr = wr}, &mid, err);
	closep(&wr);
	if (r < 0)
		return r;
	/* Its status says nothing the pipe does not. */
	(void)child_wait(mid, NULL, &(qsnap_error){0});
	/* Until the pipe closes (the program exec'd, or everything ended); a
	 * signal the caller handles must not turn a started program into a
	 * failure that nobody records. */
	for (;;) {
		struct detach_msg m;
		ssize_t n;

		do
			n = read(rd, &m, sizeof(m));
		while (n < 0 && errno == EINTR);
		if (n != (ssize_t)sizeof(m))
			break;
		if (m.what == 'P' && m.value > 0)
			pid = m.value;
		else if (m.what == 'E')
			exec_errno = m.value;
	}
	if (exec_errno)
		return qerr(err, exec_errno, "cannot %s %s: %s", pid ? "run" : "start", x->prog,
			    strerror(exec_errno));
	if (pid <= 0)
		return qerr(err, EIO, "cannot start %s", x->prog);
	*ret_pid = pid;
	return 0;
}
