/* SPDX-License-Identifier: MIT */
/* Progress reports, and the progress phases by name (qsnap.h lists them). */
#include <string.h>

#include "base/base.h"

void progress_begin(struct progress *p, const char *phase, qsnap_progress_fn fn, void *userdata,
		    uint64_t total)
{
	*p = (struct progress){
		.phase = phase, .fn = fn, .userdata = userdata, .total = total, .t0 = now_ms()};
}

void progress_report(const struct progress *p, uint64_t done, bool finished)
{
	qsnap_progress q = {
		.phase = p->phase,
		.done = done,
		.total = p->total,
		.elapsed = (double)(now_ms() - p->t0) / 1000.0,
		.finished = finished,
	};

	if (p->fn)
		p->fn(&q, p->userdata);
}

qsnap_phase qsnap_progress_phase(const qsnap_progress *p)
{
	static const struct {
		const char *name;
		qsnap_phase phase;
	} phases[] = {
		{"save", QSNAP_PHASE_SAVE},
		{"save RAM", QSNAP_PHASE_SAVE_RAM},
		{"persist RAM", QSNAP_PHASE_PERSIST_RAM},
		{"restore", QSNAP_PHASE_RESTORE},
		{"restore RAM", QSNAP_PHASE_RESTORE_RAM},
		{"dump", QSNAP_PHASE_DUMP},
		{"load dump", QSNAP_PHASE_LOAD_DUMP},
		{"publish", QSNAP_PHASE_PUBLISH},
		{"verify", QSNAP_PHASE_VERIFY},
		{"export", QSNAP_PHASE_EXPORT},
		{"import", QSNAP_PHASE_IMPORT},
		{"digest", QSNAP_PHASE_DIGEST},
		{"check", QSNAP_PHASE_CHECK},
		{"upload", QSNAP_PHASE_UPLOAD},
		{"download", QSNAP_PHASE_DOWNLOAD},
	};

	if (!p || !p->phase)
		return QSNAP_PHASE_OTHER;
	if (!strncmp(p->phase, "flatten ", 8))
		return QSNAP_PHASE_FLATTEN;
	for (size_t i = 0; i < ARRAY_SIZE(phases); i++)
		if (!strcmp(p->phase, phases[i].name))
			return phases[i].phase;
	return QSNAP_PHASE_OTHER;
}
