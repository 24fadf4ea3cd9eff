/* SPDX-License-Identifier: MIT */
/* The VM's lock: flock(2) on VMDIR/lock, so that one command changes a VM
 * at a time (status and list read without it). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>

#include "vmdir/vmdir.h"

int vmdir_lock(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	int64_t deadline = now_ms() + (int64_t)timeout * 1000;

	vm->lockfd = openat(vm->dirfd, VMDIR_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (vm->lockfd < 0)
		return qerr(err, errno, "cannot open %s/" VMDIR_LOCK ": %s", vm->dir, strerror(errno));
	while (flock(vm->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return qerr(err, errno, "cannot lock %s: %s", vm->dir, strerror(errno));
		if (now_ms() >= deadline)
			return qerr(err, EBUSY, "%s is busy: another qsnap command is working on it (waited %d s; try again, or raise --lock-timeout)",
				    vm->dir, timeout);
		sleep_ms(50);
	}
	return 0;
}
