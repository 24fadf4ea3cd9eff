/* SPDX-License-Identifier: MIT */
/* Fuzz the QMP client with what a QEMU (or anything listening on the
 * socket) might send: the input is the whole byte stream from the peer,
 * followed by end of file. The client does what qsnap does on a
 * connection: greeting and capabilities, a command, a migration and its
 * events. It must never crash, leak or hang, whatever arrives. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "ops/ops.h"

/* The peer's bytes are written into the socket before the client reads,
 * so they must fit in its buffer. */
#define MAX_INPUT 65536
#define T_MS 1000

static void write_all(int fd, const uint8_t *data, size_t size)
{
	while (size > 0) {
		ssize_t n = write(fd, data, size);

		if (n <= 0)
			abort();
		data += n;
		size -= (size_t)n;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], sz = MAX_INPUT * 2;
	struct qmp *q = NULL;
	qsnap_error err = {0};
	json_object *ret = NULL, *ev = NULL;

	if (size > MAX_INPUT)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	write_all(sv[1], data, size);
	/* End of file after the input: every wait ends at once. The client's
	 * commands still go into sv[1]'s receive buffer, unread. */
	shutdown(sv[1], SHUT_WR);

	if (qmp_open_fd_take(sv[0], T_MS, &q, &err) < 0)
		goto out;
	if (qmp_execute(q, "query-status", NULL, &ret, T_MS, &err) == 0) {
		(void)jstr(ret, "status");
		(void)jbool(ret, "running", false);
		json_object_put(ret);
	}
	if (qmp_execute(q, "migrate", jbuild("uri", json_object_new_string("fd:x"), NULL), NULL, T_MS,
			&err) == 0) {
		struct mig_wait w = {.timeout_s = 1, .phase = "fuzz", .fd = -1};

		(void)migrate_wait(q, &w, &err);
	}
	if (qmp_wait_event(q, "STOP", &ev, T_MS, &err) == 0)
		json_object_put(ev);
	qmp_drop_events(q, "RESUME");
	if (qmp_wait_event(q, NULL, &ev, T_MS, &err) == 0)
		json_object_put(ev);
	qmp_drop_events(q, NULL);
	qmp_free(q);
out:
	close(sv[1]);
	/* Every error is a sentence. */
	if (err.code && !err.msg[0])
		abort();
	return 0;
}
