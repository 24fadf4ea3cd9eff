/* SPDX-License-Identifier: MIT */
/* What must hold between the entries of state.json, checked once on read
 * so that nothing after it walks a chain that loops or names a layer that
 * is not there: every backing is a layer of the same drive, the backing
 * files form no cycle, the layers that active and every snapshot name
 * belong to their drive, and a running QEMU is known by its start time. */
#include <limits.h>
#include <string.h>

#include "vmdir/vmdir.h"

/* path -> index into st->layers. */
static json_object *layer_index(const struct state *st, char **problem)
{
	json_object *idx = json_object_new_object();

	for (size_t i = 0; i < st->n_layers; i++) {
		if (json_object_object_get_ex(idx, st->layers[i].path, NULL)) {
			*problem = xasprintf("bad 'layers[%zu].path': %s is listed twice", i,
					     st->layers[i].path);
			json_object_put(idx);
			return NULL;
		}
		json_object_object_add(idx, st->layers[i].path, json_object_new_int64((int64_t)i));
	}
	return idx;
}

static long find(json_object *idx, const char *path)
{
	json_object *v;

	return path && json_object_object_get_ex(idx, path, &v) ? (long)json_object_get_int64(v) : -1;
}

/* Each layer's backing, as an index (-1: the base image); a backing that
 * is no layer, or a layer of another drive, is a problem. */
static char *backings(const struct state *st, json_object *idx, long *below)
{
	for (size_t i = 0; i < st->n_layers; i++) {
		const struct layer *l = &st->layers[i];

		below[i] = find(idx, l->backing);
		if (l->backing && below[i] < 0)
			return xasprintf("bad 'layers[%zu].backing': %s, the backing of %s, is not a layer",
					 i, l->backing, l->path);
		if (below[i] >= 0 && strcmp(st->layers[below[i]].drive, l->drive))
			return xasprintf("bad 'layers[%zu].backing': %s is a layer of drive '%s', "
					 "not of '%s'",
					 i, l->backing, st->layers[below[i]].drive, l->drive);
	}
	return NULL;
}

/* Walk down from every layer; a walk that meets a layer of its own walk
 * again loops. Each layer is walked through once: O(layers). */
static char *cycles(const struct state *st, const long *below)
{
	enum { NEW, ON_WALK, DONE };
	_cleanup_free_ unsigned char *mark = xcalloc(st->n_layers + 1, 1);

	for (size_t i = 0; i < st->n_layers; i++) {
		long l;

		for (l = (long)i; l >= 0 && mark[l] == NEW; l = below[l])
			mark[l] = ON_WALK;
		if (l >= 0 && mark[l] == ON_WALK)
			return xasprintf("bad 'layers[%ld].backing': the backing files of %s form a "
					 "cycle",
					 l, st->layers[l].path);
		for (l = (long)i; l >= 0 && mark[l] == ON_WALK; l = below[l])
			mark[l] = DONE;
	}
	return NULL;
}

static char *drive_of(const struct state *st, json_object *idx, const char *field,
		      const char *drive, const char *layer)
{
	long i = find(idx, layer);

	if (i < 0)
		return xasprintf("bad '%s': %s is not a layer", field, layer);
	if (strcmp(st->layers[i].drive, drive))
		return xasprintf("bad '%s': %s is a layer of drive '%s'", field, layer,
				 st->layers[i].drive);
	return NULL;
}

char *state_problem(const struct state *st)
{
	_cleanup_json_ json_object *idx = NULL;
	_cleanup_free_ long *below = NULL;
	char *p = NULL;

	if (st->qemu_pid < 0)
		return xstrdup("bad 'qemu.pid'");
	/* A bare pid may be anyone's by now: without the start time qsnap
	 * could signal an unrelated process. */
	if (st->qemu_pid > 0 && st->qemu_start == 0)
		return xasprintf("bad 'qemu.start_time': pid %d has none", (int)st->qemu_pid);
	idx = layer_index(st, &p);
	if (!idx)
		return p;
	below = xcalloc(st->n_layers + 1, sizeof(*below));
	if ((p = backings(st, idx, below)) || (p = cycles(st, below)))
		return p;
	for (size_t i = 0; i < st->n_active; i++) {
		_cleanup_free_ char *field = xasprintf("active.%s", st->active[i].drive);

		if ((p = drive_of(st, idx, field, st->active[i].drive, st->active[i].layer)))
			return p;
	}
	for (size_t i = 0; i < st->n_snapshots; i++)
		for (size_t j = 0; j < st->snapshots[i].n_drives; j++) {
			const struct snap_drive *sd = &st->snapshots[i].drives[j];
			_cleanup_free_ char *field =
				xasprintf("snapshots[%zu].drives.%s", i, sd->drive);

			if ((p = drive_of(st, idx, field, sd->drive, sd->layer)))
				return p;
		}
	return NULL;
}
