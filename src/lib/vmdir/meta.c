/* SPDX-License-Identifier: MIT */
/* meta.json: a snapshot described on its own, beside its machine state, for
 * readers that have no state.json (an export, a registry, verify). Written
 * once, when the snapshot is made (save, import, pull). */
#include <string.h>

#include "vmdir/vmdir.h"

char *meta_text(const struct snapshot *s)
{
	_cleanup_json_ json_object *o = NULL;
	json_object *drives = json_object_new_object();

	for (size_t i = 0; i < s->n_drives; i++)
		json_object_object_add(drives, s->drives[i].drive,
				       json_object_new_string(s->drives[i].layer));
	o = jbuild("name", json_object_new_string(s->name), "parent",
		   s->parent ? json_object_new_string(s->parent) : NULL, "created",
		   json_object_new_int64(s->created), "mode",
		   json_object_new_string(qsnap_ram_mode_name(s->mode)),
		   "was_running", json_object_new_boolean(s->was_running), "vmstate_size",
		   json_object_new_int64((int64_t)s->vmstate_size), "compressed",
		   json_object_new_boolean(s->compressed), "vmstate_checksum",
		   s->vmstate_checksum ? json_object_new_string(s->vmstate_checksum) : NULL,
		   "ram_checksum", s->ram_checksum ? json_object_new_string(s->ram_checksum) : NULL,
		   "ram_base", s->ram_base ? json_object_new_string(s->ram_base) : NULL,
		   "ram_chain", s->n_ram_chain ? ram_chain_to_json(s) : NULL,
		   "qemu_version", s->qemu_version ? json_object_new_string(s->qemu_version) : NULL,
		   "machine", s->machine ? json_object_new_string(s->machine) : NULL, "format",
		   vmstate_format_name(s->format) ? json_object_new_string(vmstate_format_name(s->format)) : NULL, "memory",
		   json_object_new_int64((int64_t)s->memory), "drives", drives, NULL);
	return xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
}

int meta_write(int dirfd, const char *dir, const struct snapshot *s, qsnap_error *err)
{
	_cleanup_free_ char *path = layout_in(dir, SNAP_META);
	_cleanup_free_ char *text = meta_text(s);

	return write_file_atomic(dirfd, path, text, strlen(text), err);
}

int meta_read(int dirfd, const struct snapshot *s, char **ret_text, qsnap_error *err)
{
	_cleanup_free_ char *path = layout_in(s->dir, SNAP_META);
	int r = read_file(dirfd, path, ret_text, NULL, err);

	return r < 0 ? qerr_prefix(err, "snapshot '%s'", s->name) : 0;
}
