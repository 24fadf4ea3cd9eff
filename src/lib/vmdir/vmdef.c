/* SPDX-License-Identifier: MIT */
/* The VM definition: vm.json both ways, a deep copy, and the checks of a
 * whole definition. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "vmdir/vmdir.h"

void def_init(qsnap_def *def)
{
	memset(def, 0, sizeof(*def));
	def->accel = xstrdup("kvm:tcg");
	def->smp = 1;
	def->memory = 1ULL << 30;
	def->serial = true;
}

void def_clear(qsnap_def *def)
{
	free(def->qemu);
	free(def->machine);
	free(def->accel);
	free(def->cpu);
	free(def->kernel);
	free(def->initrd);
	free(def->append);
	free(def->ram_dir);
	for (size_t i = 0; i < def->n_drives; i++) {
		free(def->drives[i].id);
		free(def->drives[i].path);
		free(def->drives[i].format);
	}
	free(def->drives);
	for (size_t i = 0; i < def->n_extra; i++)
		free(def->extra[i]);
	free(def->extra);
	memset(def, 0, sizeof(*def));
}

void def_copy(qsnap_def *dst, const qsnap_def *src)
{
	*dst = *src;
	dst->qemu = xstrdup_or_null(src->qemu);
	dst->machine = xstrdup_or_null(src->machine);
	dst->accel = xstrdup_or_null(src->accel);
	dst->cpu = xstrdup_or_null(src->cpu);
	dst->kernel = xstrdup_or_null(src->kernel);
	dst->initrd = xstrdup_or_null(src->initrd);
	dst->append = xstrdup_or_null(src->append);
	dst->ram_dir = xstrdup_or_null(src->ram_dir);
	dst->drives = xcalloc(src->n_drives, sizeof(qsnap_drive_def));
	for (size_t i = 0; i < src->n_drives; i++) {
		dst->drives[i] = src->drives[i];
		dst->drives[i].id = xstrdup(src->drives[i].id);
		dst->drives[i].path = xstrdup(src->drives[i].path);
		dst->drives[i].format = xstrdup_or_null(src->drives[i].format);
	}
	dst->extra = xcalloc(src->n_extra, sizeof(char *));
	for (size_t i = 0; i < src->n_extra; i++)
		dst->extra[i] = xstrdup(src->extra[i]);
}

const qsnap_drive_def *def_drive(const qsnap_def *def, const char *id)
{
	for (size_t i = 0; i < def->n_drives; i++)
		if (!strcmp(def->drives[i].id, id))
			return &def->drives[i];
	return NULL;
}

int vmdef_check(const qsnap_def *def, qsnap_error *err)
{
	size_t n_pflash = 0;

	if (def->smp < 1 || def->smp > 1024)
		return qerr(err, EINVAL, "--smp must be between 1 and 1024");
	if (def->memory < (16ULL << 20))
		return qerr(err, EINVAL, "--memory must be at least 16M");
	if (def->memory % (1ULL << 20))
		return qerr(err, EINVAL, "--memory must be a whole number of MiB");
	if (!def->accel || !*def->accel)
		return qerr(err, EINVAL, "--accel needs a list such as kvm:tcg");
	if (!def->kernel && def->n_drives == 0)
		return qerr(err, EINVAL, "nothing to boot: give --drive or --kernel");
	if ((def->initrd || def->append) && !def->kernel)
		return qerr(err, EINVAL, "--initrd and --append need --kernel");
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		struct stat st;

		if (!drive_id_valid(d->id))
			return qerr(err, EINVAL, "drive id '%s' is not valid", d->id);
		if (!d->path || stat(d->path, &st) < 0)
			return qerr(err, ENOENT, "drive '%s': base image %s does not exist", d->id,
				    d->path ? d->path : "(none)");
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
			return qerr(err, EINVAL, "drive '%s': %s is not a file or block device",
				    d->id, d->path);
		if (d->iface == QSNAP_IF_PFLASH && ++n_pflash > 2)
			return qerr(err, EINVAL, "at most two pflash drives (firmware, variables)");
	}
	if (def->kernel && access(def->kernel, R_OK) < 0)
		return qerr(err, ENOENT, "--kernel %s cannot be read: %s", def->kernel, strerror(errno));
	if (def->initrd && access(def->initrd, R_OK) < 0)
		return qerr(err, ENOENT, "--initrd %s cannot be read: %s", def->initrd, strerror(errno));
	if (def->ram_mode == QSNAP_RAM_SHARED) {
		/* x-ignore-shared leaves every shared RAM block out of the stream:
		 * one that qsnap does not copy itself would be lost. */
		for (size_t i = 0; i < def->n_extra; i++)
			if (strstr(def->extra[i], "memory-backend") || strstr(def->extra[i], "share=on") ||
			    !strcmp(def->extra[i], "-mem-path"))
				return qerr(err, EINVAL, "extra QEMU argument '%s' adds guest memory that qsnap does not manage; shared-RAM mode would lose it: remove it or use --ram-mode stream",
					    def->extra[i]);
		if (def->ram_dir && def->ram_dir[0] != '/')
			return qerr(err, EINVAL, "--ram-dir must be an absolute path");
	}
	for (size_t i = 0; i < def->n_extra; i++)
		if (!strcmp(def->extra[i], "-m") || !strncmp(def->extra[i], "memory-backend=", 15))
			return qerr(err, EINVAL, "extra QEMU argument '%s': set the memory with --memory instead",
				    def->extra[i]);
	return 0;
}

