/* SPDX-License-Identifier: MIT */
/* state.json: read defensively, written whole. Paths are relative to the
 * VM directory so that the directory can be moved as a whole. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "vmdir/vmdir.h"

#define STATE_VERSION 1

void snapshot_free(struct snapshot *s)
{
	free(s->name);
	free(s->parent);
	free(s->dir);
	free(s->vmstate_checksum);
	free(s->ram_checksum);
	free(s->ram_base);
	for (size_t i = 0; i < s->n_ram_chain; i++) {
		free(s->ram_chain[i].snapshot);
		free(s->ram_chain[i].checksum);
	}
	free(s->ram_chain);
	free(s->qemu_version);
	free(s->machine);
	for (size_t i = 0; i < s->n_drives; i++) {
		free(s->drives[i].drive);
		free(s->drives[i].layer);
	}
	free(s->drives);
	memset(s, 0, sizeof(*s));
}

void state_free(struct state *st)
{
	for (size_t i = 0; i < st->n_layers; i++) {
		free(st->layers[i].path);
		free(st->layers[i].drive);
		free(st->layers[i].backing);
	}
	free(st->layers);
	for (size_t i = 0; i < st->n_active; i++) {
		free(st->active[i].drive);
		free(st->active[i].layer);
	}
	free(st->active);
	for (size_t i = 0; i < st->n_snapshots; i++)
		snapshot_free(&st->snapshots[i]);
	free(st->snapshots);
	free(st->current);
	free(st->pending);
	free(st->ram_file);
	free(st->ram_parent);
	free(st->postmigrate);
	free(st->machine);
	free(st->machine_for);
	free(st->qemu_machine);
	memset(st, 0, sizeof(*st));
}

const char *vmstate_format_name(enum vmstate_format f)
{
	return f == VMSTATE_MAPPED_RAM ? "mapped-ram" : NULL;
}

int ram_chain_from_json(json_object *arr, struct snapshot *s)
{
	size_t n = arr ? json_object_array_length(arr) : 0;

	if (n > RAM_CHAIN_MAX)
		return -EINVAL;
	s->ram_chain = n ? xcalloc(n, sizeof(*s->ram_chain)) : NULL;
	for (size_t i = 0; i < n; i++) {
		json_object *d = json_object_array_get_idx(arr, i);
		const char *name = jstr(d, "snapshot"), *sum = jstr(d, "checksum");
		int64_t size = jint(d, "size", -1);

		if (!name || !qsnap_name_valid(name) || !sum || !checksum_valid(sum) || size <= 0)
			return -EINVAL;
		s->ram_chain[i] = (struct ram_delta){
		    .snapshot = xstrdup(name), .size = (uint64_t)size, .checksum = xstrdup(sum)};
		s->n_ram_chain = i + 1;
	}
	return 0;
}

json_object *ram_chain_to_json(const struct snapshot *s)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < s->n_ram_chain; i++)
		json_object_array_add(
		    arr, jbuild("snapshot", json_object_new_string(s->ram_chain[i].snapshot), "size",
				json_object_new_int64((int64_t)s->ram_chain[i].size), "checksum",
				json_object_new_string(s->ram_chain[i].checksum), NULL));
	return arr;
}

char *snapshot_delta(const struct snapshot *s, size_t k)
{
	return xasprintf("%s/" SNAP_DELTA ".%zu", s->dir, k);
}

char *snapshot_vmstate(const struct snapshot *s)
{
	return xasprintf("%s/%s", s->dir, s->compressed ? SNAP_VMSTATE_ZST : SNAP_VMSTATE);
}

struct layer *state_layer(struct state *st, const char *path)
{
	for (size_t i = 0; i < st->n_layers; i++)
		if (!strcmp(st->layers[i].path, path))
			return &st->layers[i];
	return NULL;
}

struct snapshot *state_snapshot(struct state *st, const char *name)
{
	for (size_t i = 0; i < st->n_snapshots; i++)
		if (!strcmp(st->snapshots[i].name, name))
			return &st->snapshots[i];
	return NULL;
}

struct active *state_active(struct state *st, const char *drive)
{
	for (size_t i = 0; i < st->n_active; i++)
		if (!strcmp(st->active[i].drive, drive))
			return &st->active[i];
	return NULL;
}

void state_add_layer(struct state *st, const char *path, const char *drive, const char *backing)
{
	st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(*st->layers));
	st->layers[st->n_layers++] = (struct layer){
		.path = xstrdup(path),
		.drive = xstrdup(drive),
		.backing = xstrdup_or_null(backing),
	};
}

void state_set_active(struct state *st, const char *drive, const char *layer)
{
	struct active *a = state_active(st, drive);

	if (!a) {
		st->active = xrealloc(st->active, (st->n_active + 1) * sizeof(*st->active));
		a = &st->active[st->n_active++];
		a->drive = xstrdup(drive);
		a->layer = NULL;
	}
	free(a->layer);
	a->layer = xstrdup(layer);
}

void state_remove_layer(struct state *st, const char *path)
{
	for (size_t i = 0; i < st->n_layers; i++)
		if (!strcmp(st->layers[i].path, path)) {
			free(st->layers[i].path);
			free(st->layers[i].drive);
			free(st->layers[i].backing);
			memmove(&st->layers[i], &st->layers[i + 1],
				(st->n_layers - i - 1) * sizeof(*st->layers));
			st->n_layers--;
			return;
		}
}

void state_remove_snapshot(struct state *st, const char *name)
{
	for (size_t i = 0; i < st->n_snapshots; i++)
		if (!strcmp(st->snapshots[i].name, name)) {
			snapshot_free(&st->snapshots[i]);
			memmove(&st->snapshots[i], &st->snapshots[i + 1],
				(st->n_snapshots - i - 1) * sizeof(*st->snapshots));
			st->n_snapshots--;
			return;
		}
}

/* A relative path inside the VM directory: not absolute, no ".." component
 * (a snapshot may well be called "a..b"). */
