/* SPDX-License-Identifier: MIT */
/* The registry client's HTTP on libcurl: one curl handle a connection (a
 * thread), one request performed on it with the headers it needs, the
 * answer's status, headers and body collected (a blob streamed into its
 * sink, hashed and held to its size), a body read from memory or a file,
 * and the errors told in words (the registry's error code, a hint for a
 * connection that failed). No Authorization of its own: registry.c says. */
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

static void resp_headers_free(struct resp *p)
{
	free(p->location);
	free(p->www_auth);
	free(p->range);
	free(p->digest);
	p->location = p->www_auth = p->range = p->digest = NULL;
}

void reg_resp_free(struct resp *p)
{
	resp_headers_free(p);
	free(p->text);
	p->text = NULL;
	p->len = 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
	struct resp *p = ud;
	size_t len = size * n, klen, vlen;
	const char *colon = memchr(buf, ':', len), *v;
	char **slot = NULL;

	if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
		resp_headers_free(p); /* a redirect's or a 100's headers are not the answer's */
		return len;
	}
	if (!colon)
		return len;
	klen = (size_t)(colon - buf);
	for (v = colon + 1; v < buf + len && (*v == ' ' || *v == '\t'); v++)
		;
	vlen = (size_t)(buf + len - v);
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
#define IS(name) (klen == strlen(name) && !strncasecmp(buf, name, klen))
	if (IS("Location"))
		slot = &p->location;
	else if (IS("WWW-Authenticate"))
		slot = &p->www_auth;
	else if (IS("Range"))
		slot = &p->range;
	else if (IS("Docker-Content-Digest"))
		slot = &p->digest;
#undef IS
	if (slot) {
		free(*slot);
		*slot = strndup(v, vlen);
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	struct resp *p = ud;
	size_t len = size * n;
	long code = 0;

	curl_fn.easy_getinfo(p->c, CURLINFO_RESPONSE_CODE, &code);
	if (p->sink && code == 200) {
		if (p->got + len > p->expect) {
			p->too_long = true;
			return 0;
		}
		sha256_update(p->hash, data, len);
		p->got += len;
		p->sink_r = p->sink(data, len, p->sink_ud, p->sink_err);
		return p->sink_r < 0 ? 0 : len;
	}
	if (p->len + len > p->max) {
		if (p->sink || code != 200)
			len = p->max > p->len ? p->max - p->len : 0; /* keep the start of an error */
		else {
			p->too_long = true;
			return 0;
		}
	}
	p->text = xrealloc(p->text, p->len + len + 1);
	memcpy(p->text + p->len, data, len);
	p->len += len;
	p->text[p->len] = '\0';
	return size * n;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	struct body *b = ud;
	size_t want = size * n;

	if (want > b->len - b->pos)
		want = (size_t)(b->len - b->pos);
	if (!want)
		return 0;
	if (b->mem) {
		memcpy(buf, b->mem + b->pos, want);
	} else {
		ssize_t got;

		do
			got = pread(b->fd, buf, want, (off_t)(b->off + b->pos));
		while (got < 0 && errno == EINTR);
		if (got <= 0) {
			b->err = got < 0 ? errno : EIO;
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)got;
	}
	b->pos += want;
	if (b->on_bytes)
		b->on_bytes(want, b->ud);
	return want;
}

CURLcode reg_perform(struct registry *r, CURL *c, const struct req *q, const char *auth,
		     struct resp *p, char *errbuf)
{
	struct curl_slist *h = NULL;
	_cleanup_free_ char *ah = NULL, *ct = NULL, *acc = NULL, *cr = NULL;
	CURLcode rc;

