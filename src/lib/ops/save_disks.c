/* SPDX-License-Identifier: MIT */
/* A save's cut of the disks: a new, empty layer for every writable drive,
 * added to QEMU while the guest still runs, then all drives switched to
 * them in one transaction while the vCPUs are stopped, so that they are
 * cut at the same instant. */

#include <string.h>

#include "ops/save.h"

int save_prepare_layers(struct save *sv, qsnap_error *err)
{
	for (size_t i = 0; i < sv->n_cuts; i++) {
		struct cut *c = &sv->cuts[i];
		_cleanup_free_ char *node = NULL;
		int r;

		r = chain_new_layer(sv->vm, c->d, c->old_layer, &c->new_layer, err);
		if (r < 0)
			return r;
		node = qemu_layer_node(c->new_layer);
		r = qmp_execute(
			sv->q, "blockdev-add",
			jbuild("driver", json_object_new_string("qcow2"), "node-name",
			       json_object_new_string(node), "file",
			       jbuild("driver", json_object_new_string("file"), "filename",
				      json_object_new_string(c->new_layer), NULL),
			       /* the backing is attached by blockdev-snapshot */
			       "backing", NULL, NULL),
			NULL, 0, err);
		if (r < 0)
			return r;
		c->node_added = true;
	}
	save_step(sv, "layers");
	return 0;
}

/* Undo save_prepare_layers for a save that did not switch the drives. */
void save_drop_layers(struct save *sv)
{
	for (size_t i = 0; i < sv->n_cuts; i++) {
		struct cut *c = &sv->cuts[i];
		qsnap_error e2;

		if (c->node_added) {
			_cleanup_free_ char *node = qemu_layer_node(c->new_layer);
			qmp_execute(sv->q, "blockdev-del",
				    jbuild("node-name", json_object_new_string(node), NULL), NULL, 0,
				    &e2);
		}
		if (c->new_layer)
			state_set_active(&sv->vm->st, c->d->id, c->old_layer);
	}
}

int save_switch_layers(struct save *sv, qsnap_error *err)
{
	json_object *actions = json_object_new_array();
	int r;

	/* The new layers become active in state.json before QEMU switches to
	 * them: each is an empty overlay on the old one, so it is the right
	 * chain whether or not the switch below happens. */
	for (size_t i = 0; i < sv->n_cuts; i++)
		state_set_active(&sv->vm->st, sv->cuts[i].d->id, sv->cuts[i].new_layer);
	r = vm_write_state(sv->vm, err);
	if (r < 0) {
		json_object_put(actions);
		return r;
	}
	if (sv->precopy) {
		/* QEMU has stopped the guest to finish the migration; the
		 * STOP event came then, and the RESUME of our cont ends it. */
		sv->paused_here = true;
		save_phase(sv, "precopy", sv->last, save_stop_time(sv));
		if (sv->stop_at)
			sv->last = sv->stop_at;
		save_step(sv, "stop, dirty sync");
	} else if (sv->running) {
		/* Its STOP, and the RESUME that ends the pause, measure it. */
		r = qmp_execute_expect(sv->q, "stop", NULL,
				       (const char *const[]){"STOP", "RESUME", NULL}, NULL, 0, err);
		if (r < 0) {
			json_object_put(actions);
			return r;
		}
		/* A live save's QEMU resumes the guest by itself. */
		sv->paused_here = !sv->live;
		save_step(sv, "stop");
	}
	for (size_t i = 0; i < sv->n_cuts; i++) {
		_cleanup_free_ char *old = qemu_layer_node(sv->cuts[i].old_layer);
		_cleanup_free_ char *new = qemu_layer_node(sv->cuts[i].new_layer);

		json_object_array_add(
			actions,
			jbuild("type", json_object_new_string("blockdev-snapshot"), "data",
			       jbuild("node", json_object_new_string(old), "overlay",
				      json_object_new_string(new), NULL),
			       NULL));
	}
	r = qmp_execute(sv->q, "transaction", jbuild("actions", actions, NULL), NULL, 0, err);
	if (r < 0)
		return r;
	sv->switched = true;
	save_step(sv, "cut");
	return 0;
}

int save_switch_at_switchover(void *data, qsnap_error *err)
{
	return save_switch_layers(data, err);
}

/* QEMU's layer nodes that have their backing attached, as a set of node
 * names. query-named-block-nodes with flat (QEMU 5.0) lists every node on
 * its own: query-block nests one backing-image per layer, deeper than the
 * QMP client's JSON parser goes (32 levels) for a chain of 25 layers or
 * more. A layer added for a save that did not switch has no backing yet. */
static int backed_nodes(struct qmp *q, json_object **ret, qsnap_error *err)
{
	_cleanup_json_ json_object *nodes = NULL;
	int r = qmp_execute(q, "query-named-block-nodes",
			    jbuild("flat", json_object_new_boolean(true), NULL), &nodes, 0, err);

	if (r < 0)
		return r;
	*ret = json_object_new_object();
	for (size_t i = 0; json_object_is_type(nodes, json_type_array) &&
			   i < json_object_array_length(nodes);
	     i++) {
		json_object *n = json_object_array_get_idx(nodes, i);
		const char *name = jstr(n, "node-name");

		if (name && jstr(n, "backing_file"))
			json_object_object_add(*ret, name, json_object_new_boolean(true));
	}
	return 0;
}

static bool backed(json_object *set, const char *layer)
{
	_cleanup_free_ char *node = qemu_layer_node(layer);

	return json_object_object_get_ex(set, node, NULL);
}

int save_find_active(qsnap_vm *vm, struct qmp *q, qsnap_error *err)
{
	_cleanup_json_ json_object *set = NULL;
	struct state *st = &vm->st;
	int r = backed_nodes(q, &set, err);

	if (r < 0)
		return r;
	/* A drive's top: of its layers that QEMU has open with a backing, the
	 * one that no other such layer has as its backing (state.json
	 * records a new layer's backing before the switch). */
	for (size_t i = 0; i < st->n_layers; i++) {
		const struct layer *l = &st->layers[i];
		bool below_another = false;

		if (!def_drive(&vm->def, l->drive) || !backed(set, l->path))
			continue;
		for (size_t k = 0; k < st->n_layers && !below_another; k++)
			below_another = k != i && st->layers[k].backing &&
					!strcmp(st->layers[k].backing, l->path) &&
					backed(set, st->layers[k].path);
		if (!below_another)
			state_set_active(st, l->drive, l->path);
	}
	return 0;
}