static bool rel_path_ok(const char *p)
{
	if (!p || !*p || p[0] == '/')
		return false;
	for (const char *c = p; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
		if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || !c[2]))
			return false;
	return true;
}

static int bad(qsnap_error *err, const char *what, const char *detail)
{
	return qerr(err, EINVAL, "%s is damaged (%s): qsnap will not overwrite it; restore it from a backup or fix it by hand",
		    what, detail);
}

int state_from_json(const char *text, const char *what, struct state *st, qsnap_error *err)
{
	_cleanup_json_ json_object *o = NULL;
	json_tokener *tok = json_tokener_new();
	_cleanup_free_ char *problem = NULL;
	json_object *arr, *map, *q;
	int r;

	memset(st, 0, sizeof(*st));
	o = json_tokener_parse_ex(tok, text, (int)strlen(text));
	r = json_tokener_get_error(tok) == json_tokener_success;
	json_tokener_free(tok);
	if (!r || !o || !json_object_is_type(o, json_type_object))
		return bad(err, what, "not a JSON object");
	if (jint(o, "version", -1) != STATE_VERSION)
		return bad(err, what, "unknown version");
	st->seq = (unsigned long)jint(o, "seq", 0);

	arr = jarr(o, "layers");
	if (!arr)
		goto fail_layers;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *l = json_object_array_get_idx(arr, i);
		const char *path = jstr(l, "path"), *drive = jstr(l, "drive");
		const char *backing = jstr(l, "backing");

		/* chain.c names backing files relative to layers/. */
		if (!rel_path_ok(path) || strncmp(path, "layers/", 7) || !drive ||
		    !drive_id_valid(drive) || (backing && !rel_path_ok(backing)))
			goto fail_layers;
		state_add_layer(st, path, drive, backing);
	}

	map = jobj(o, "active");
	if (!map)
		goto fail_active;
	json_object_object_foreach(map, drive, layer)
	{
		if (!drive_id_valid(drive) || !json_object_is_type(layer, json_type_string) ||
		    !state_layer(st, json_object_get_string(layer)))
			goto fail_active;
		state_set_active(st, drive, json_object_get_string(layer));
	}

	arr = jarr(o, "snapshots");
	if (!arr)
		goto fail_snapshots;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *s = json_object_array_get_idx(arr, i);
		const char *name = jstr(s, "name"), *parent = jstr(s, "parent"), *mode = jstr(s, "mode");
		const char *dir = jstr(s, "dir"), *format;
		json_object *drives = jobj(s, "drives");
		struct snapshot sn = {0};

		if (!name || !qsnap_name_valid(name) || !mode || !drives || state_snapshot(st, name) ||
		    !rel_path_ok(dir) || strncmp(dir, "snapshots/", 10))
			goto fail_snapshots;
		sn.dir = xstrdup(dir);
		sn.name = xstrdup(name);
		sn.parent = xstrdup_or_null(parent);
		sn.created = jint(s, "created", 0);
		sn.was_running = jbool(s, "was_running", true);
		sn.vmstate_size = (uint64_t)jint(s, "vmstate_size", 0);
		sn.memory = (uint64_t)jint(s, "memory", 0);
		sn.compressed = jbool(s, "compressed", false);
		sn.vmstate_checksum = xstrdup_or_null(jstr(s, "vmstate_checksum"));
		sn.ram_checksum = xstrdup_or_null(jstr(s, "ram_checksum"));
		sn.ram_base = xstrdup_or_null(jstr(s, "ram_base"));
		if (ram_chain_from_json(jarr(s, "ram_chain"), &sn) < 0 ||
		    (sn.n_ram_chain && !sn.ram_base)) {
			snapshot_free(&sn);
			goto fail_snapshots;
		}
		sn.qemu_version = xstrdup_or_null(jstr(s, "qemu_version"));
		sn.machine = xstrdup_or_null(jstr(s, "machine"));
		format = jstr(s, "format");
		sn.format = format ? VMSTATE_MAPPED_RAM : VMSTATE_STREAM;
		if (qsnap_ram_mode_parse(mode, &sn.mode) < 0 ||
		    (format && strcmp(format, vmstate_format_name(VMSTATE_MAPPED_RAM))) ||
		    (sn.vmstate_checksum && !checksum_valid(sn.vmstate_checksum)) ||
		    (sn.ram_checksum && !checksum_valid(sn.ram_checksum)) ||
		    (sn.ram_base && (!qsnap_name_valid(sn.ram_base) || sn.mode != QSNAP_RAM_SHARED))) {
			snapshot_free(&sn);
			goto fail_snapshots;
		}
		json_object_object_foreach(drives, sdrive, slayer)
		{
			if (!drive_id_valid(sdrive) || !json_object_is_type(slayer, json_type_string) ||
			    !state_layer(st, json_object_get_string(slayer))) {
				snapshot_free(&sn);
				goto fail_snapshots;
			}
			sn.drives = xrealloc(sn.drives, (sn.n_drives + 1) * sizeof(*sn.drives));
			sn.drives[sn.n_drives++] = (struct snap_drive){
				.drive = xstrdup(sdrive),
				.layer = xstrdup(json_object_get_string(slayer)),
			};
		}
		st->snapshots = xrealloc(st->snapshots, (st->n_snapshots + 1) * sizeof(*st->snapshots));
		st->snapshots[st->n_snapshots++] = sn;
	}
	st->current = xstrdup_or_null(jstr(o, "current"));
	st->machine = xstrdup_or_null(jstr(jobj(o, "machine"), "type"));
	st->machine_for = xstrdup_or_null(jstr(jobj(o, "machine"), "from"));
	st->pending = xstrdup_or_null(jstr(jobj(o, "pending"), "dir"));
	st->pending_resume = jbool(jobj(o, "pending"), "resume", false);
	if (st->pending && (!rel_path_ok(st->pending) || strncmp(st->pending, "snapshots/", 10))) {
		state_free(st);
		return bad(err, what, "bad 'pending'");
	}
	q = jobj(o, "qemu");
	if (q) {
		int64_t pid = jint(q, "pid", 0);

		if (pid <= 0 || pid > INT_MAX) {
			state_free(st);
			return bad(err, what, "bad 'qemu.pid'");
		}
		st->qemu_pid = (pid_t)pid;
		st->qemu_start = (unsigned long long)jint(q, "start_time", 0);
		st->ram_file = xstrdup_or_null(jstr(q, "ram_file"));
		st->ram_shared = jbool(q, "ram_shared", false);
		st->ram_parent = xstrdup_or_null(jstr(q, "ram_parent"));
		if (st->ram_parent && (!checksum_valid(st->ram_parent) || !st->ram_file)) {
			state_free(st);
			return bad(err, what, "bad 'qemu.ram_parent'");
		}
		st->postmigrate = xstrdup_or_null(jstr(q, "postmigrate"));
		st->inspect = jbool(q, "inspect", false);
		st->qemu_machine = xstrdup_or_null(jstr(q, "machine"));
		/* qsnap removes a shared RAM file when its QEMU is gone: only ever
		 * one it made (".../ram" outside the VM directory), or a
		 * snapshot's, which it never removes. */
		if (st->ram_file) {
			const char *base = strrchr(st->ram_file, '/');
			bool ok = base && !strcmp(base, "/ram") &&
				  (st->ram_shared ? st->ram_file[0] == '/' && !strstr(st->ram_file, "/../")
						  : rel_path_ok(st->ram_file) &&
							    !strncmp(st->ram_file, "snapshots/", 10));
			if (!ok) {
				state_free(st);
				return bad(err, what, "bad 'qemu.ram_file'");
			}
		}
	}
	problem = state_problem(st);
	if (problem) {
		state_free(st);
		return bad(err, what, problem);
	}
	return 0;

