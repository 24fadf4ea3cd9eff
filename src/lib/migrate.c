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

/* QEMU reports "completed" before its migration thread has cleaned up;
 * until then the run state is still finish-migrate and "cont" is refused
 * ("Migration is not finalized yet"). */
static int wait_finalized(struct qmp *q, qsnap_error *err)
{
	int64_t deadline = now_ms() + 10000;

	for (;;) {
		_cleanup_json_ json_object *st = NULL;
		const char *s;
		int r = qmp_execute(q, "query-status", NULL, &st, 0, err);

		if (r < 0)
			return r;
		s = jstr(st, "status");
		if (!s || strcmp(s, "finish-migrate"))
			return 0;
		if (now_ms() > deadline)
			return qerr(err, ETIMEDOUT, "QEMU did not finish the migration");
		sleep_ms(2);
	}
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
				report(w, done, total > done ? total : done, t0, true);
				return w->incoming ? 0 : wait_finalized(q, err);
			}
			if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
				_cleanup_free_ char *why =
					w->incoming ? xstrdup("QEMU could not load the state")
						    : source_error(q);
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
			if (!w->incoming) {
				qsnap_error e2;

				qmp_execute(q, "migrate_cancel", NULL, NULL, 5000, &e2);
				qmp_wait_event(q, "MIGRATION", NULL, 5000, &e2);
			}
			return qerr(err, ETIMEDOUT, "%s did not finish within %d s (raise --timeout if the VM is large or the disk slow)",
				    w->phase, w->timeout_s);
		}
	}
}
