/* SPDX-License-Identifier: MIT */
/* The public face of a definition: made, set and read by key (the names of
 * qsnap init's options), so that a caller never owns its strings. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "vmdir/vmdir.h"

qsnap_def *qsnap_def_new(void)
{
	qsnap_def *def = calloc(1, sizeof(*def));

	if (def)
		def_init(def);
	return def;
}

void qsnap_def_free(qsnap_def *def)
{
	if (!def)
		return;
	def_clear(def);
	free(def);
}

static void set_str(char **field, const char *value)
{
	free(*field);
	*field = xstrdup_or_null(value);
}

static int set_unsigned(unsigned *field, const char *key, const char *value, unsigned dflt,
			unsigned min, qsnap_error *err)
{
	char *end;
	unsigned long v;

	if (!value) {
		*field = dflt;
		return 0;
	}
	errno = 0;
	v = strtoul(value, &end, 10);
	if (errno || end == value || *end || value[0] == '-' || v < min || v > 1024 * 1024)
		return qerr(err, EINVAL, "%s: '%s' is not a number of %u or more", key, value, min);
	*field = (unsigned)v;
	return 0;
}

static void clear_drives(qsnap_def *def)
{
	for (size_t i = 0; i < def->n_drives; i++) {
		free(def->drives[i].id);
		free(def->drives[i].path);
		free(def->drives[i].format);
	}
	free(def->drives);
	def->drives = NULL;
	def->n_drives = 0;
}

static void clear_extra(qsnap_def *def)
{
	for (size_t i = 0; i < def->n_extra; i++)
		free(def->extra[i]);
	free(def->extra);
	def->extra = NULL;
	def->n_extra = 0;
}

int qsnap_def_set(qsnap_def *def, const char *key, const char *value, qsnap_error *err)
{
	if (!strcmp(key, "drive")) {
		if (!value) {
			clear_drives(def);
			return 0;
		}
		return def_add_drive(def, value, err);
	}
	if (!strcmp(key, "extra")) {
		if (!value) {
			clear_extra(def);
			return 0;
		}
		def->extra = xrealloc(def->extra, (def->n_extra + 1) * sizeof(char *));
		def->extra[def->n_extra++] = xstrdup(value);
		return 0;
	}
	if (!strcmp(key, "memory")) {
		if (!value) {
			def->memory = 1ULL << 30;
			return 0;
		}
		return qsnap_parse_size(value, &def->memory, err);
	}
	if (!strcmp(key, "smp"))
		return set_unsigned(&def->smp, key, value, 1, 1, err);
	if (!strcmp(key, "serial-log-max")) {
		uint64_t n = 0;

		if (value && qsnap_parse_size(value, &n, err) < 0)
			return -err->code;
		if (n && n < QSNAP_MIN_SERIAL_LOG_MAX)
			return qerr(err, EINVAL, "serial-log-max: '%s' is less than %llu KiB", value,
				    QSNAP_MIN_SERIAL_LOG_MAX >> 10);
		def->serial_log_max = n;
		return 0;
	}
	if (!strcmp(key, "max-chain"))
		return set_unsigned(&def->max_chain, key, value, 0, 0, err);
	if (!strcmp(key, "serial")) {
		if (value && strcmp(value, "on") && strcmp(value, "off"))
			return qerr(err, EINVAL, "serial: '%s' is neither on nor off", value);
		def->serial = !value || !strcmp(value, "on");
		return 0;
	}
	if (!strcmp(key, "ram-mode")) {
		if (!value) {
			def->ram_mode = QSNAP_RAM_STREAM;
			return 0;
		}
		if (qsnap_ram_mode_parse(value, &def->ram_mode) < 0)
			return qerr(err, EINVAL, "ram-mode: '%s' is neither stream nor shared", value);
		return 0;
	}
	if (!strcmp(key, "save-path")) {
		if (!value) {
			def->save_path = SAVE_PATH_AUTO;
			return 0;
		}
		if (save_path_parse(value, &def->save_path) < 0)
			return qerr(err, EINVAL, "save-path: '%s' is none of auto, stream, mapped-ram", value);
		return 0;
	}
	if (!strcmp(key, "direct-io") || !strcmp(key, "precopy")) {
		enum setting *f = key[0] == 'd' ? &def->direct_io : &def->precopy;

		if (!value) {
			*f = SETTING_AUTO;
			return 0;
		}
		if (setting_parse(value, f) < 0)
			return qerr(err, EINVAL, "%s: '%s' is none of auto, on, off", key, value);
		return 0;
	}
	if (!strcmp(key, "multifd-channels")) {
		unsigned n;
		int r;

		if (value && !strcmp(value, "auto"))
			value = NULL;
		r = set_unsigned(&n, key, value, 0, 0, err);
		if (r < 0)
			return r;
		if (n > QSNAP_MAX_MULTIFD_CHANNELS)
			return qerr(err, EINVAL, "multifd-channels: '%s' is more than %d", value,
				    QSNAP_MAX_MULTIFD_CHANNELS);
		def->multifd_channels = n;
		return 0;
	}
	if (!strcmp(key, "accel")) {
		set_str(&def->accel, value ? value : "kvm:tcg");
		return 0;
	}
	struct {
		const char *key;
		char **field;
	} strs[] = {
		{"qemu", &def->qemu},	  {"machine", &def->machine}, {"cpu", &def->cpu},
		{"kernel", &def->kernel}, {"initrd", &def->initrd},   {"append", &def->append},
		{"ram-dir", &def->ram_dir},
	};
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++)
		if (!strcmp(key, strs[i].key)) {
			set_str(strs[i].field, value);
			return 0;
		}
	return qerr(err, EINVAL, "'%s' is not a key of a definition", key);
}

int qsnap_def_get(const qsnap_def *def, const char *key, char **ret_value, qsnap_error *err)
{
	char *v = NULL;

	if (!strcmp(key, "drive") || !strcmp(key, "extra")) {
		bool drives = key[0] == 'd';
		size_t n = drives ? def->n_drives : def->n_extra;

		for (size_t i = 0; i < n; i++) {
			const qsnap_drive_def *d = drives ? &def->drives[i] : NULL;
			char *line = d ? xasprintf("%s=%s%s%s,if=%s%s", d->id, d->path,
						   d->format ? ",format=" : "", d->format ? d->format : "",
						   iface_name(d->iface), d->readonly ? ",readonly" : "")
				       : xstrdup(def->extra[i]);
			char *joined = v ? xasprintf("%s\n%s", v, line) : xstrdup(line);

			free(line);
			free(v);
			v = joined;
		}
	} else if (!strcmp(key, "memory")) {
		v = xasprintf("%" PRIu64, def->memory);
	} else if (!strcmp(key, "smp")) {
		v = xasprintf("%u", def->smp);
	} else if (!strcmp(key, "max-chain")) {
		v = def->max_chain ? xasprintf("%u", def->max_chain) : NULL;
	} else if (!strcmp(key, "serial-log-max")) {
		v = def->serial_log_max ? xasprintf("%" PRIu64, def->serial_log_max) : NULL;
	} else if (!strcmp(key, "serial")) {
		v = xstrdup(def->serial ? "on" : "off");
	} else if (!strcmp(key, "ram-mode")) {
		v = xstrdup(qsnap_ram_mode_name(def->ram_mode));
	} else if (!strcmp(key, "save-path")) {
		v = def->save_path ? xstrdup(save_path_name(def->save_path)) : NULL;
	} else if (!strcmp(key, "multifd-channels")) {
		v = def->multifd_channels ? xasprintf("%u", def->multifd_channels) : NULL;
	} else if (!strcmp(key, "direct-io") || !strcmp(key, "precopy")) {
		enum setting f = key[0] == 'd' ? def->direct_io : def->precopy;

		v = f ? xstrdup(setting_name(f)) : NULL;
	} else {
		const struct {
			const char *key;
			const char *value;
		} strs[] = {
			{"qemu", def->qemu},	 {"machine", def->machine}, {"cpu", def->cpu},
			{"kernel", def->kernel}, {"initrd", def->initrd},   {"append", def->append},
			{"ram-dir", def->ram_dir}, {"accel", def->accel},
		};
		size_t i;

		for (i = 0; i < ARRAY_SIZE(strs) && strcmp(key, strs[i].key); i++)
			;
		if (i == ARRAY_SIZE(strs))
			return qerr(err, EINVAL, "'%s' is not a key of a definition", key);
		v = xstrdup_or_null(strs[i].value);
	}
	*ret_value = v;
	return 0;
}
