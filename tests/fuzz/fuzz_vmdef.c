/* SPDX-License-Identifier: MIT */
/* Fuzz the vm.json reader: any text is read without crashing or leaking,
 * rejected with a message naming the file, or accepted; what is accepted
 * writes out to text that reads back to the same definition, and gives a
 * QEMU command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	qsnap_def def, def2;
	qsnap_error err = {0};
	char *out = NULL, *out2 = NULL;
	char **argv = NULL;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (vmdef_from_json(text, "/vm/vm.json", &def, &err) < 0) {
		if (!strstr(err.msg, "/vm/vm.json"))
			abort();
		free(text);
		return 0;
	}
	for (size_t i = 0; i < def.n_drives; i++)
		if (!drive_id_valid(def.drives[i].id))
			abort();
	if (vmdef_to_json(&def, &out, &err) < 0)
		abort();
	if (vmdef_from_json(out, "round trip", &def2, &err) < 0) {
		fprintf(stderr, "vm.json written by qsnap does not read back: %s\n%s\n", err.msg, out);
		abort();
	}
	if (vmdef_to_json(&def2, &out2, &err) < 0 || strcmp(out, out2)) {
		fprintf(stderr, "vm.json changes in a round trip:\n%s\n---\n%s\n", out, out2);
		abort();
	}
	/* A command line for it, with a layer for every writable drive. */
	{
		struct qemu_chain *chains = xcalloc(def.n_drives + 1, sizeof(*chains));
		char **layers = xcalloc(def.n_drives + 1, sizeof(char *));

		for (size_t i = 0; i < def.n_drives; i++) {
			layers[i] = xasprintf("layers/%s-%zu.qcow2", def.drives[i].id, i + 1);
			if (!def.drives[i].readonly)
				chains[i] = (struct qemu_chain){(const char **)&layers[i], 1};
		}
		argv = qemu_argv(&(struct qemu_cmd){.def = &def, .chains = chains,
						    .qmp_socket = "run/qmp.sock",
						    .pid_file = "run/qemu.pid", .incoming = true});
		strv_free(argv);
		strv_free(layers);
		free(chains);
	}
	def_clear(&def);
	def_clear(&def2);
	free(out);
	free(out2);
	free(text);
	return 0;
}
