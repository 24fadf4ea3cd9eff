/* SPDX-License-Identifier: MIT */
/* Fuzz an archive's qsnap-export.json, the first thing import reads of a
 * tar file from elsewhere. Nothing may crash or leak; what is accepted
 * names a valid snapshot and only files inside the new VM directory, each
 * once, with a checksum; a RAM file and deltas only with shared RAM. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct import im = {.input = "fuzz.tar", .stagefd = -1};
	qsnap_error err = {0};

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (import_parse_manifest(&im, text, &err) == 0) {
		if (!im.name || !qsnap_name_valid(im.name))
			abort();
		for (size_t i = 0; i < im.n_files; i++) {
			const char *p = im.files[i].path;

			if (p[0] == '/' || strstr(p, "..") || !checksum_valid(im.files[i].checksum))
				abort();
			/* A RAM file and deltas with a shared-RAM snapshot only. */
			if ((import_delta_index(p) || !strcmp(p, EXPORT_RAM)) &&
			    im.mode != QSNAP_RAM_SHARED)
				abort();
			for (size_t j = 0; j < i; j++)
				if (!strcmp(p, im.files[j].path))
					abort();
		}
	} else if (!err.msg[0]) {
		abort();
	}
	for (size_t i = 0; i < im.n_files; i++) {
		free(im.files[i].path);
		free(im.files[i].checksum);
	}
	free(im.files);
	free(im.name);
	free(text);
	return 0;
}
