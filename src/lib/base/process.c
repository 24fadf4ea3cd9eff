/* SPDX-License-Identifier: MIT */
/* Processes known by pid and start time, never by a bare pid that may have
 * been reused; the cores they run on. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"

unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	_cleanup_close_ int fd = -1;
	ssize_t len;
	char *p, state;
	unsigned long long start = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	len = read(fd, buf, sizeof(buf) - 1);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c", &state) != 1 || state == 'Z' || state == 'X')
		return 0;
	/* Field 22 (starttime); field 3 (state) is the first after ')'. */
	p += 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu", &start) != 1)
		return 0;
	return start;
}

bool proc_alive(pid_t pid, unsigned long long start)
{
	unsigned long long now;

	if (pid <= 0)
		return false;
	now = proc_start_time(pid);
	/* 0 is "unknown": it matches no process, so a bare pid (from a
	 * damaged state.json, or a process gone before its start time was
	 * read) is never signalled. */
	return now != 0 && start != 0 && now == start;
}

/* A pidfd of the process pid that began at start, or -1 (gone, another
 * process by now, or a kernel without pidfd_open, 5.3). Checked after it
 * is opened: from then on it names that process, whatever the pid does. */
static int proc_pidfd(pid_t pid, unsigned long long start)
{
	int fd;

	if (pid <= 0 || !start)
		return -1;
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd >= 0 && !proc_alive(pid, start)) {
		close(fd);
		return -1;
	}
	return fd;
}

int proc_signal(pid_t pid, unsigned long long start, int sig)
{
	_cleanup_close_ int fd = proc_pidfd(pid, start);

	if (fd >= 0)
		return syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0 ? -errno : 0;
	if (!proc_alive(pid, start))
		return -ESRCH;
	return kill(pid, sig) < 0 ? -errno : 0;
}

int proc_wait_gone(pid_t pid, unsigned long long start, int timeout_ms, int cancel_fd)
{
	int64_t deadline = now_ms() + timeout_ms;
	_cleanup_close_ int fd = proc_pidfd(pid, start);

	/* A pidfd turns readable when the process ends: no polling. */
	if (fd >= 0) {
		int r = wait_fd(fd, POLLIN, cancel_fd, deadline);

		if (r == 0 || r == -ETIMEDOUT || r == -ECANCELED)
			return r;
		/* else the polling below decides */
	}
	while (proc_alive(pid, start)) {
		int r;

		/* Reap it if it happens to be our child. */
		waitpid(pid, NULL, WNOHANG);
		r = wait_fd(-1, 0, cancel_fd, now_ms() + 10);
		if (r == -ECANCELED)
			return r;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
	}
	return 0;
}

unsigned host_cores(unsigned max)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : (unsigned long)n > max ? max : (unsigned)n;
}
