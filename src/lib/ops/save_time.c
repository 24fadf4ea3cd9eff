/* SPDX-License-Identifier: MIT */
/* Where a save's time goes (qsnap_save_stats.phases): steps and phases in
 * wall-clock time, so that QEMU's STOP and RESUME events fit in. */
#include "ops/save.h"

static double event_time(json_object *ev)
{
	json_object *ts = jobj(ev, "timestamp");

	return (double)jint(ts, "seconds", 0) + (double)jint(ts, "microseconds", 0) / 1e6;
}

double save_stop_time(struct save *sv)
{
	_cleanup_json_ json_object *stop = NULL;
	qsnap_error e2;

	if (!sv->stop_at && qmp_wait_event(sv->q, "STOP", &stop, 0, &e2) == 0)
		sv->stop_at = event_time(stop);
	return sv->stop_at;
}

/* How long the guest was paused: QEMU's STOP to RESUME events. */
double save_pause_seconds(struct save *sv)
{
	_cleanup_json_ json_object *resume = NULL;
	double stop = save_stop_time(sv), t;
	qsnap_error e2;

	if (!stop || qmp_wait_event(sv->q, "RESUME", &resume, 1000, &e2) < 0)
		return 0;
	t = event_time(resume);
	save_phase(sv, "paused", stop, t);
	return t - stop;
}

void save_phase(struct save *sv, const char *name, double start, double end)
{
	if (sv->n_phases < QSNAP_SAVE_PHASES && start > 0 && end >= start)
		sv->phases[sv->n_phases++] = (struct qsnap_save_phase){name, start, end - start};
}

void save_step(struct save *sv, const char *name)
{
	double t = now_wall();

	save_phase(sv, name, sv->last, t);
	sv->last = t;
}

