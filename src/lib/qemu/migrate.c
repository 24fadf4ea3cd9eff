/* SPDX-License-Identifier: MIT */
/* Driving QEMU's migration to and from a file descriptor. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu/qemu.h"

/* QEMU's default max-bandwidth is 128 MiB/s, and it throttles the migration
 * of a paused VM too; 100 GiB/s means no limit on any machine we run on. */
#define UNLIMITED_BANDWIDTH (100LL << 30)
#define POLL_MS 200

static json_object *cap(const char *name, bool on)
{
	return jbuild("capability", json_object_new_string(name), "state",
		      json_object_new_boolean(on), NULL);
}

unsigned migrate_channels(void)
{
	return host_cores(4);
}

/* The environment overrides what qsnap config set (for a test or a
 * measurement); a bad value is ignored. */
unsigned migrate_channels_env(unsigned n)
{
	const char *env = getenv("QSNAP_MULTIFD_CHANNELS");
	long v = env && *env ? strtol(env, NULL, 10) : 0;

	return v >= 1 && v <= 64 ? (unsigned)v : n;
}

bool migrate_can_map(struct qmp *q)
{
	/* mapped-ram (QEMU 9.0) writes each RAM page at its own offset of a
	 * seekable file: file: only (fd: is refused), with multifd's
	 * channels writing in parallel. */
	return caps_migrate_cap(q, "mapped-ram") && caps_migrate_cap(q, "multifd") &&
	       caps_migrate_param(q, "multifd-channels") && caps_file_uri(q);
}

bool migrate_direct_io_env(bool incoming, bool dflt)
{
	const char *env = getenv("QSNAP_DIRECT_IO");

	if (!env || !*env)
		return dflt;
	return strstr(env, incoming ? "restore" : "save") != NULL;
}

bool migrate_can_pause_switchover(struct qmp *q)
{
	return caps_migrate_cap(q, "pause-before-switchover") && caps_command(q, "migrate-continue");
}

int migrate_setup(struct qmp *q, const struct mig_setup *s, qsnap_error *err)
{
	json_object *caps = json_object_new_array(), *params;
	bool incoming = s->incoming, mapped = s->mapped;
	int r;

	if (mapped && !migrate_can_map(q))
		return qerr(err, ENOTSUP, "this QEMU (%s) has no mapped-ram migration (QEMU >= 9.0 has)",
			    caps_version(q));
	/* MIGRATION events tell us when it ends, at both ends. */
	json_object_array_add(caps, cap("events", true));
	/* Set either way: a QEMU keeps capabilities from its last migration. */
	json_object_array_add(caps, cap("x-ignore-shared", s->ignore_shared));
	if (!incoming)
		json_object_array_add(caps, cap("background-snapshot", s->background));
	if (!incoming && caps_migrate_cap(q, "pause-before-switchover"))
		json_object_array_add(caps, cap("pause-before-switchover", s->switchover));
	/* Only the capabilities this QEMU has: setting an unknown one fails. */
	if (caps_migrate_cap(q, "mapped-ram"))
		json_object_array_add(caps, cap("mapped-ram", mapped));
	if (caps_migrate_cap(q, "multifd"))
		json_object_array_add(caps, cap("multifd", mapped));
	r = qmp_execute(q, "migrate-set-capabilities", jbuild("capabilities", caps, NULL), NULL, 0,
			err);
	if (r < 0)
		return r;
	params = json_object_new_object();
	if (!incoming)
		json_object_object_add(params, "max-bandwidth",
				       json_object_new_int64(UNLIMITED_BANDWIDTH));
	if (mapped)
		json_object_object_add(params, "multifd-channels",
				       json_object_new_int((int)migrate_channels_env(
					       s->channels ? s->channels : migrate_channels())));
	/* direct-io (QEMU 9.1+, mapped-ram only) is off unless asked for:
	 * off, a restore reads a recent snapshot from the page cache (openQA
	 * measured 3.6 MB/s with it against 4 GB/s without on one host). */
	qmp_caps(q)->direct_io = mapped && caps_migrate_param(q, "direct-io") &&
				 migrate_direct_io_env(incoming, s->direct_io);
	if (caps_migrate_param(q, "direct-io"))
		json_object_object_add(params, "direct-io",
				       json_object_new_boolean(qmp_caps(q)->direct_io));
	if (!json_object_object_length(params)) {
		json_object_put(params);
		return 0;
	}
	return qmp_execute(q, "migrate-set-parameters", params, NULL, 0, err);
}

