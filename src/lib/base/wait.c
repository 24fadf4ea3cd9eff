/* SPDX-License-Identifier: MIT */
/* How every wait of the library ends: the thing waited for is ready, the
 * deadline passes, or the call is cancelled. A cancellation is an eventfd
 * (one per qsnap_vm) that qsnap_vm_cancel makes readable from any thread;
 * every wait polls it together with its own descriptor, so nothing sleeps
 * in steps. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>

#include "base/base.h"

int cancel_new(void)
{
	return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void cancel_raise(int fd)
{
	uint64_t one = 1;

	/* Only a write(): safe in a signal handler. The counter cannot
	 * overflow in practice; EAGAIN would still leave it readable. */
	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
	}
}

void cancel_clear(int fd)
{
	uint64_t n;

	if (fd >= 0 && read(fd, &n, sizeof(n)) < 0) {
	}
}

bool cancel_raised(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return fd >= 0 && poll(&p, 1, 0) > 0;
}

int wait_left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline <= 0)
		return -1;
	left = deadline - now_ms();
	return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

int wait_fd(int fd, short events, int cancel_fd, int64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = cancel_fd, .events = POLLIN},
				      {.fd = fd, .events = events}};
		int n = poll(p, 2, wait_left_ms(deadline));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[0].revents)
			return -ECANCELED;
		if (n > 0)
			return 0;
		return -ETIMEDOUT;
	}
}

int write_wait(int fd, const uint8_t *p, size_t n, int cancel_fd, qsnap_error *err)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			if (wait_fd(fd, POLLOUT, cancel_fd, 0) < 0)
				return qerr(err, ECANCELED, "cancelled");
			continue;
		}
		if (w < 0)
			return qerr(err, errno, "cannot write: %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
	return 0;
}
