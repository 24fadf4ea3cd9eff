/* SPDX-License-Identifier: MIT */
/* What the QEMU behind a QMP connection can do. QEMU removes and adds
 * migration features between versions (9.1 removed the compress
 * capability), so qsnap asks every QEMU rather than assuming. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qemu/qemu.h"

/* name -> true for each element of an array (key: the member named key,
 * NULL: the element itself is an object whose keys are the names). */
static json_object *name_set(json_object *arr, const char *key)
{
	json_object *set = json_object_new_object();

	if (!key && json_object_is_type(arr, json_type_object)) {
		json_object_object_foreach(arr, k, v) {
			(void)v;
			json_object_object_add(set, k, json_object_new_boolean(true));
		}
		return set;
	}
	for (size_t i = 0; arr && json_object_is_type(arr, json_type_array) &&
			   i < json_object_array_length(arr);
	     i++) {
		const char *n = jstr(json_object_array_get_idx(arr, i), key);

		if (n)
			json_object_object_add(set, n, json_object_new_boolean(true));
	}
	return set;
}

int caps_learn(struct qmp *q, qsnap_error *err)
{
	struct qemu_caps *c = qmp_caps(q);
	_cleanup_json_ json_object *ver = NULL, *mcaps = NULL, *mparams = NULL, *cmds = NULL,
				   *kvm = NULL;
	json_object *qv;
	int r;

	if (c->known)
		return 0;
	if ((r = qmp_execute(q, "query-version", NULL, &ver, 0, err)) < 0 ||
	    (r = qmp_execute(q, "query-migrate-capabilities", NULL, &mcaps, 0, err)) < 0 ||
	    (r = qmp_execute(q, "query-migrate-parameters", NULL, &mparams, 0, err)) < 0 ||
	    (r = qmp_execute(q, "query-commands", NULL, &cmds, 0, err)) < 0 ||
	    (r = qmp_execute(q, "query-kvm", NULL, &kvm, 0, err)) < 0)
		return qerr_prefix(err, "asking QEMU what it can do");
	qv = jobj(ver, "qemu");
	c->major = (int)jint(qv, "major", 0);
	c->minor = (int)jint(qv, "minor", 0);
	c->micro = (int)jint(qv, "micro", 0);
	snprintf(c->version, sizeof(c->version), "%d.%d.%d", c->major, c->minor, c->micro);
	c->mig_caps = name_set(mcaps, "capability");
	c->mig_params = name_set(mparams, NULL);
	c->commands = name_set(cmds, "name");
	c->kvm = jbool(kvm, "enabled", false);
	c->known = true;
	return 0;
}

static bool in_set(json_object *set, const char *name)
{
	return set && json_object_object_get_ex(set, name, NULL);
}

bool caps_migrate_cap(struct qmp *q, const char *name)
{
	return in_set(qmp_caps(q)->mig_caps, name);
}

bool caps_migrate_param(struct qmp *q, const char *name)
{
	return in_set(qmp_caps(q)->mig_params, name);
}

bool caps_command(struct qmp *q, const char *name)
{
	return in_set(qmp_caps(q)->commands, name);
}

bool caps_file_uri(struct qmp *q)
{
	/* The file: URI (QEMU 8.2) has no capability of its own; mapped-ram
	 * (9.0) exists only for it, so a QEMU with mapped-ram has it. That
	 * leaves 8.x on fd:, which takes files without the deprecation
	 * warning that 9.1 added ("fd: migration to a file is deprecated. Use
	 * file: instead.", 10.0.2). */
	return caps_command(q, "add-fd") && caps_migrate_cap(q, "mapped-ram");
}

/* Under TCG, QEMU before 9.0 loses guest writes during a precopy
 * migration: the fast path of its dirty bitmap sync clears the migration
 * bits of whole words without bringing the TCG TLB up to date, so stores
 * through entries already in the TLB mark nothing, and a page written
 * after QEMU sent it is never sent again (QEMU commit 03bfc2188f06,
 * "physmem: Fix migration dirty bitmap coherency with TCG memory access",
 * in 9.0; Debian 12's 7.2.22 does not have it). A restored guest then
 * holds stale kernel pages: seen as oopses in its page allocator after a
 * precopy save of a busy guest on 7.2. A fix has no capability to ask
 * for, so this is the one place qsnap reads the version; under KVM the
 * kernel tracks dirty pages and the bug does not apply. */
bool caps_tcg_dirty_log_sound(struct qmp *q)
{
	const struct qemu_caps *c = qmp_caps(q);

	return c->known && (c->kvm || c->major >= 9);
}

