/* SPDX-License-Identifier: MIT */
/* What users type for a definition: the names of modes and formats,
 * snapshot and drive names, sizes, and --drive specs. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "vmdir/vmdir.h"

static const char *const iface_names[] = {
	[QSNAP_IF_VIRTIO] = "virtio",
	[QSNAP_IF_SCSI] = "scsi",
	[QSNAP_IF_IDE] = "ide",
	[QSNAP_IF_PFLASH] = "pflash",
};

const char *qsnap_ram_mode_name(qsnap_ram_mode m)
{
	return m == QSNAP_RAM_SHARED ? "shared" : "stream";
}

int qsnap_ram_mode_parse(const char *s, qsnap_ram_mode *ret)
{
	if (!strcmp(s, "stream"))
		*ret = QSNAP_RAM_STREAM;
	else if (!strcmp(s, "shared"))
		*ret = QSNAP_RAM_SHARED;
	else
		return -EINVAL;
	return 0;
}

static const char *const save_paths[] = {"auto", "stream", "mapped-ram", "ram-file"};
static const char *const settings[] = {"auto", "on", "off"};

const char *save_path_name(enum save_path p)
{
	return (size_t)p < ARRAY_SIZE(save_paths) ? save_paths[p] : "auto";
}

int save_path_parse(const char *s, enum save_path *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(save_paths); i++)
		if (!strcmp(s, save_paths[i])) {
			*ret = (enum save_path)i;
			return 0;
		}
	return -EINVAL;
}

const char *setting_name(enum setting s)
{
	return (size_t)s < ARRAY_SIZE(settings) ? settings[s] : "auto";
}

int setting_parse(const char *s, enum setting *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(settings); i++)
		if (!strcmp(s, settings[i])) {
			*ret = (enum setting)i;
			return 0;
		}
	return -EINVAL;
}

const char *qsnap_image_format_name(qsnap_image_format f)
{
	return f == QSNAP_IMAGE_RAW ? "raw" : "qcow2";
}

int qsnap_image_format_parse(const char *s, qsnap_image_format *ret)
{
	if (!strcmp(s, "qcow2"))
		*ret = QSNAP_IMAGE_QCOW2;
	else if (!strcmp(s, "raw"))
		*ret = QSNAP_IMAGE_RAW;
	else
		return -EINVAL;
	return 0;
}

bool qsnap_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64 || name[0] == '.')
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
			return false;
	return true;
}

bool drive_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 31 || !isalpha((unsigned char)id[0]))
		return false;
	for (const char *p = id; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
			return false;
	return true;
}

int qsnap_parse_size(const char *s, uint64_t *ret_bytes, qsnap_error *err)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	char *end;
	int shift = 0;

	if (!s || !isdigit((unsigned char)s[0]))
		goto bad;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		goto bad;
	if (*end) {
		const char *u = strchr(units, toupper((unsigned char)*end));

		if (!u || !*u)
			goto bad;
		shift = 10 * (int)(u - units + 1);
		end++;
		if (*end == 'i' && end[1] == 'B')
			end += 2;
		else if (*end == 'B')
			end++;
		if (*end)
			goto bad;
	}
	if (shift && v > (ULLONG_MAX >> shift))
		goto bad;
	*ret_bytes = (uint64_t)v << shift;
	return 0;
bad:
	return qerr(err, EINVAL, "invalid size '%s': use a number with an optional unit K, M, G or T (e.g. 512M, 4G)",
		    s ? s : "");
}

const char *iface_name(qsnap_iface i)
{
	return iface_names[i];
}

int iface_parse(const char *s, qsnap_iface *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(iface_names); i++)
		if (!strcmp(s, iface_names[i])) {
			*ret = (qsnap_iface)i;
			return 0;
		}
	return -EINVAL;
}

static char *absolute_path(const char *path)
{
	char cwd[PATH_MAX];

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return xstrdup(path);
	return xasprintf("%s/%s", cwd, path);
}

int def_add_drive(qsnap_def *def, const char *spec, qsnap_error *err)
{
	_cleanup_free_ char *copy = xstrdup(spec);
	qsnap_drive_def d = {.iface = QSNAP_IF_VIRTIO};
	char *eq = strchr(copy, '='), *opts, *save = NULL;
	const char *fmt = NULL; /* in copy; no allocation to undo on errors */

	if (!eq)
		return qerr(err, EINVAL, "drive '%s': expected ID=PATH[,if=virtio|scsi|ide|pflash][,format=qcow2|raw][,readonly]",
			    spec);
	*eq = '\0';
	if (!drive_id_valid(copy))
		return qerr(err, EINVAL, "drive id '%s' is not valid: use a letter followed by letters, digits, '-' or '_' (at most 31)",
			    copy);
	for (size_t i = 0; i < def->n_drives; i++)
		if (!strcmp(def->drives[i].id, copy))
			return qerr(err, EEXIST, "drive id '%s' is given twice", copy);
	/* The path ends at the first comma that starts a known option; QEMU's
	 * own ",," escaping is not needed because options come last. */
	opts = eq + 1;
	char *path = opts;
	char *comma = NULL;
	for (char *p = strchr(opts, ','); p; p = strchr(p + 1, ','))
		if (!strncmp(p + 1, "if=", 3) || !strncmp(p + 1, "format=", 7) ||
		    !strcmp(p + 1, "readonly") || !strncmp(p + 1, "readonly,", 9)) {
			comma = p;
			break;
		}
	if (comma)
		*comma = '\0';
	if (!*path)
		return qerr(err, EINVAL, "drive '%s': no image path given", copy);
	for (char *o = comma ? strtok_r(comma + 1, ",", &save) : NULL; o;
	     o = strtok_r(NULL, ",", &save)) {
		if (!strncmp(o, "if=", 3)) {
			if (iface_parse(o + 3, &d.iface) < 0) {
				return qerr(err, EINVAL, "drive '%s': unknown interface '%s' (use virtio, scsi, ide or pflash)",
					    copy, o + 3);
			}
		} else if (!strncmp(o, "format=", 7)) {
			if (strcmp(o + 7, "qcow2") && strcmp(o + 7, "raw")) {
				return qerr(err, EINVAL, "drive '%s': unknown format '%s' (use qcow2 or raw)",
					    copy, o + 7);
			}
			fmt = o + 7;
		} else if (!strcmp(o, "readonly")) {
			d.readonly = true;
		} else {
			return qerr(err, EINVAL, "drive '%s': unknown option '%s'", copy, o);
		}
	}
	d.id = xstrdup(copy);
	d.path = absolute_path(path);
	d.format = xstrdup_or_null(fmt);
	def->drives = xrealloc(def->drives, (def->n_drives + 1) * sizeof(*def->drives));
	def->drives[def->n_drives++] = d;
	return 0;
}
