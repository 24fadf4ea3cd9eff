/* SPDX-License-Identifier: MIT */
/* The VM's lock: flock(2) on VMDIR/lock, so that one command changes a VM
 * at a time (status and list read without it). flock, not an OFD lock:
 * the two do not see each other, and other qsnap versions take flock.
 *
 * A waiter does not poll: the lock goes free when the last descriptor of
 * the holder's open file description is closed (the holder closes the VM,
 * or its process ends, killed or not), and that close is an inotify
 * IN_CLOSE event on the file. So the waiter watches the file, tries again
 * after every close, and otherwise sleeps until the deadline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>

#include "vmdir/vmdir.h"

/* A safety net only, for filesystems whose closes inotify does not see
 * (a holder on another host of a network filesystem). */
#define SLOW_RETRY_MS 2000
/* Where inotify is not available (no instances left). */
#define POLL_RETRY_MS 200

static int watch_closes(int lockfd)
{
	char path[64];
	int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);

	if (in < 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", lockfd);
	if (inotify_add_watch(in, path, IN_CLOSE) < 0) {
		close(in);
		return -1;
	}
	return in;
}

static void drain(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	while (read(fd, buf, sizeof(buf)) > 0) {
	}
}

int vmdir_lock(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	int64_t deadline = now_ms() + (int64_t)timeout * 1000;
	_cleanup_close_ int in = -1;
	bool watching = false;

	vm->lockfd = openat(vm->dirfd, VMDIR_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (vm->lockfd < 0)
		return qerr(err, errno, "cannot open %s/" VMDIR_LOCK ": %s", vm->dir, strerror(errno));
	for (;;) {
		int64_t until;

		if (flock(vm->lockfd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return qerr(err, errno, "cannot lock %s: %s", vm->dir, strerror(errno));
		if (now_ms() >= deadline)
			return qerr(err, EBUSY, "%s is busy: another qsnap command is working on it (waited %d s; try again, or raise --lock-timeout)",
				    vm->dir, timeout);
		if (!watching) {
			/* Watch first, then try again: no close is missed. */
			in = watch_closes(vm->lockfd);
			watching = true;
			continue;
		}
		until = now_ms() + (in >= 0 ? SLOW_RETRY_MS : POLL_RETRY_MS);
		if (wait_fd(in, POLLIN, vm->cancelfd, until < deadline ? until : deadline) ==
		    -ECANCELED)
			return qerr(err, ECANCELED, "cancelled while waiting for the lock of %s",
				    vm->dir);
		if (in >= 0)
			drain(in);
	}
}
