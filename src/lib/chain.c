/* SPDX-License-Identifier: MIT */
/* Drive layers. Every writable drive is a chain: base image (never
 * written) <- layer <- ... <- active layer. A save freezes the active layer
 * and puts a new one on top; a restore puts a new one on the snapshot's
 * frozen layer. Layers name their backing file relative to layers/, so the
 * VM directory can move. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

char *chain_node_name(const char *layer_path)
{
	const char *dash = strrchr(layer_path, '-');

	/* layers/<drive>-<seq>.qcow2 -> n<seq>: unique in one QEMU, and short
	 * enough for QEMU's 31-character node names. */
	return xasprintf("n%lu", dash ? strtoul(dash + 1, NULL, 10) : 0UL);
}

char *chain_base_node(size_t index)
{
	return xasprintf("base%zu", index);
}

size_t chain_layers(struct state *st, const char *top, const char ***ret)
{
	size_t n = 0;

	*ret = NULL;
	for (const char *l = top; l;) {
		struct layer *ly = state_layer(st, l);

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

size_t chain_length(struct state *st, const char *top)
{
	const char **layers = NULL;
	size_t n = chain_layers(st, top, &layers);

	free(layers);
	return n + 1; /* the base image */
}

int chain_new_layer(qsnap_vm *vm, const qsnap_drive_def *d, const char *backing, char **ret_path,
		    qsnap_error *err)
{
	unsigned long seq = ++vm->st.seq;
	_cleanup_free_ char *path = xasprintf("layers/%s-%lu.qcow2", d->id, seq);
	_cleanup_free_ char *layers = xasprintf("%s/layers", vm->dir);
	const char *name = path + strlen("layers/");
	const char *b = backing ? backing + strlen("layers/") : d->path;
	const char *bfmt = backing ? "qcow2" : d->format;
	_cleanup_free_ char *img = qemu_img_for(vm->def.qemu);
	char *argv[] = {img, "create", "-q", "-f", "qcow2", "-F", (char *)bfmt, "-b",
			(char *)b, (char *)name, NULL};
	int r;

	/* qemu-img opens the backing file shared, so this works while QEMU
	 * has the chain open. */
	r = run_program(layers, argv, NULL, err);
	if (r < 0) {
		unlinkat(vm->dirfd, path, 0);
		return qerr_prefix(err, "cannot create layer %s for drive '%s'", path, d->id);
	}
	state_add_layer(&vm->st, path, d->id, backing);
	*ret_path = TAKE_PTR(path);
	return 0;
}

static void mark(struct state *st, bool *needed, const char *layer)
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

int chain_gc(qsnap_vm *vm, qsnap_error *err)
{
	struct state *st = &vm->st;
	_cleanup_free_ bool *needed = xcalloc(st->n_layers, sizeof(bool));
	char **gone = NULL;
	size_t n_gone = 0, j = 0;
	int r;

	for (size_t i = 0; i < st->n_active; i++)
		mark(st, needed, st->active[i].layer);
	for (size_t i = 0; i < st->n_snapshots; i++)
		for (size_t k = 0; k < st->snapshots[i].n_drives; k++)
			mark(st, needed, st->snapshots[i].drives[k].layer);
	for (size_t i = 0; i < st->n_layers; i++) {
		if (needed[i]) {
			st->layers[j++] = st->layers[i];
			continue;
		}
		strv_push(&gone, &n_gone, st->layers[i].path);
		free(st->layers[i].path);
		free(st->layers[i].drive);
		free(st->layers[i].backing);
	}
	st->n_layers = j;
	if (!n_gone)
		return 0;
	/* Forget them first: a crash in between leaves stray files, never a
	 * state that names missing layers. */
	r = vm_write_state(vm, err);
	if (r >= 0)
		for (size_t i = 0; i < n_gone; i++)
			unlinkat(vm->dirfd, gone[i], 0);
	strv_free(gone);
	return r;
}
