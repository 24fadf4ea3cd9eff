/* SPDX-License-Identifier: MIT */
/* The snapshot tree: listing and deleting snapshots. */
#include <string.h>

#include "ops/ops.h"

/* path (in the snapshot's directory) is another snapshot's file too: not
 * counted in si's size. */
static void not_own(qsnap_vm *vm, qsnap_snapshot_info *si, const char *path)
{
	uint64_t shared = disk_usage(vm->dirfd, path);

	si->size -= shared < si->size ? shared : si->size;
}

int qsnap_vm_list(qsnap_vm *vm, qsnap_snapshot_info ***ret_list, size_t *ret_n, qsnap_error *err)
{
	qsnap_snapshot_info **list = xcalloc(vm->st.n_snapshots + 1, sizeof(*list));

	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];
		qsnap_snapshot_info *si = list[i] = xcalloc(1, sizeof(*si));

		si->name = xstrdup(s->name);
		si->parent = xstrdup_or_null(s->parent);
		si->created = s->created;
		si->mode = s->mode;
		si->was_running = s->was_running;
		si->compressed = s->compressed;
		si->current = vm->st.current && !strcmp(vm->st.current, s->name);
		si->size = disk_usage(vm->dirfd, s->dir);
		si->ram_base = xstrdup_or_null(s->ram_base);
		si->ram_deltas = s->n_ram_chain;
		si->ram_after = s->n_ram_chain ? xstrdup(s->ram_chain[s->n_ram_chain - 1].snapshot) : NULL;
		if (s->ram_base) {
			/* The RAM file is the base's (a hard link), unless it
			 * names itself: its chain was folded into a file of its
			 * own. The older deltas of its chain are theirs. */
			if (strcmp(s->ram_base, s->name)) {
				_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

				not_own(vm, si, ram);
			}
			for (size_t k = 1; k <= s->n_ram_chain; k++) {
				_cleanup_free_ char *delta = snapshot_delta(s, k);

				not_own(vm, si, delta);
			}
		}
		for (size_t j = 0; j < s->n_drives; j++)
			si->size += disk_usage(vm->dirfd, s->drives[j].layer);
	}
	(void)err;
	*ret_list = list;
	*ret_n = vm->st.n_snapshots;
	return 0;
}

void qsnap_snapshot_info_free(qsnap_snapshot_info **list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++) {
		free(list[i]->name);
		free(list[i]->parent);
		free(list[i]->ram_base);
		free(list[i]->ram_after);
		free(list[i]);
	}
	free(list);
}

int qsnap_vm_delete(qsnap_vm *vm, const char *name, qsnap_error *err)
{
	struct snapshot *s;
	_cleanup_free_ char *dir = NULL, *parent = NULL;
	int r;

	r = find_snapshot(vm, name, &s, err);
	if (r < 0)
		return r;
	dir = xstrdup(s->dir);
	parent = xstrdup_or_null(s->parent);
	/* Its children and the current state now descend from its parent;
	 * their layers still chain through its layers, which stay while
	 * anything needs them. */
	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		struct snapshot *c = &vm->st.snapshots[i];

		if (c->parent && !strcmp(c->parent, name)) {
			free(c->parent);
			c->parent = xstrdup_or_null(parent);
		}
	}
	if (vm->st.current && !strcmp(vm->st.current, name)) {
		free(vm->st.current);
		vm->st.current = xstrdup_or_null(parent);
	}
	state_remove_snapshot(&vm->st, name);
	r = vm_write_state(vm, err);
	if (r < 0)
		return r;
	rm_rf_detached(vm->dirfd, dir);
	return chain_gc(vm, err);
}
