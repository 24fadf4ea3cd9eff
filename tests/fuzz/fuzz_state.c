/* SPDX-License-Identifier: MIT */
/* Fuzz the state.json reader: any text is read without crashing or
 * leaking, rejected with a message naming the file, or accepted; what is
 * accepted writes out to text that reads back to the same state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/ops.h"

/* A ".." path component (a name such as "a..b" is fine). */
static bool dotdot(const char *p)
{
	for (const char *c = p; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
		if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || !c[2]))
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct state st, st2;
	qsnap_error err = {0};
	char *out = NULL, *out2 = NULL;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (state_from_json(text, "/vm/state.json", &st, &err) < 0) {
		if (!strstr(err.msg, "/vm/state.json"))
			abort();
		free(text);
		return 0;
	}
	/* What qsnap trusts after reading. */
	for (size_t i = 0; i < st.n_layers; i++)
		if (st.layers[i].path[0] == '/' || dotdot(st.layers[i].path) ||
		    strncmp(st.layers[i].path, "layers/", 7))
			abort();
	for (size_t i = 0; i < st.n_snapshots; i++)
		if (!qsnap_name_valid(st.snapshots[i].name) ||
		    strncmp(st.snapshots[i].dir, "snapshots/", 10) || dotdot(st.snapshots[i].dir))
			abort();
	if (state_to_json(&st, &out, &err) < 0)
		abort();
	if (state_from_json(out, "round trip", &st2, &err) < 0) {
		fprintf(stderr, "state written by qsnap does not read back: %s\n%s\n", err.msg, out);
		abort();
	}
	if (state_to_json(&st2, &out2, &err) < 0 || strcmp(out, out2)) {
		fprintf(stderr, "state changes in a round trip:\n%s\n---\n%s\n", out, out2);
		abort();
	}
	state_free(&st);
	state_free(&st2);
	free(out);
	free(out2);
	free(text);
	return 0;
}
