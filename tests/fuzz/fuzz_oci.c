/* SPDX-License-Identifier: MIT */
/* Fuzz what a registry sends: an OCI manifest and a qsnap config (the
 * input is the manifest, a NUL byte, then the config). Nothing may crash or
 * leak; a config that is accepted names only blobs the manifest lists, its
 * chunks are qsnap's size and add up to the sizes, and its drive ids and
 * snapshot name are valid. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/ops.h"
#include "registry/oci.h"

static bool listed(json_object *layers, const char *digest)
{
	for (size_t i = 0; i < json_object_array_length(layers); i++)
		if (!strcmp(jstr(json_object_array_get_idx(layers, i), "digest"), digest))
			return true;
	return false;
}

static void check_chunks(const struct oci_pchunks *c, json_object *layers)
{
	uint64_t sum = 0;

	if (c->chunk_size != OCI_CHUNK_SIZE)
		abort();
	for (size_t i = 0; i < c->n; i++) {
		sum += c->chunks[i].size;
		if (c->chunks[i].digest[0] && !listed(layers, c->chunks[i].digest))
			abort();
	}
	if (sum != c->size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 2);
	const char *config;
	json_object *layers = NULL;
	struct oci_item cfg;
	struct oci_snapshot s;
	qsnap_error err = {0};

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = text[size + 1] = '\0';
	config = text + strlen(text) + 1;
	if (config > text + size)
		config = "";
	if (oci_manifest_parse(text, "fuzz", &cfg, &layers, &err) < 0) {
		if (!err.msg[0])
			abort();
		free(text);
		return 0;
	}
	if (!digest_valid(cfg.digest))
		abort();
	if (oci_config_parse(config, "fuzz", layers, &s, &err) == 0) {
		for (size_t i = 0; i < s.n_drives; i++) {
			if (!drive_id_valid(s.drives[i].id) || !listed(layers, s.drives[i].base.digest))
				abort();
			for (size_t j = 0; j < s.drives[i].n_layers; j++)
				if (!listed(layers, s.drives[i].layers[j].digest))
					abort();
		}
		check_chunks(&s.state, layers);
		if (s.has_ram)
			check_chunks(&s.ram, layers);
		/* Deltas only with shared RAM, at most a chain's, named delta.<k>. */
		if ((s.n_deltas && !s.has_ram) || s.n_deltas > RAM_CHAIN_MAX)
			abort();
		for (size_t k = 0; k < s.n_deltas; k++) {
			char want[32];

			snprintf(want, sizeof(want), "delta.%zu", k + 1);
			if (strcmp(s.deltas[k].file, want))
				abort();
			check_chunks(&s.deltas[k], layers);
		}
		if (!qsnap_name_valid(s.name))
			abort();
		oci_snapshot_free(&s);
	} else if (!err.msg[0]) {
		abort();
	}
	json_object_put(layers);
	free(text);
	return 0;
}
