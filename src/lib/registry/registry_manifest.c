/* SPDX-License-Identifier: MIT */
/* Manifests in a registry: one put under the reference's tag, and the
 * tag's manifest fetched with its digest, checked against the one the
 * registry gives. */
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

int reg_manifest_put(struct registry *r, reg_conn *c, const char *media_type, const char *json,
		     qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/manifests/%s", r->base, r->ref.repo, r->ref.tag);
	struct body b = {.mem = json, .fd = -1, .len = strlen(json)};
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = reg_request(r, c,
			  &(struct req){.method = "PUT", .url = url, .body = &b, .content_type = media_type},
			  &p, "the manifest upload", err);
	if (ret >= 0 && p.status != 201)
		ret = reg_http_err(r, &p, "the manifest upload", err);
	reg_resp_free(&p);
	return ret;
}

int reg_manifest_get(struct registry *r, reg_conn *c, const char *accept, char **ret_json,
		     char ret_digest[DIGEST_LEN + 1], qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/manifests/%s", r->base, r->ref.repo, r->ref.tag);
	struct resp p = {.max = OCI_MAX_SMALL_BLOB};
	int ret;

	ret = reg_request(
	    r, c, &(struct req){.method = "GET", .url = url, .accept = accept, .follow = true}, &p,
	    "the manifest request", err);
	if (ret >= 0 && p.status == 404)
		ret = qerr(err, ENOENT, "%s/%s%s%s is not in the registry (no such %s or repository)",
			   r->ref.host, r->ref.repo, r->ref.digest ? "@" : ":", r->ref.tag,
			   r->ref.digest ? "manifest" : "tag");
	else if (ret >= 0 && p.status != 200)
		ret = reg_http_err(r, &p, "the manifest request", err);
	else if (ret >= 0 && (p.too_long || !p.text))
		ret = qerr(err, EINVAL, "the manifest of %s/%s:%s is %s", r->ref.host, r->ref.repo,
			   r->ref.tag, p.too_long ? "too large" : "empty");
	if (ret >= 0) {
		sha256_buf(p.text, p.len, ret_digest);
		/* Pinned: exactly that manifest, whatever the registry says. */
		if (r->ref.digest && strcmp(r->ref.digest, ret_digest))
			ret = qerr(err, EIO, "registry %s sent a manifest with digest %s for %s/%s@%s: refused",
				   r->ref.host, ret_digest, r->ref.host, r->ref.repo, r->ref.digest);
		else if (p.digest && strcmp(p.digest, ret_digest))
			ret = qerr(err, EIO, "the manifest of %s/%s:%s does not match the digest the registry gives for it (%s)",
				   r->ref.host, r->ref.repo, r->ref.tag, p.digest);
	}
	if (ret >= 0)
		*ret_json = TAKE_PTR(p.text);
	reg_resp_free(&p);
	return ret;
}