fail_layers:
	state_free(st);
	return bad(err, what, "bad 'layers'");
fail_active:
	state_free(st);
	return bad(err, what, "bad 'active'");
fail_snapshots:
	state_free(st);
	return bad(err, what, "bad 'snapshots'");
}

int state_to_json(const struct state *st, char **ret_text, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_object_new_object();
	json_object *layers = json_object_new_array(), *active = json_object_new_object();
	json_object *snaps = json_object_new_array();

	json_object_object_add(o, "version", json_object_new_int(STATE_VERSION));
	json_object_object_add(o, "seq", json_object_new_int64((int64_t)st->seq));
	for (size_t i = 0; i < st->n_layers; i++) {
		const struct layer *l = &st->layers[i];
		json_object *lo = jbuild("path", json_object_new_string(l->path), "drive",
					 json_object_new_string(l->drive), NULL);

		if (l->backing)
			json_object_object_add(lo, "backing", json_object_new_string(l->backing));
		json_object_array_add(layers, lo);
	}
	json_object_object_add(o, "layers", layers);
	for (size_t i = 0; i < st->n_active; i++)
		json_object_object_add(active, st->active[i].drive,
				       json_object_new_string(st->active[i].layer));
	json_object_object_add(o, "active", active);
	for (size_t i = 0; i < st->n_snapshots; i++) {
		const struct snapshot *s = &st->snapshots[i];
		json_object *drives = json_object_new_object();
		json_object *so = jbuild("name", json_object_new_string(s->name), "parent",
					 s->parent ? json_object_new_string(s->parent) : NULL,
					 "created", json_object_new_int64(s->created), "mode",
					 json_object_new_string(qsnap_ram_mode_name(s->mode)), "dir",
					 json_object_new_string(s->dir), "was_running",
					 json_object_new_boolean(s->was_running), "vmstate_size",
					 json_object_new_int64((int64_t)s->vmstate_size), "memory",
					 json_object_new_int64((int64_t)s->memory), "compressed",
					 json_object_new_boolean(s->compressed), NULL);

		if (s->vmstate_checksum)
			json_object_object_add(so, "vmstate_checksum",
					       json_object_new_string(s->vmstate_checksum));
		if (s->ram_checksum)
			json_object_object_add(so, "ram_checksum",
					       json_object_new_string(s->ram_checksum));
		if (s->ram_base)
			json_object_object_add(so, "ram_base", json_object_new_string(s->ram_base));
		if (s->n_ram_chain)
			json_object_object_add(so, "ram_chain", ram_chain_to_json(s));
		if (s->qemu_version)
			json_object_object_add(so, "qemu_version",
					       json_object_new_string(s->qemu_version));
		if (s->machine)
			json_object_object_add(so, "machine", json_object_new_string(s->machine));
		if (vmstate_format_name(s->format))
			json_object_object_add(so, "format",
					       json_object_new_string(vmstate_format_name(s->format)));
		for (size_t j = 0; j < s->n_drives; j++)
			json_object_object_add(drives, s->drives[j].drive,
					       json_object_new_string(s->drives[j].layer));
		json_object_object_add(so, "drives", drives);
		json_object_array_add(snaps, so);
	}
	json_object_object_add(o, "snapshots", snaps);
	if (st->current)
		json_object_object_add(o, "current", json_object_new_string(st->current));
	if (st->machine)
		json_object_object_add(o, "machine",
				       jbuild("type", json_object_new_string(st->machine), "from",
					      json_object_new_string(st->machine_for ? st->machine_for : ""),
					      NULL));
	if (st->pending)
		json_object_object_add(o, "pending",
				       jbuild("dir", json_object_new_string(st->pending), "resume",
					      json_object_new_boolean(st->pending_resume), NULL));
	if (st->qemu_pid > 0) {
		json_object *q = jbuild("pid", json_object_new_int64(st->qemu_pid), "start_time",
					json_object_new_int64((int64_t)st->qemu_start), NULL);

		if (st->postmigrate)
			json_object_object_add(q, "postmigrate", json_object_new_string(st->postmigrate));
		if (st->inspect)
			json_object_object_add(q, "inspect", json_object_new_boolean(true));
		if (st->qemu_machine)
			json_object_object_add(q, "machine", json_object_new_string(st->qemu_machine));
		if (st->ram_file) {
			json_object_object_add(q, "ram_file", json_object_new_string(st->ram_file));
			json_object_object_add(q, "ram_shared", json_object_new_boolean(st->ram_shared));
		}
		if (st->ram_parent)
			json_object_object_add(q, "ram_parent", json_object_new_string(st->ram_parent));
		json_object_object_add(o, "qemu", q);
	}
	*ret_text = xasprintf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
									     JSON_C_TO_STRING_NOSLASHESCAPE));
	(void)err;
	return 0;
}
