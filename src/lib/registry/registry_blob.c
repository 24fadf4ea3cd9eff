/* SPDX-License-Identifier: MIT */
/* Blobs in a registry: whether the repository holds one (HEAD), and
 * downloads checked against their size and sha256 as they come, into a
 * sink or, for a small blob (a config), into memory. */
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

int reg_blob_exists(struct registry *r, reg_conn *c, const char *digest, bool *ret,
		    qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/blobs/%s", r->base, r->ref.repo, digest);
	_cleanup_free_ char *what = xasprintf("a check for blob %s", digest);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret_r;

	ret_r = reg_request(r, c, &(struct req){.method = "HEAD", .url = url, .follow = true}, &p,
			    what, err);
	if (ret_r >= 0 && p.status != 200 && p.status != 404)
		ret_r = reg_http_err(r, &p, what, err);
	if (ret_r >= 0)
		*ret = p.status == 200;
	reg_resp_free(&p);
	return ret_r;
}

int reg_blob_get(struct registry *r, reg_conn *c, const char *digest, uint64_t size,
		 reg_sink sink, void *ud, qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/blobs/%s", r->base, r->ref.repo, digest);
	_cleanup_free_ char *what = xasprintf("the download of blob %s", digest);
	struct sha256 h;
	struct resp p = {.max = MAX_ERROR_BODY, .sink = sink, .sink_ud = ud, .sink_err = err,
			 .hash = &h, .expect = size};
	char got[DIGEST_LEN + 1];
	int ret;

	sha256_init(&h);
	ret = reg_request(r, c, &(struct req){.method = "GET", .url = url, .follow = true}, &p,
			  what, err);
	if (ret >= 0 && p.status == 404)
		ret = qerr(err, ENOENT, "blob %s is missing from registry %s (%s)", digest, r->ref.host,
			   r->ref.repo);
	else if (ret >= 0 && p.status != 200)
		ret = reg_http_err(r, &p, what, err);
	else if (ret >= 0 && (p.too_long || p.got != size))
		ret = qerr(err, EIO, "blob %s from registry %s has %s bytes, %llu were expected: the registry's copy is damaged",
			   digest, r->ref.host, p.too_long ? "more" : "fewer", (unsigned long long)size);
	if (ret >= 0) {
		sha256_final(&h, got);
		if (strcmp(got, digest))
			ret = qerr(err, EIO, "blob %s from registry %s does not match its digest (it is %s): the registry's copy is damaged",
				   digest, r->ref.host, got);
	} else {
		sha256_free(&h);
	}
	reg_resp_free(&p);
	return ret;
}

struct mem_sink {
	char *buf;
	size_t len;
};

static int to_mem(const void *data, size_t len, void *ud, qsnap_error *err)
{
	struct mem_sink *m = ud;

	(void)err;
	m->buf = xrealloc(m->buf, m->len + len + 1);
	memcpy(m->buf + m->len, data, len);
	m->len += len;
	m->buf[m->len] = '\0';
	return 0;
}

int reg_blob_get_mem(struct registry *r, reg_conn *c, const char *digest, uint64_t size,
		     char **ret, qsnap_error *err)
{
	struct mem_sink m = {.buf = xstrdup("")};
	int ret_r;

	if (size > OCI_MAX_SMALL_BLOB) {
		free(m.buf);
		return qerr(err, EINVAL, "blob %s is too large (%llu bytes) for what it should be",
			    digest, (unsigned long long)size);
	}
	ret_r = reg_blob_get(r, c, digest, size, to_mem, &m, err);
	if (ret_r < 0) {
		free(m.buf);
		return ret_r;
	}
	*ret = m.buf;
	return 0;
}