int vmdef_to_json(const qsnap_def *def, char **ret_text, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_object_new_object();
	json_object *drives = json_object_new_array(), *extra = json_object_new_array();

#define ADD_STR(k, v)                                                                              \
	if (v)                                                                                     \
	json_object_object_add(o, k, json_object_new_string(v))
	ADD_STR("qemu", def->qemu);
	ADD_STR("machine", def->machine);
	ADD_STR("accel", def->accel);
	ADD_STR("cpu", def->cpu);
	json_object_object_add(o, "smp", json_object_new_int64(def->smp));
	json_object_object_add(o, "memory", json_object_new_int64((int64_t)def->memory));
	ADD_STR("kernel", def->kernel);
	ADD_STR("initrd", def->initrd);
	ADD_STR("append", def->append);
	json_object_object_add(o, "serial", json_object_new_boolean(def->serial));
	json_object_object_add(o, "ram_mode", json_object_new_string(qsnap_ram_mode_name(def->ram_mode)));
	if (def->max_chain)
		json_object_object_add(o, "max_chain", json_object_new_int64(def->max_chain));
	if (def->serial_log_max)
		json_object_object_add(o, "serial_log_max",
				       json_object_new_int64((int64_t)def->serial_log_max));
	ADD_STR("ram_dir", def->ram_dir);
	/* The save settings only where they differ from the default: a
	 * vm.json stays readable by a qsnap without them. */
	if (def->save_path)
		ADD_STR("save_path", save_path_name(def->save_path));
	if (def->multifd_channels)
		json_object_object_add(o, "multifd_channels",
				       json_object_new_int64(def->multifd_channels));
	if (def->direct_io)
		ADD_STR("direct_io", setting_name(def->direct_io));
	if (def->precopy)
		ADD_STR("precopy", setting_name(def->precopy));
#undef ADD_STR
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];

		json_object_array_add(
			drives, jbuild("id", json_object_new_string(d->id), "path",
				       json_object_new_string(d->path), "format",
				       json_object_new_string(d->format), "if",
				       json_object_new_string(iface_name(d->iface)), "readonly",
				       json_object_new_boolean(d->readonly), NULL));
	}
	json_object_object_add(o, "drives", drives);
	for (size_t i = 0; i < def->n_extra; i++)
		json_object_array_add(extra, json_object_new_string(def->extra[i]));
	json_object_object_add(o, "extra_args", extra);
	*ret_text = xasprintf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
									     JSON_C_TO_STRING_NOSLASHESCAPE));
	(void)err;
	return 0;
}

/* Copy a string member if present; error if present with the wrong type. */
static int get_str(json_object *o, const char *key, char **dst, const char *what, qsnap_error *err)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return qerr(err, EINVAL, "%s: '%s' must be a string", what, key);
	free(*dst);
	*dst = xstrdup(json_object_get_string(v));
	return 0;
}

/* vm.json's save settings (qsnap config); absent: auto. */
static int save_settings_from_json(json_object *o, const char *what, qsnap_def *def,
				   qsnap_error *err)
{
	const char *path = jstr(o, "save_path"), *dio = jstr(o, "direct_io");
	const char *pre = jstr(o, "precopy");
	int64_t n = jint(o, "multifd_channels", 0);
	static const char *const words[] = {"save_path", "direct_io", "precopy"};
	json_object *v;

	/* Present with another type is as wrong as a bad word. */
	for (size_t i = 0; i < ARRAY_SIZE(words); i++)
		if (json_object_object_get_ex(o, words[i], &v) && !json_object_is_type(v, json_type_null) &&
		    !json_object_is_type(v, json_type_string))
			return qerr(err, EINVAL, "%s: '%s' must be a string", what, words[i]);
	if (json_object_object_get_ex(o, "multifd_channels", &v) && !json_object_is_type(v, json_type_null) &&
	    !json_object_is_type(v, json_type_int))
		return qerr(err, EINVAL, "%s: 'multifd_channels' must be a number", what);
	if (path && save_path_parse(path, &def->save_path) < 0)
		return qerr(err, EINVAL, "%s: 'save_path' must be \"auto\", \"stream\", \"mapped-ram\" or \"ram-file\"", what);
	if ((dio && setting_parse(dio, &def->direct_io) < 0) ||
	    (pre && setting_parse(pre, &def->precopy) < 0))
		return qerr(err, EINVAL, "%s: 'direct_io' and 'precopy' must be \"auto\", \"on\" or \"off\"", what);
	if (n < 0 || n > QSNAP_MAX_MULTIFD_CHANNELS)
		return qerr(err, EINVAL, "%s: 'multifd_channels' must be 0 (auto) to %d", what,
			    QSNAP_MAX_MULTIFD_CHANNELS);
	def->multifd_channels = (unsigned)n;
	return 0;
}

