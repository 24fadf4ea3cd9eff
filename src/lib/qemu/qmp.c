/* SPDX-License-Identifier: MIT */
/* QMP client. QEMU sends one JSON object per line: the greeting, replies
 * (with the id we gave), and events that may arrive at any time, also
 * between a command and its reply. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qemu/qemu.h"

/* A command unanswered this long marks the connection stalled. */
#define STALLED_MS 2000

struct qmp {
	int fd;
	char *buf;
	size_t len, cap;
	json_object **events;
	size_t n_events;
	uint64_t next_id;
	struct qemu_caps caps;
	struct qmp_bounds bounds;
	bool stalled; /* a command got no reply in time */
};

struct qemu_caps *qmp_caps(struct qmp *q)
{
	return &q->caps;
}

void qmp_free(struct qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	for (size_t i = 0; i < q->n_events; i++)
		json_object_put(q->events[i]);
	free(q->events);
	free(q->buf);
	json_object_put(q->caps.mig_caps);
	json_object_put(q->caps.mig_params);
	json_object_put(q->caps.commands);
	free(q);
}

struct qmp_bounds qmp_bound(struct qmp *q, struct qmp_bounds b)
{
	struct qmp_bounds old = q->bounds;

	q->bounds = b;
	return old;
}

bool qmp_stalled(struct qmp *q)
{
	return q->stalled;
}

/* Read one message. -ETIMEDOUT at the deadline (or the bounds' limit),
 * -ECANCELED when the bounds' cancellation is raised, -EPIPE when QEMU
 * closed the connection. */
static int read_message(struct qmp *q, int64_t deadline, json_object **ret, qsnap_error *err)
{
	if (q->bounds.limit > 0 && q->bounds.limit < deadline)
		deadline = q->bounds.limit;
	for (;;) {
		char *nl = q->buf ? memchr(q->buf, '\n', q->len) : NULL;

		if (nl) {
			size_t linelen = (size_t)(nl - q->buf), end = 0;
			enum json_tokener_error jerr = json_tokener_success;
			json_tokener *tok;
			json_object *o = NULL;
			bool blank = linelen == 0 || (linelen == 1 && q->buf[0] == '\r');

			if (!blank) {
				tok = json_tokener_new();
				o = json_tokener_parse_ex(tok, q->buf, (int)linelen);
				jerr = json_tokener_get_error(tok);
				end = json_tokener_get_parse_end(tok);
				json_tokener_free(tok);
				/* Only white space may follow the object. */
				while (end < linelen && strchr(" \t\r", q->buf[end]))
					end++;
			}
			memmove(q->buf, nl + 1, q->len - linelen - 1);
			q->len -= linelen + 1;
			if (blank)
				continue;
			if (!o || jerr != json_tokener_success || end != linelen ||
			    !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				return qerr(err, EPROTO, "QEMU sent a QMP message that is not a JSON object");
			}
			*ret = o;
			return 0;
		}
		if (q->len > 64 * 1024 * 1024)
			return qerr(err, EPROTO, "QEMU sent a QMP message longer than 64 MiB");
		if (q->cap - q->len < 65536) {
			q->cap = q->cap ? q->cap * 2 : 131072;
			q->buf = xrealloc(q->buf, q->cap);
		}
		int r = wait_fd(q->fd, POLLIN, q->bounds.cancel_fd, deadline);

		if (r == -ECANCELED)
			return qerr(err, ECANCELED, "cancelled");
		if (r == -ETIMEDOUT)
			return qerr(err, ETIMEDOUT, "QEMU did not answer in time");
		if (r < 0)
			return qerr(err, -r, "waiting for QMP: %s", strerror(-r));
		ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (errno == ECONNRESET)
				return qerr(err, EPIPE, "QEMU closed the QMP connection");
			return qerr(err, errno, "reading from QMP: %s", strerror(errno));
		}
		if (n == 0)
			return qerr(err, EPIPE, "QEMU closed the QMP connection");
		q->len += (size_t)n;
	}
}

static void queue_event(struct qmp *q, json_object *ev)
{
	q->events = xrealloc(q->events, (q->n_events + 1) * sizeof(*q->events));
	q->events[q->n_events++] = ev;
}

