/* SPDX-License-Identifier: MIT */
/* sha256, as the OCI distribution spec names blobs: OpenSSL's libcrypto
 * (SHA-NI or AVX2 where the CPU has them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "base/base.h"

void sha256_init(struct sha256 *h)
{
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || !EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL))
		abort();
	h->bytes = 0;
}

void sha256_update(struct sha256 *h, const void *data, size_t len)
{
	if (!EVP_DigestUpdate(h->ctx, data, len))
		abort();
	h->bytes += len;
}

static void to_hex(const unsigned char *md, char out[DIGEST_LEN + 1])
{
	memcpy(out, SHA256_PREFIX, 7);
	for (size_t i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

void sha256_final(struct sha256 *h, char out[DIGEST_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_DigestFinal_ex(h->ctx, md, &n) || n != 32)
		abort();
	to_hex(md, out);
	sha256_free(h);
}

void sha256_free(struct sha256 *h)
{
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}

void sha256_buf(const void *data, size_t len, char out[DIGEST_LEN + 1])
{
	struct sha256 h;

	sha256_init(&h);
	sha256_update(&h, data, len);
	sha256_final(&h, out);
}

bool digest_valid(const char *s)
{
	return s && !strncmp(s, SHA256_PREFIX, 7) && strlen(s) == DIGEST_LEN &&
	       strspn(s + 7, "0123456789abcdef") == 64;
}
