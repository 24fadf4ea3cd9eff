/* SPDX-License-Identifier: MIT */
/* Uploading a blob to a registry: an upload session (POST), the data in
 * pieces (PATCH) that resume after a dropped connection where the registry
 * has the session, or start over when it forgot it, and the final PUT
 * that names the digest. A small blob goes in the PUT alone. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

#define PIECE (16ULL << 20) /* one PATCH of a chunked upload */

int reg_upload_url(struct registry *r, const char *loc, char **ret, qsnap_error *err)
{
	if (!strncasecmp(loc, "http://", 7) && r->base[4] == 's')
		return qerr(err, EPROTO, "registry %s sent an upload to plain HTTP (%s): qsnap does not leave HTTPS",
			    r->ref.host, loc);
	if (!strncasecmp(loc, "http://", 7) || !strncasecmp(loc, "https://", 8))
		*ret = xstrdup(loc);
	else
		*ret = xasprintf("%s%s%s", r->base, loc[0] == '/' ? "" : "/", loc);
	return 0;
}

/* Start an upload session: its URL. */
static int upload_start(struct registry *r, CURL *c, const char *what, char **ret_url,
			qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/blobs/uploads/", r->base, r->ref.repo);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = reg_request(r, c, &(struct req){.method = "POST", .url = url}, &p, what, err);
	if (ret >= 0 && (p.status != 202 || !p.location))
		ret = p.status == 202 ? qerr(err, EPROTO, "registry %s started an upload without a Location",
					     r->ref.host)
				      : reg_http_err(r, &p, what, err);
	if (ret >= 0)
		ret = reg_upload_url(r, p.location, ret_url, err);
	reg_resp_free(&p);
	return ret;
}

static int upload_finish(struct registry *r, CURL *c, const char *url, const char *digest,
			 struct body *b, const char *what, qsnap_error *err)
{
	_cleanup_free_ char *put = xasprintf("%s%sdigest=%s", url, strchr(url, '?') ? "&" : "?", digest);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = reg_request(r, c,
			  &(struct req){.method = "PUT", .url = put, .body = b,
					.content_type = "application/octet-stream"},
			  &p, what, err);
	if (ret >= 0 && p.status != 201)
		ret = reg_http_err(r, &p, what, err);
	reg_resp_free(&p);
	return ret;
}

/* Where the registry has the upload now (after a failed PATCH): the next
 * offset, or -ENOENT when it forgot the session. */
static int upload_offset(struct registry *r, CURL *c, char **url, uint64_t *ret_pos,
			 const char *what, qsnap_error *err)
{
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = reg_request(r, c, &(struct req){.method = "GET", .url = *url}, &p, what, err);
	if (ret >= 0 && p.status == 404)
		ret = -ENOENT;
	else if (ret >= 0 && p.status != 204)
		ret = reg_http_err(r, &p, what, err);
	if (ret >= 0) {
		unsigned long long a = 0, b = 0;

		/* "0-N": it has N+1 bytes. Distribution says "0-0" for an empty
		 * session too, and it appends a PATCH whatever its
		 * Content-Range: taken as empty, a session that had one byte
		 * gets it twice and its PUT is refused, which starts over
		 * (below); taken as one byte, an empty one would lose the
		 * blob's first byte the same way, far more often. */
		*ret_pos = p.range && sscanf(p.range, "%llu-%llu", &a, &b) == 2 && b > 0 ? b + 1 : 0;
		if (p.location) {
			char *next = NULL;

			ret = reg_upload_url(r, p.location, &next, err);
			if (ret >= 0) {
				free(*url);
				*url = next;
			}
		}
	}
	reg_resp_free(&p);
	return ret;
}

int reg_blob_upload_fd(struct registry *r, reg_conn *c, int fd, uint64_t off, uint64_t len,
		       const char *digest, void (*on_bytes)(uint64_t n, void *ud), void *ud,
		       qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("the upload of blob %s", digest);
	_cleanup_free_ char *url = NULL;
	uint64_t pos = 0;
	int tries = 0, ret;

	for (;;) {
		qsnap_error e2;
		bool have;

		if (!url) {
			pos = 0;
			ret = upload_start(r, c, what, &url, err);
			if (ret < 0)
				goto failed;
		}
		while (pos < len) {
			uint64_t piece = len - pos < PIECE ? len - pos : PIECE;
			struct body b = {.fd = fd, .off = off + pos, .len = piece,
					 .on_bytes = on_bytes, .ud = ud};
			char range[64];
			struct resp p = {.max = MAX_ERROR_BODY};

			snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)pos,
				 (unsigned long long)(pos + piece - 1));
			ret = reg_request(r, c,
					  &(struct req){.method = "PATCH", .url = url, .body = &b,
							.content_type = "application/octet-stream",
							.content_range = range},
					  &p, what, err);
			if (ret >= 0 && p.status == 202 && p.location) {
				free(url);
				url = NULL;
				ret = reg_upload_url(r, p.location, &url, err);
				reg_resp_free(&p);
				if (ret < 0)
					return ret;
				pos += piece;
				continue;
			}
			if (ret >= 0)
				ret = reg_http_err(r, &p, what, err);
			reg_resp_free(&p);
			if (ret == -EACCES || b.err)
				return ret;
			goto failed;
		}
		ret = upload_finish(r, c, url, digest, NULL, what, err);
		if (ret >= 0 || ret == -EACCES)
			return ret;
		/* The registry answered and refused to finish the session (what
		 * it has does not match the digest, or it forgot the session):
		 * that session cannot be finished; a new one from the start. */
		if (ret == -EIO || ret == -ENOENT)
			free(TAKE_PTR(url));
	failed:
		if (ret == -EACCES || ret == -EPROTO || tries++ >= RETRIES)
			return ret;
		/* A dropped connection or a registry restarting: the blob may be
		 * complete after all (an answer lost), the session may go on
		 * where the registry has it, or it starts over. Distribution
		 * 2.8 drops a session whose PATCH was cut off: the bytes it
		 * got no longer match the session's offset. */
		sleep_ms(500 * tries);
		if (reg_blob_exists(r, c, digest, &have, &e2) >= 0 && have)
			return 0;
		if (url && (upload_offset(r, c, &url, &pos, what, &e2) < 0 || pos > len))
			free(TAKE_PTR(url));
	}
}

int reg_blob_upload_mem(struct registry *r, reg_conn *c, const void *data, size_t len,
			const char *digest, qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("the upload of blob %s", digest);
	_cleanup_free_ char *url = NULL;
	struct body b = {.mem = data, .fd = -1, .len = len};
	int ret;

	ret = upload_start(r, c, what, &url, err);
	if (ret >= 0)
		ret = upload_finish(r, c, url, digest, &b, what, err);
	return ret;
}