static int send_all(struct qmp *q, const char *data, size_t len, int fd, qsnap_error *err)
{
	bool fd_sent = fd < 0;

	while (len > 0) {
		struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} control;
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (!fd_sent) {
			struct cmsghdr *c;

			memset(&control, 0, sizeof(control));
			msg.msg_control = control.buf;
			msg.msg_controllen = sizeof(control.buf);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof(int));
		}
		n = sendmsg(q->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (errno == EPIPE || errno == ECONNRESET)
				return qerr(err, EPIPE, "QEMU closed the QMP connection");
			return qerr(err, errno, "writing to QMP: %s", strerror(errno));
		}
		fd_sent = true;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int qmp_execute_fd(struct qmp *q, const char *cmd, json_object *args, int fd,
		   json_object **ret_return, int timeout_ms, qsnap_error *err)
{
	_cleanup_json_ json_object *req = json_object_new_object();
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : QMP_TIMEOUT_MS);
	uint64_t id = ++q->next_id;
	const char *text;
	int r;

	/* Past the connection's limit nothing is sent: that is no sign of a
	 * QEMU that does not answer. */
	if (q->bounds.limit > 0 && now_ms() >= q->bounds.limit)
		return qerr(err, ETIMEDOUT, "QMP command '%s': no time left", cmd);
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", args);
	json_object_object_add(req, "id", json_object_new_int64((int64_t)id));
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	_cleanup_free_ char *line = xasprintf("%s\n", text);

	int64_t sent = now_ms();

	r = send_all(q, line, strlen(line), fd, err);
	if (r < 0)
		return qerr_prefix(err, "QMP command '%s'", cmd);
	for (;;) {
		_cleanup_json_ json_object *msg = NULL;
		json_object *idv, *e;

		r = read_message(q, deadline, &msg, err);
		/* Stalled: it had a while to answer and did not (a wait cut
		 * short by the limit proves nothing). */
		if (r == -ETIMEDOUT && now_ms() - sent >= STALLED_MS)
			q->stalled = true;
		if (r < 0)
			return qerr_prefix(err, "QMP command '%s'", cmd);
		q->stalled = false;
		if (json_object_object_get_ex(msg, "event", NULL)) {
			queue_event(q, TAKE_PTR(msg));
			continue;
		}
		if (!json_object_object_get_ex(msg, "id", &idv) ||
		    json_object_get_int64(idv) != (int64_t)id)
			continue; /* a stale reply to a command that timed out */
		if ((e = jobj(msg, "error"))) {
			const char *desc = jstr(e, "desc"), *cls = jstr(e, "class");

			return qerr(err, EIO, "QMP command '%s' failed: %s%s%s%s", cmd,
				    desc ? desc : "(no description)", cls ? " (" : "",
				    cls ? cls : "", cls ? ")" : "");
		}
		if (ret_return) {
			json_object *v;

			if (!json_object_object_get_ex(msg, "return", &v))
				return qerr(err, EPROTO, "QMP command '%s': reply has no 'return'", cmd);
			*ret_return = json_object_get(v);
		}
		return 0;
	}
}

int qmp_execute(struct qmp *q, const char *cmd, json_object *args, json_object **ret_return,
		int timeout_ms, qsnap_error *err)
{
	return qmp_execute_fd(q, cmd, args, -1, ret_return, timeout_ms, err);
}

int qmp_wait_event(struct qmp *q, const char *name, json_object **ret_event, int timeout_ms,
		   qsnap_error *err)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		for (size_t i = 0; i < q->n_events; i++) {
			const char *ev = jstr(q->events[i], "event");

			if (name && (!ev || strcmp(ev, name)))
				continue;
			json_object *o = q->events[i];
			memmove(q->events + i, q->events + i + 1,
				(q->n_events - i - 1) * sizeof(*q->events));
			q->n_events--;
			if (ret_event)
				*ret_event = o;
			else
				json_object_put(o);
			return 0;
		}
		json_object *msg = NULL;
		int r = read_message(q, deadline, &msg, err);

		if (r == -ETIMEDOUT)
			return qerr(err, ETIMEDOUT, "no %s event from QEMU in %d ms",
				    name ? name : "QMP", timeout_ms);
		if (r < 0)
			return r;
		if (json_object_object_get_ex(msg, "event", NULL))
			queue_event(q, msg);
		else
			json_object_put(msg); /* a late reply nobody waits for */
	}
}

void qmp_drop_events(struct qmp *q, const char *name)
{
	size_t j = 0;

	for (size_t i = 0; i < q->n_events; i++) {
		const char *ev = jstr(q->events[i], "event");

		if (!name || (ev && !strcmp(ev, name)))
			json_object_put(q->events[i]);
		else
			q->events[j++] = q->events[i];
	}
	q->n_events = j;
}

int qmp_execute_expect(struct qmp *q, const char *cmd, json_object *args,
		       const char *const events[], json_object **ret_return, int timeout_ms,
		       qsnap_error *err)
{
	for (size_t i = 0; events && events[i]; i++)
		qmp_drop_events(q, events[i]);
	return qmp_execute(q, cmd, args, ret_return, timeout_ms, err);
}

int qmp_open_fd_take(int fd, int timeout_ms, struct qmp **ret, qsnap_error *err)
{
	struct qmp *q = xcalloc(1, sizeof(*q));
	_cleanup_json_ json_object *greeting = NULL;
	int r;

	q->fd = fd;
	q->bounds.cancel_fd = -1;
	r = read_message(q, now_ms() + timeout_ms, &greeting, err);
	if (r < 0) {
		qmp_free(q);
		return qerr_prefix(err, "QMP greeting");
	}
	if (!jobj(greeting, "QMP")) {
		qmp_free(q);
		return qerr(err, EPROTO, "the socket does not speak QMP (no greeting)");
	}
	r = qmp_execute(q, "qmp_capabilities", NULL, NULL, timeout_ms, err);
	if (r < 0) {
		qmp_free(q);
		return r;
	}
	*ret = q;
	return 0;
}