	curl_fn.easy_reset(c);
	p->c = c;
	p->status = 0;
	reg_resp_free(p);
	errbuf[0] = '\0';
	curl_fn.easy_setopt(c, CURLOPT_URL, q->url);
	curl_fn.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_fn.easy_setopt(c, CURLOPT_USERAGENT, "qsnap");
	curl_fn.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_fn.easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	/* A stalled transfer fails instead of hanging: under 1 KB/s for 60 s. */
	curl_fn.easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_fn.easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_fn.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_fn.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, r->base[4] == 's' ? "https" : "http,https");
	curl_fn.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_fn.easy_setopt(c, CURLOPT_HEADERDATA, p);
	curl_fn.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_fn.easy_setopt(c, CURLOPT_WRITEDATA, p);
	/* libcurl sends no custom Authorization to another host after a
	 * redirect (blob storage behind the registry). */
	curl_fn.easy_setopt(c, CURLOPT_FOLLOWLOCATION, q->follow ? 1L : 0L);
	curl_fn.easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	h = curl_fn.slist_append(h, "Expect:"); /* no 100-continue round trip per piece */
	if (auth) {
		ah = xasprintf("Authorization: %s", auth);
		h = curl_fn.slist_append(h, ah);
	}
	if (q->content_type) {
		ct = xasprintf("Content-Type: %s", q->content_type);
		h = curl_fn.slist_append(h, ct);
	}
	if (q->accept) {
		acc = xasprintf("Accept: %s", q->accept);
		h = curl_fn.slist_append(h, acc);
	}
	if (q->content_range) {
		cr = xasprintf("Content-Range: %s", q->content_range);
		h = curl_fn.slist_append(h, cr);
	}
	curl_fn.easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (!strcmp(q->method, "HEAD")) {
		curl_fn.easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(q->method, "POST")) {
		curl_fn.easy_setopt(c, CURLOPT_POST, 1L);
		curl_fn.easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_fn.easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	} else if (!strcmp(q->method, "PUT") || !strcmp(q->method, "PATCH")) {
		static struct body empty = {.fd = -1};
		struct body *b = q->body ? q->body : &empty;

		b->pos = 0;
		b->err = 0;
		curl_fn.easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_fn.easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
		curl_fn.easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_fn.easy_setopt(c, CURLOPT_READDATA, b);
		curl_fn.easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)b->len);
	}
	rc = curl_fn.easy_perform(c);
	curl_fn.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
	curl_fn.slist_free_all(h);
	if (ah)
		explicit_bzero(ah, strlen(ah));
	return rc;
}

/* "HTTP 404 (BLOB_UNKNOWN: blob unknown to registry)" */
static char *status_text(const struct resp *p)
{
	_cleanup_json_ json_object *o = p->text ? json_tokener_parse(p->text) : NULL;
	json_object *errs = jarr(o, "errors");
	json_object *e = errs && json_object_array_length(errs) ? json_object_array_get_idx(errs, 0)
							       : NULL;

	if (jstr(e, "code"))
		return xasprintf("HTTP %ld (%s%s%s)", p->status, jstr(e, "code"),
				 jstr(e, "message") ? ": " : "", jstr(e, "message") ? jstr(e, "message") : "");
	return xasprintf("HTTP %ld", p->status);
}

int reg_http_err(struct registry *r, const struct resp *p, const char *what, qsnap_error *err)
{
	_cleanup_free_ char *s = status_text(p);
	int code = p->status == 404 ? ENOENT : p->status == 401 || p->status == 403 ? EACCES : EIO;

	return qerr(err, code, "registry %s answered %s to %s", r->ref.host, s, what);
}

int reg_net_err(struct registry *r, CURLcode rc, const char *errbuf, const char *what,
		qsnap_error *err)
{
	const char *hint = "";

	if (rc == CURLE_SSL_CONNECT_ERROR && r->base[4] == 's')
		hint = " (a registry that speaks plain HTTP needs --insecure)";
	else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
		hint = " (is the registry running, and is the host right?)";
	else if (rc == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (its TLS certificate is not trusted by this host's CA store)";
	return qerr(err, rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : ECONNABORTED,
		    "cannot %s at registry %s: %s%s", what, r->ref.host,
		    errbuf[0] ? errbuf : curl_fn.easy_strerror(rc), hint);
}

reg_conn *reg_conn_new(void)
{
	CURL *c;

	c = curl_fn.easy_init();
	if (!c)
		abort();
	return c;
}

void reg_conn_free(reg_conn *c)
{
	if (c)
		curl_fn.easy_cleanup(c);
}
