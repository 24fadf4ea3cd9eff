/* SPDX-License-Identifier: MIT */
/* Driving QEMU's migration to and from a file descriptor. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "qmp.h"

/* QEMU's default max-bandwidth is 128 MiB/s, and it throttles the migration
 * of a paused VM too; 100 GiB/s means no limit on any machine we run on. */
#define UNLIMITED_BANDWIDTH (100LL << 30)
#define POLL_MS 200

static json_object *cap(const char *name, bool on)
{
	return jbuild("capability", json_object_new_string(name), "state",
		      json_object_new_boolean(on), NULL);
}

int migrate_setup(struct qmp *q, bool incoming, bool ignore_shared, bool background,
		  qsnap_error *err)
{
	json_object *caps = json_object_new_array();
	int r;

	/* MIGRATION events tell us when it ends, at both ends. */
	json_object_array_add(caps, cap("events", true));
	/* Set either way: a QEMU keeps capabilities from its last migration. */
	json_object_array_add(caps, cap("x-ignore-shared", ignore_shared));
	if (!incoming)
		json_object_array_add(caps, cap("background-snapshot", background));
	r = qmp_execute(q, "migrate-set-capabilities", jbuild("capabilities", caps, NULL), NULL, 0,
			err);
	if (r < 0 || incoming)
		return r;
	return qmp_execute(q, "migrate-set-parameters",
			   jbuild("max-bandwidth", json_object_new_int64(UNLIMITED_BANDWIDTH), NULL),
			   NULL, 0, err);
}

static void report(const struct mig_wait *w, uint64_t done, uint64_t total, int64_t t0,
		   bool finished)
{
	qsnap_progress p = {
		.phase = w->phase,
		.done = done,
		.total = total,
		.elapsed = (double)(now_ms() - t0) / 1000.0,
		.finished = finished,
	};

	if (w->progress)
		w->progress(&p, w->userdata);
}

static uint64_t done_bytes(const struct mig_wait *w)
{
	off_t off;

	if (w->pump)
		return pump_bytes(w->pump);
	off = w->fd >= 0 ? lseek(w->fd, 0, SEEK_CUR) : -1;
	return off > 0 ? (uint64_t)off : 0;
}

/* Why did the outgoing migration fail? */
static char *source_error(struct qmp *q)
{
	_cleanup_json_ json_object *info = NULL;
	qsnap_error e2;
	const char *desc;

	if (qmp_execute(q, "query-migrate", NULL, &info, 5000, &e2) < 0)
		return xstrdup("no details");
	desc = jstr(info, "error-desc");
	return xstrdup(desc ? desc : "no details");
}

/* QEMU sends the MIGRATION event that ends an outgoing migration before it
 * leaves the run state finish-migrate, and refuses "cont" until it has
 * ("Migration is not finalized yet"): on a fast disk qsnap got there first.
 * Wait (briefly) until QEMU has settled. */
static void source_settle(struct qmp *q)
{
	int64_t deadline = now_ms() + 10000;

	while (now_ms() < deadline) {
		_cleanup_json_ json_object *st = NULL;
		qsnap_error e2;
		const char *s;

		if (qmp_execute(q, "query-status", NULL, &st, 5000, &e2) < 0)
			return;
		s = jstr(st, "status");
		if (!s || strcmp(s, "finish-migrate"))
			return;
		sleep_ms(5);
	}
}

void migrate_end(struct qmp *q)
{
	int64_t deadline = now_ms() + 10000;
	qsnap_error e2;

	qmp_execute(q, "migrate_cancel", NULL, NULL, 5000, &e2);
	while (now_ms() < deadline) {
		_cleanup_json_ json_object *info = NULL;
		const char *s;

		if (qmp_execute(q, "query-migrate", NULL, &info, 5000, &e2) < 0)
			return;
		s = jstr(info, "status");
		if (!s || !strcmp(s, "none") || !strcmp(s, "completed") || !strcmp(s, "failed") ||
		    !strcmp(s, "cancelled"))
			break;
		sleep_ms(10);
	}
	source_settle(q);
}

int migrate_wait(struct qmp *q, const struct mig_wait *w, qsnap_error *err)
{
	int64_t t0 = now_ms(), deadline = t0 + (int64_t)w->timeout_s * 1000;
	uint64_t total = w->total;

	for (;;) {
		_cleanup_json_ json_object *ev = NULL;
		int r = qmp_wait_event(q, "MIGRATION", &ev, POLL_MS, err);

		if (r == 0) {
			const char *status = jstr(jobj(ev, "data"), "status");

			if (!status)
				continue;
			if (!strcmp(status, "completed")) {
				uint64_t done = done_bytes(w);

				if (!w->incoming)
					source_settle(q);
				report(w, done, total > done ? total : done, t0, true);
				return 0;
			}
			if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
				_cleanup_free_ char *why =
					w->incoming ? xstrdup("QEMU could not load the state")
						    : source_error(q);

				if (!w->incoming)
					source_settle(q);
				return qerr(err, EIO, "migration %s: %s", status, why);
			}
			continue;
		}
		if (r != -ETIMEDOUT)
			return r;
		if (!w->incoming) {
			_cleanup_json_ json_object *info = NULL;

			if (qmp_execute(q, "query-migrate", NULL, &info, 5000, err) == 0) {
				json_object *ram = jobj(info, "ram");
				int64_t t = jint(ram, "total", 0);

				if (t > 0)
					total = (uint64_t)t;
			}
		}
		report(w, done_bytes(w), total, t0, false);
		if (now_ms() >= deadline) {
			if (!w->incoming)
				migrate_end(q);
			return qerr(err, ETIMEDOUT, "%s did not finish within %d s (raise --timeout if the VM is large or the disk slow)",
				    w->phase, w->timeout_s);
		}
	}
}

int migrate_pass_fd(struct qmp *q, const char *name, int fd, qsnap_error *err)
{
	return qmp_execute_fd(q, "getfd", jbuild("fdname", json_object_new_string(name), NULL), fd,
			      NULL, 0, err);
}

int migrate_run(struct qmp *q, const char *fdname, const struct mig_wait *w, qsnap_error *err)
{
	_cleanup_free_ char *uri = xasprintf("fd:%s", fdname);
	int r;

	qmp_drop_events(q, "MIGRATION");
	r = qmp_execute(q, w->incoming ? "migrate-incoming" : "migrate",
			jbuild("uri", json_object_new_string(uri), NULL), NULL, 0, err);
	return r < 0 ? r : migrate_wait(q, w, err);
}