const char *caps_version(struct qmp *q)
{
	return qmp_caps(q)->known ? qmp_caps(q)->version : "";
}

/* Does an element of the array list have key equal to value? */
static bool any_with(json_object *list, const char *key, const char *value)
{
	for (size_t i = 0; json_object_is_type(list, json_type_array) &&
			   i < json_object_array_length(list);
	     i++) {
		const char *v = jstr(json_object_array_get_idx(list, i), key);

		if (v && !strcmp(v, value))
			return true;
	}
	return false;
}

int caps_has_machine(struct qmp *q, const char *name, bool *ret, qsnap_error *err)
{
	_cleanup_json_ json_object *list = NULL;
	int r = qmp_execute(q, "query-machines", NULL, &list, 0, err);

	if (r < 0)
		return r;
	*ret = any_with(list, "name", name);
	return 0;
}

int caps_resolve_machine(struct qmp *q, const char *want, char **ret, qsnap_error *err)
{
	_cleanup_json_ json_object *list = NULL;
	int r = qmp_execute(q, "query-machines", NULL, &list, 0, err);

	if (r < 0)
		return r;
	for (size_t i = 0; json_object_is_type(list, json_type_array) &&
			   i < json_object_array_length(list);
	     i++) {
		json_object *m = json_object_array_get_idx(list, i);
		const char *name = jstr(m, "name"), *alias = jstr(m, "alias");

		if (!name)
			continue;
		/* On 7.2 and 10.0 the entry of the versioned type carries the
		 * alias ("pc" -> pc-i440fx-7.2) and is-default. */
		if (want ? (!strcmp(name, want) || (alias && !strcmp(alias, want)))
			 : jbool(m, "is-default", false)) {
			*ret = xstrdup(name);
			return 0;
		}
	}
	if (want) {
		*ret = xstrdup(want);
		return 0;
	}
	return qerr(err, ENOENT, "QEMU names no default machine type: set one with --machine");
}

int qemu_has_machine(const char *qemu, const char *machine, bool *ret, qsnap_error *err)
{
	char *argv[] = {(char *)(qemu ? qemu : "qemu-system-x86_64"), "-machine", "help", NULL};
	_cleanup_free_ char *out = NULL;
	size_t len = strlen(machine);
	int r = run_program(NULL, argv, &out, err);

	if (r < 0)
		return r;
	*ret = false;
	for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, machine, len) && (l[len] == ' ' || l[len] == '\n' || !l[len]))
			*ret = true;
	return 0;
}

/* memory-backend-file's rom (QEMU 8.2+): with readonly=on,rom=off QEMU
 * opens the RAM file read-only and maps it copy-on-write, so nothing it
 * does (a balloon's discard: fallocate(PUNCH_HOLE)) can change the file. */
#define ROM_PROPERTY "rom"

int caps_backend_rom(struct qmp *q, bool *ret, qsnap_error *err)
{
	_cleanup_json_ json_object *props = NULL;
	int r = qmp_execute(q, "qom-list-properties",
			    jbuild("typename", json_object_new_string("memory-backend-file"), NULL),
			    &props, 0, err);

	if (r < 0)
		return r;
	*ret = any_with(props, "name", ROM_PROPERTY);
	return 0;
}

int qemu_backend_rom(const char *qemu, bool *ret, qsnap_error *err)
{
	char *argv[] = {(char *)(qemu ? qemu : "qemu-system-x86_64"), "-object",
			"memory-backend-file,help", NULL};
	_cleanup_free_ char *out = NULL;
	int r = run_program(NULL, argv, &out, err);

	if (r < 0)
		return r;
	/* One property a line: "  rom=<OnOffAuto>  - Whether to ..." */
	*ret = false;
	for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l + strspn(l, " "), ROM_PROPERTY "=", strlen(ROM_PROPERTY) + 1))
			*ret = true;
	return 0;
}

int caps_ram_discarder(struct qmp *q, const char **ret, qsnap_error *err)
{
	_cleanup_json_ json_object *mem = NULL, *balloon = NULL;
	qsnap_error e2;
	int r;

	*ret = NULL;
	/* query-balloon fails (DeviceNotActive) unless a balloon device
	 * exists, whether or not the guest drives it. */
	if (qmp_execute(q, "query-balloon", NULL, &balloon, 0, &e2) == 0) {
		*ret = "a balloon device";
		return 0;
	}
	r = qmp_execute(q, "query-memory-devices", NULL, &mem, 0, err);
	if (r < 0)
		return r;
	if (any_with(mem, "type", "virtio-mem"))
		*ret = "a virtio-mem device";
	return 0;
}