static uint64_t done_bytes(const struct mig_wait *w)
{
	off_t off;

	if (w->pump)
		return pump_bytes(w->pump);
	if (w->counter)
		return __atomic_load_n(w->counter, __ATOMIC_RELAXED);
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

/* Does QEMU still hold the yank instance of a migration? */
static bool migration_yank_registered(struct qmp *q)
{
	_cleanup_json_ json_object *list = NULL;
	qsnap_error e2;

	if (!caps_command(q, "query-yank") ||
	    qmp_execute(q, "query-yank", NULL, &list, 5000, &e2) < 0)
		return false;
	for (size_t i = 0; json_object_is_type(list, json_type_array) &&
			   i < json_object_array_length(list);
	     i++) {
		const char *type = jstr(json_object_array_get_idx(list, i), "type");

		if (type && !strcmp(type, "migration"))
			return true;
	}
	return false;
}

/* QEMU sends the MIGRATION event that ends an outgoing migration before it
 * leaves the run state finish-migrate, and refuses "cont" until it has
 * ("Migration is not finalized yet"): on a fast disk qsnap got there first.
 * And it unregisters the migration's yank instance only in its cleanup
 * after that event: a migrate within ~5 ms of a finished background
 * snapshot failed with "duplicate yank instance" and stayed stuck until
 * migrate_cancel (QEMU 10.0.2). Wait (briefly) until QEMU has settled. */
static void source_settle(struct qmp *q)
{
	int64_t deadline = now_ms() + 10000;

	while (now_ms() < deadline && migration_yank_registered(q))
		sleep_ms(2);
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

/* A live save stopped the guest for the disks' cut. QEMU 7.2 resumes it
 * itself once the device state is saved; QEMU >= 9.0 puts it back into the
 * run state it had when the migration began (paused), so qsnap sends cont,
 * but only once RAM pages flow: a cont before QEMU has saved the device
 * state is racy (QEMU stops the guest again and saves a later state,
 * seen on 10.0.2). Returns true when the guest runs (or cannot be made to). */
static bool live_resume(struct qmp *q, json_object *info, bool done, qsnap_error *err)
{
	_cleanup_json_ json_object *st = NULL;
	json_object *ram = jobj(info, "ram");

	if (!done && jint(ram, "normal", 0) + jint(ram, "duplicate", 0) <= 0)
		return false;
	if (qmp_execute(q, "query-status", NULL, &st, 5000, err) < 0)
		return true;
	if (jbool(st, "running", false))
		return true;
	qmp_execute(q, "cont", NULL, NULL, 5000, err);
	return true;
}

/* Time an outgoing migration that was cancelled or ran out of time gets to
 * end (migrate_cancel, and QEMU settling) before qsnap stops asking. */
#define END_GRACE_MS 10000

/* The wait ended early (cancelled, or out of time): an outgoing migration
 * ends too, whatever the caller's cancellation says, within END_GRACE_MS. */
static void end_early(struct qmp *q, const struct mig_wait *w)
{
	struct qmp_bounds old;

	/* One that does not answer is the caller's to end (kill). */
	if (w->incoming || qmp_stalled(q))
		return;
	/* QEMU blocked on a full pipe would not get to the cancel. */
	pump_drain(w->pump);
	old = qmp_bound(q, (struct qmp_bounds){.cancel_fd = -1, .limit = now_ms() + END_GRACE_MS});
	migrate_end(q);
	qmp_bound(q, old);
}

/* A precopy save waits in pre-switchover with the guest stopped: the
 * caller's cut, then on. */
static int switchover(struct qmp *q, const struct mig_wait *w, qsnap_error *err)
{
	int r = w->switchover(w->switchover_data, err);

	if (r == 0)
		r = qmp_execute(q, "migrate-continue",
				jbuild("state", json_object_new_string("pre-switchover"), NULL), NULL,
				0, err);
	if (r < 0)
		end_early(q, w);
	return r;
}

/* Passes over RAM after which a precopy save stops a guest that dirties
 * RAM faster than QEMU writes it (dirty-sync-count counts the first sync
 * before any pass too). */
#define PRECOPY_PASSES 3

static int wait_loop(struct qmp *q, const struct mig_wait *w, int64_t deadline, qsnap_error *err)
{
	bool stopped = false;
	struct progress p;
	bool to_resume = w->live && !w->incoming;

	progress_begin(&p, w->phase, w->progress, w->userdata, w->total);
	for (;;) {
		_cleanup_json_ json_object *ev = NULL;
		int r = qmp_wait_event(q, "MIGRATION", &ev, to_resume ? 2 : POLL_MS, err);

		if (r == 0) {
			const char *status = jstr(jobj(ev, "data"), "status");

			if (!status)
				continue;
			if (!strcmp(status, "pre-switchover") && w->switchover) {
				r = switchover(q, w, err);
				if (r < 0)
					return r;
				continue;
			}
			if (!strcmp(status, "completed")) {
				uint64_t done = done_bytes(w);

				if (w->completed_at)
					*w->completed_at = now_wall();
				if (!w->incoming)
					source_settle(q);
				if (to_resume) {
					qsnap_error e2;
					live_resume(q, NULL, true, &e2);
				}
				if (done > p.total)
					p.total = done;
				progress_report(&p, done, true);
				return 0;
			}
			if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
				_cleanup_free_ char *why = source_error(q);

				if (w->incoming && !strcmp(why, "no details")) {
					free(why);
					why = xstrdup("QEMU could not load the state");
				}

				if (!w->incoming)
					source_settle(q);
				if (to_resume) {
					qsnap_error e2;
					live_resume(q, NULL, true, &e2);
				}
				return qerr(err, EIO, "migration %s: %s", status, why);
			}
			continue;
		}
		if (r == -ECANCELED) {
			end_early(q, w);
			return r;
		}
		if (r != -ETIMEDOUT)
			return r;
		if (!w->incoming) {
			_cleanup_json_ json_object *info = NULL;

			if (qmp_execute(q, "query-migrate", NULL, &info, 5000, err) == 0) {
				json_object *ram = jobj(info, "ram");
				int64_t t = jint(ram, "total", 0);

				if (t > 0)
					p.total = (uint64_t)t;
				if (to_resume && live_resume(q, info, false, err))
					to_resume = false;
				if (w->switchover && !stopped &&
				    jint(ram, "dirty-sync-count", 0) > PRECOPY_PASSES) {
					qsnap_error e2;

					qmp_execute(q, "stop", NULL, NULL, 5000, &e2);
					stopped = true;
				}
			}
		}
		progress_report(&p, done_bytes(w), false);
		if (now_ms() >= deadline) {
			bool stalled = qmp_stalled(q);

			end_early(q, w);
			if (stalled)
				return qerr(err, ETIMEDOUT, "%s did not finish within %d s: QEMU stopped answering",
					    w->phase, w->timeout_s);
			return qerr(err, ETIMEDOUT, "%s did not finish within %d s (raise --timeout if the VM is large or the disk slow)",
				    w->phase, w->timeout_s);
		}
	}
}

int migrate_wait(struct qmp *q, const struct mig_wait *w, qsnap_error *err)
{
	int64_t deadline = now_ms() + (int64_t)w->timeout_s * 1000;
	struct qmp_bounds old = qmp_bound(q, (struct qmp_bounds){.cancel_fd = -1});
	int r;

	/* No command of the wait (query-migrate, the switchover's cut) lasts
	 * past its deadline. */
	qmp_bound(q, (struct qmp_bounds){
		.cancel_fd = old.cancel_fd,
		.limit = old.limit > 0 && old.limit < deadline ? old.limit : deadline,
	});
	r = wait_loop(q, w, deadline, err);
	qmp_bound(q, old);
	return r;
}

int migrate_run(struct qmp *q, const struct mig_target *t, const struct mig_wait *w,
		qsnap_error *err)
{
	static const char *const events[] = {"MIGRATION", NULL};
	int r;

	if (w->incoming) {
		/* QEMU >= 9.1 can stay up after a failed load (exit-on-error
		 * false) and say why in query-migrate; older ones do not know
		 * the argument ("Parameter 'exit-on-error' is unexpected") and
		 * exit, their reason in qemu.log. */
		r = qmp_execute_expect(q, "migrate-incoming",
				       jbuild("uri", json_object_new_string(t->uri), "exit-on-error",
					      json_object_new_boolean(false), NULL),
				       events, NULL, 0, err);
		if (r < 0 && strstr(err->msg, "exit-on-error"))
			r = qmp_execute_expect(q, "migrate-incoming",
					       jbuild("uri", json_object_new_string(t->uri), NULL),
					       events, NULL, 0, err);
		return r < 0 ? r : migrate_wait(q, w, err);
	}
	source_settle(q);
	r = qmp_execute_expect(q, "migrate", jbuild("uri", json_object_new_string(t->uri), NULL),
			       events, NULL, 0, err);
	if (r < 0 && strstr(err->msg, "yank")) {
		/* The failed migrate leaves QEMU's migration stuck until
		 * migrate_cancel (QEMU 10.0.2): never leave it so. */
		migrate_end(q);
		r = qmp_execute_expect(q, "migrate",
				       jbuild("uri", json_object_new_string(t->uri), NULL), events,
				       NULL, 0, err);
		if (r < 0)
			migrate_end(q);
	}
	return r < 0 ? r : migrate_wait(q, w, err);
}
