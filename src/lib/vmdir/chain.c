/* SPDX-License-Identifier: MIT */
/* Drive layers. Every writable drive is a chain: base image (never
 * written) <- layer <- ... <- active layer. A save freezes the active layer
 * and puts a new one on top; a restore puts a new one on the snapshot's
 * frozen layer. Layers name their backing file relative to layers/, so the
 * VM directory can move. */
#include <string.h>

#include "vmdir/vmdir.h"

size_t chain_layers(const struct state *st, const char *top, const char ***ret)
{
	size_t n = 0;

	*ret = NULL;
	/* state.json's chains are acyclic (state_problem); the bound keeps a
	 * state changed since from looping: a chain has no more layers than
	 * the state. */
	for (const char *l = top; l && n <= st->n_layers;) {
		const struct layer *ly = state_layer((struct state *)st, l);

		*ret = xrealloc(*ret, (n + 1) * sizeof(char *));
		(*ret)[n++] = l;
		l = ly ? ly->backing : NULL;
	}
	/* Bottom first. */
	for (size_t i = 0; i < n / 2; i++) {
		const char *t = (*ret)[i];
		(*ret)[i] = (*ret)[n - 1 - i];
		(*ret)[n - 1 - i] = t;
	}
	return n;
}

size_t chain_length(const struct state *st, const char *top)
{
	const char **layers = NULL;
	size_t n = chain_layers(st, top, &layers);

	free(layers);
	return n + 1; /* the base image */
}

int chain_new_layer(qsnap_vm *vm, const qsnap_drive_def *d, const char *backing, char **ret_path,
		    qsnap_error *err)
{
	_cleanup_free_ char *path = layout_layer(d->id, ++vm->st.seq);
	_cleanup_free_ char *layers = vm_path(vm, VMDIR_LAYERS);
	_cleanup_free_ char *img = qemu_img_for(vm->def.qemu);
	int r;

	/* qemu-img opens the backing file shared, so this works while QEMU
	 * has the chain open. */
	r = img_create(img, layers, layout_in_layers(path),
		       backing ? layout_in_layers(backing) : d->path, backing ? "qcow2" : d->format,
		       err);
	if (r < 0) {
		unlinkat(vm->dirfd, path, 0);
		return qerr_prefix(err, "cannot create layer %s for drive '%s'", path, d->id);
	}
	state_add_layer(&vm->st, path, d->id, backing);
	*ret_path = TAKE_PTR(path);
	return 0;
}

static void mark(const struct state *st, bool *needed, const char *layer)
{
	while (layer) {
		size_t i;

		for (i = 0; i < st->n_layers; i++)
			if (!strcmp(st->layers[i].path, layer))
				break;
		if (i == st->n_layers || needed[i])
			return;
		needed[i] = true;
		layer = st->layers[i].backing;
	}
}

char **chain_unneeded(const struct state *st)
{
	_cleanup_free_ bool *needed = xcalloc(st->n_layers + 1, sizeof(bool));
	char **gone = NULL;
	size_t n_gone = 0;

	for (size_t i = 0; i < st->n_active; i++)
		mark(st, needed, st->active[i].layer);
	for (size_t i = 0; i < st->n_snapshots; i++)
		for (size_t k = 0; k < st->snapshots[i].n_drives; k++)
			mark(st, needed, st->snapshots[i].drives[k].layer);
	for (size_t i = 0; i < st->n_layers; i++)
		if (!needed[i])
			strv_push(&gone, &n_gone, st->layers[i].path);
	return gone;
}

int chain_gc(qsnap_vm *vm, qsnap_error *err)
{
	char **gone = chain_unneeded(&vm->st);
	int r;

	if (!gone)
		return 0;
	for (char **g = gone; *g; g++)
		state_remove_layer(&vm->st, *g);
	/* Forget them first: a crash in between leaves stray files, never a
	 * state that names missing layers. */
	r = vm_write_state(vm, err);
	if (r >= 0)
		for (char **g = gone; *g; g++)
			rm_rf_detached(vm->dirfd, *g);
	strv_free(gone);
	return r;
}

/* ---- compaction's planner ---- */

static bool referenced(const struct state *st, const char *layer)
{
	for (size_t i = 0; i < st->n_active; i++)
		if (!strcmp(st->active[i].layer, layer))
			return true;
	for (size_t i = 0; i < st->n_snapshots; i++)
		for (size_t j = 0; j < st->snapshots[i].n_drives; j++)
			if (!strcmp(st->snapshots[i].drives[j].layer, layer))
				return true;
	return false;
}

struct layer *chain_next_merge(const struct state *st)
{
	for (size_t i = 0; i < st->n_layers; i++) {
		const char *path = st->layers[i].path;
		struct layer *child = NULL;
		size_t n = 0;

		if (referenced(st, path))
			continue;
		for (size_t k = 0; k < st->n_layers; k++)
			if (st->layers[k].backing && !strcmp(st->layers[k].backing, path)) {
				child = &st->layers[k];
				n++;
			}
		if (n == 1)
			return child;
	}
	return NULL;
}

char **chain_too_long(const struct state *st, unsigned max_chain)
{
	char **v = NULL;
	size_t n = 0;

	for (size_t i = 0; i < st->n_active; i++) {
		const char *top = st->active[i].layer;

		if (state_layer((struct state *)st, top) && chain_length(st, top) > max_chain)
			strv_push(&v, &n, top);
	}
	return v;
}