int vmdef_from_json(const char *text, const char *what, qsnap_def *def, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_tokener_parse(text);
	json_object *drives, *extra;
	int64_t v;
	int r = 0;

	def_init(def);
	if (!o || !json_object_is_type(o, json_type_object)) {
		r = qerr(err, EINVAL, "%s is not valid JSON: fix it by hand or run qsnap init again", what);
		goto fail;
	}
	if ((r = get_str(o, "qemu", &def->qemu, what, err)) < 0 ||
	    (r = get_str(o, "machine", &def->machine, what, err)) < 0 ||
	    (r = get_str(o, "accel", &def->accel, what, err)) < 0 ||
	    (r = get_str(o, "cpu", &def->cpu, what, err)) < 0 ||
	    (r = get_str(o, "kernel", &def->kernel, what, err)) < 0 ||
	    (r = get_str(o, "initrd", &def->initrd, what, err)) < 0 ||
	    (r = get_str(o, "append", &def->append, what, err)) < 0 ||
	    (r = get_str(o, "ram_dir", &def->ram_dir, what, err)) < 0)
		goto fail;
	if (jstr(o, "ram_mode") && qsnap_ram_mode_parse(jstr(o, "ram_mode"), &def->ram_mode) < 0) {
		r = qerr(err, EINVAL, "%s: 'ram_mode' must be \"stream\" or \"shared\"", what);
		goto fail;
	}
	v = jint(o, "smp", 1);
	if (v < 1 || v > 1024) {
		r = qerr(err, EINVAL, "%s: 'smp' must be between 1 and 1024", what);
		goto fail;
	}
	def->smp = (unsigned)v;
	v = jint(o, "memory", -1);
	if (v < (16 << 20)) {
		r = qerr(err, EINVAL, "%s: 'memory' must be a number of bytes, at least 16 MiB", what);
		goto fail;
	}
	def->memory = (uint64_t)v;
	def->serial = jbool(o, "serial", true);
	v = jint(o, "max_chain", 0);
	if (v < 0 || v == 1 || v > 1000) {
		r = qerr(err, EINVAL, "%s: 'max_chain' must be 0 (default) or between 2 and 1000", what);
		goto fail;
	}
	def->max_chain = (unsigned)v;
	v = jint(o, "serial_log_max", 0);
	if (v < 0 || (v && (uint64_t)v < QSNAP_MIN_SERIAL_LOG_MAX)) {
		r = qerr(err, EINVAL, "%s: 'serial_log_max' must be 0 (default) or at least 65536 bytes", what);
		goto fail;
	}
	def->serial_log_max = (uint64_t)v;
	r = save_settings_from_json(o, what, def, err);
	if (r < 0)
		goto fail;
	drives = jarr(o, "drives");
	for (size_t i = 0; drives && i < json_object_array_length(drives); i++) {
		json_object *d = json_object_array_get_idx(drives, i);
		qsnap_drive_def dd = {0};
		const char *id = jstr(d, "id"), *path = jstr(d, "path"), *fmt = jstr(d, "format");
		const char *iface = jstr(d, "if");

		if (!id || !drive_id_valid(id) || !path || !fmt ||
		    (strcmp(fmt, "qcow2") && strcmp(fmt, "raw")) ||
		    iface_parse(iface ? iface : "virtio", &dd.iface) < 0) {
			r = qerr(err, EINVAL, "%s: drive %zu needs a valid id, path, format (qcow2|raw) and if", what, i);
			goto fail;
		}
		dd.id = xstrdup(id);
		dd.path = xstrdup(path);
		dd.format = xstrdup(fmt);
		dd.readonly = jbool(d, "readonly", false);
		def->drives = xrealloc(def->drives, (def->n_drives + 1) * sizeof(*def->drives));
		def->drives[def->n_drives++] = dd;
	}
	extra = jarr(o, "extra_args");
	for (size_t i = 0; extra && i < json_object_array_length(extra); i++) {
		json_object *e = json_object_array_get_idx(extra, i);

		if (!json_object_is_type(e, json_type_string)) {
			r = qerr(err, EINVAL, "%s: 'extra_args' must hold strings", what);
			goto fail;
		}
		def->extra = xrealloc(def->extra, (def->n_extra + 1) * sizeof(char *));
		def->extra[def->n_extra++] = xstrdup(json_object_get_string(e));
	}
	return 0;
fail:
	def_clear(def);
	return r;
}
