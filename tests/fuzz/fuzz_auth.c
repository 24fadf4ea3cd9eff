/* SPDX-License-Identifier: MIT */
/* Fuzz what decides where credentials go and what they are: a registry's
 * WWW-Authenticate challenge, a Docker config.json, and base64. Nothing
 * may crash or leak; a challenge's scheme is basic or bearer; credentials
 * found have a user; base64 of any bytes decodes back to them. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ops/ops.h"
#include "registry/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *enc, *dec;
	struct reg_challenge ch = {0};
	struct reg_creds cr = {0};
	qsnap_error err = {0};
	size_t len = 0;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (reg_challenge_parse(text, &ch) == 0) {
		if (!ch.scheme || (strcmp(ch.scheme, "basic") && strcmp(ch.scheme, "bearer")))
			abort();
		reg_challenge_free(&ch);
	}
	if (reg_creds_from_docker_config(text, "config.json", "registry.example:5000", &cr, &err) == 0) {
		if (cr.password && !cr.user)
			abort();
		reg_creds_free(&cr);
	} else if (!err.msg[0]) {
		abort();
	}
	dec = base64_decode(text, &len);
	free(dec);
	enc = base64_encode(data, size);
	dec = base64_decode(enc, &len);
	if (!dec || len != size || memcmp(dec, data, size))
		abort();
	free(dec);
	free(enc);
	free(text);
	return 0;
}
