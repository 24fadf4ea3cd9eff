/* SPDX-License-Identifier: MIT */
/* Chain upkeep. Every save adds a layer to a drive's chain, and reads walk
 * the chain; compacting shortens chains without changing what any
 * snapshot restores to:
 *  1. a layer that no snapshot and no live disk names, with exactly one
 *     layer on top, is merged into that layer;
 *  2. a live chain longer than the limit is flattened onto its base image:
 *     the active layer takes in the data of the layers below it (they stay
 *     while snapshots need them). Snapshots' own chains are left as they
 *     are: flattening them would copy shared data once per snapshot.
 * Layers the running QEMU has open are changed only through QEMU (a
 * block-stream job into the active layer); the others with qemu-img rebase,
 * which keeps what the layer reads as and only then changes its backing. */
#include <errno.h>
#include <string.h>

#include "ops/ops.h"

#define STREAM_TIMEOUT_MS (3600 * 1000)

/* Is layer part of the chain the running QEMU has open? */
static bool in_use(qsnap_vm *vm, const char *layer)
{
	if (!vm_qemu_alive(vm))
		return false;
	for (size_t i = 0; i < vm->st.n_active; i++)
		for (const char *l = vm->st.active[i].layer; l;) {
			struct layer *ly = state_layer(&vm->st, l);

			if (!strcmp(l, layer))
				return true;
			l = ly ? ly->backing : NULL;
		}
	return false;
}

/* Give layer a new backing (a layer, or NULL: the drive's base) with the
 * same contents: qemu-img rebase copies what differs first. */
static int rebase(qsnap_vm *vm, struct layer *l, const char *backing, qsnap_error *err)
{
	const qsnap_drive_def *d = def_drive(&vm->def, l->drive);
	_cleanup_free_ char *layers = vm_path(vm, VMDIR_LAYERS);
	_cleanup_free_ char *img = qemu_img_for(vm->def.qemu);
	int r;

	r = img_rebase(img, layers, layout_in_layers(l->path),
		       backing ? layout_in_layers(backing) : d->path, backing ? "qcow2" : d->format,
		       false, err);
	if (r < 0)
		return qerr_prefix(err, "compacting %s", l->path);
	free(l->backing);
	l->backing = xstrdup_or_null(backing);
	return vm_write_state(vm, err);
}

/* Through the running QEMU: a block-stream job copies into layer l what
 * the layers between it and its new backing hold, then makes that its
 * backing (QEMU rewrites the header). */
static int stream(qsnap_vm *vm, struct layer *l, const char *backing, qsnap_error *err)
{
	size_t idx = (size_t)(def_drive(&vm->def, l->drive) - vm->def.drives);
	_cleanup_free_ char *node = qemu_layer_node(l->path);
	_cleanup_free_ char *base = backing ? qemu_layer_node(backing) : qemu_base_node(idx);
	_cleanup_free_ char *job = xasprintf("qsnap-compact-%s", node);
	int64_t deadline = now_ms() + STREAM_TIMEOUT_MS;
	struct qmp *q;
	int r;

	r = vm_qmp(vm, &q, err);
	if (r < 0)
		return r;
	/* QEMU would write the path as it opened it (relative to the VM
	 * directory); the header names backing files relative to layers/. */
	r = qmp_execute_expect(q, "block-stream",
			       jbuild("job-id", json_object_new_string(job), "device",
				      json_object_new_string(node), "base-node",
				      json_object_new_string(base), "backing-file",
				      json_object_new_string(backing ? layout_in_layers(backing)
								     : vm->def.drives[idx].path),
				      NULL),
			       (const char *const[]){"BLOCK_JOB_COMPLETED", NULL}, NULL, 0, err);
	if (r < 0)
		return qerr_prefix(err, "compacting %s", l->path);
	for (;;) {
		_cleanup_json_ json_object *ev = NULL;
		json_object *data;
		const char *e;

		r = qmp_wait_event(q, "BLOCK_JOB_COMPLETED", &ev, 1000, err);
		if (r == -ETIMEDOUT && now_ms() < deadline)
			continue;
		if (r < 0)
			return r;
		data = jobj(ev, "data");
		if (!jstr(data, "device") || strcmp(jstr(data, "device"), job))
			continue;
		if ((e = jstr(data, "error")))
			return qerr(err, EIO, "compacting %s: %s", l->path, e);
		break;
	}
	free(l->backing);
	l->backing = xstrdup_or_null(backing);
	return vm_write_state(vm, err);
}

/* fold: also fold long chains of differential snapshots (qsnap compact);
 * a save's upkeep compacts the disks only. */
static int compact(qsnap_vm *vm, unsigned max_chain, bool fold, qsnap_compact_stats *ret_stats,
		   qsnap_error *err)
{
	qsnap_compact_stats stats = {.size = sizeof(stats)};
	_cleanup_strv_ char **flatten = NULL;
	struct layer *child;
	int r;

	if (max_chain == 0)
		max_chain = vm->def.max_chain ? vm->def.max_chain : QSNAP_DEFAULT_MAX_CHAIN;
	if (max_chain < 2)
		return qerr(err, EINVAL, "a chain holds at least the base image and one layer: the limit must be 2 or more");
	/* 1. Merge the layers nothing names into their only child. */
	while ((child = chain_next_merge(&vm->st))) {
		_cleanup_free_ char *backing = xstrdup_or_null(state_layer(&vm->st, child->backing)->backing);

		/* QEMU has it open: only QEMU may change it. */
		r = in_use(vm, child->path) ? stream(vm, child, backing, err)
					    : rebase(vm, child, backing, err);
		if (r < 0)
			return r;
		stats.merged++;
		r = chain_gc(vm, err);
		if (r < 0)
			return r;
	}
	/* 2. Flatten live chains that are still too long. */
	flatten = chain_too_long(&vm->st, max_chain);
	for (char **f = flatten; f && *f; f++) {
		struct layer *l = state_layer(&vm->st, *f);

		r = vm_qemu_alive(vm) ? stream(vm, l, NULL, err) : rebase(vm, l, NULL, err);
		if (r < 0)
			return r;
		stats.flattened++;
	}
	r = chain_gc(vm, err);
	if (r < 0)
		return r;
	/* 3. Fold long chains of differential snapshots; not the one the next
	 * --diff save builds on (the VM's RAM parent), whose chain tells that
	 * save which pages it wrote: folded, the save would write everything
	 * written since the RAM file (655 MiB against 68 measured in
	 * bench/milestones). */
	for (size_t i = 0; fold && i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];
		const char *why;

		if (s->n_ram_chain < QSNAP_FOLD_AT || !ram_fold_possible(vm, s, &why) ||
		    s == ram_chain_parent(vm))
			continue;
		r = qsnap_vm_fold(vm, s->name, err);
		if (r < 0)
			return r;
		stats.folded++;
	}
	for (size_t i = 0; i < vm->st.n_active; i++) {
		size_t n = chain_length(&vm->st, vm->st.active[i].layer);
		if (n > stats.longest)
			stats.longest = n;
	}
	sized_out(ret_stats, &stats, sizeof(stats));
	return 0;
}

int qsnap_vm_compact(qsnap_vm *vm, unsigned max_chain, qsnap_compact_stats *ret_stats,
		     qsnap_error *err)
{
	int r = sized_check(ret_stats, "qsnap_compact_stats", err);

	return r < 0 ? r : compact(vm, max_chain, true, ret_stats, err);
}

int vm_compact_disks(qsnap_vm *vm, unsigned max_chain, qsnap_error *err)
{
	return compact(vm, max_chain, false, NULL, err);
}
