/* SPDX-License-Identifier: MIT */
/* Fuzz what users type: sizes, snapshot names and --drive specs. The
 * input is split at newlines into strings. Nothing may crash, and a name
 * or drive id that is accepted can never leave the VM directory. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/ops.h"

static void check_name(const char *s)
{
	if (qsnap_name_valid(s) &&
	    (!*s || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..") || s[0] == '.' ||
	     strlen(s) > 64))
		abort();
	if (drive_id_valid(s) && (!*s || strchr(s, '/') || strchr(s, '.') || strchr(s, ',') ||
				  strchr(s, '=') || strlen(s) > 31))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *save = NULL;
	qsnap_def def;
	qsnap_error err = {0};

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	def_init(&def);
	for (char *s = strtok_r(text, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
		uint64_t bytes;

		check_name(s);
		if (qsnap_parse_size(s, &bytes, &err) < 0 && !err.msg[0])
			abort();
		if (def.n_drives < 8 && def_add_drive(&def, s, &err) == 0) {
			const qsnap_drive_def *d = &def.drives[def.n_drives - 1];

			if (!drive_id_valid(d->id) || !d->path || !*d->path)
				abort();
		}
	}
	def_clear(&def);
	free(text);
	return 0;
}
