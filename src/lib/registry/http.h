/* SPDX-License-Identifier: MIT */
/* Internal to registry/: one HTTP exchange with a registry, as the client's
 * files share it. What goes out (struct req, with a body from memory or a
 * file), what comes back (struct resp: the status, the headers that
 * matter, a small body, or a blob streamed into a sink and hashed), the
 * bare exchange and its errors (registry_http.c), answering a 401
 * (registry_token.c), and the exchange made with the Authorization in use
 * (registry.c). */
#ifndef QSNAP_REGISTRY_HTTP_H
#define QSNAP_REGISTRY_HTTP_H

#include <curl/curl.h>

#include "registry/registry.h"

/* ---- libcurl, loaded on first use (registry_curl.c) ---- */

/* Its functions, once reg_curl_load succeeded (registry_open calls it). */
extern struct curl_fns {
	typeof(curl_global_init) *global_init;
	typeof(curl_easy_init) *easy_init;
	typeof(curl_easy_cleanup) *easy_cleanup;
	typeof(curl_easy_reset) *easy_reset;
	typeof(curl_easy_setopt) *easy_setopt;
	typeof(curl_easy_getinfo) *easy_getinfo;
	typeof(curl_easy_perform) *easy_perform;
	typeof(curl_easy_strerror) *easy_strerror;
	typeof(curl_easy_escape) *easy_escape;
	typeof(curl_free) *free;
	typeof(curl_slist_append) *slist_append;
	typeof(curl_slist_free_all) *slist_free_all;
} curl_fn;
/* Load it (once per process); an error says what to install. */
int reg_curl_load(qsnap_error *err);

#define MAX_ERROR_BODY (64 << 10)
#define RETRIES 3

struct body {
	const char *mem;
	int fd;
	uint64_t off, len, pos;
	void (*on_bytes)(uint64_t n, void *ud);
	void *ud;
	int err; /* errno of a failed read */
};

struct resp {
	CURL *c;
	long status;
	char *location, *www_auth, *range, *digest;
	char *text; /* the body of an error response, or a small one */
	size_t len, max;
	/* Streaming a blob: into sink, hashed, at most expect bytes. */
	reg_sink sink;
	void *sink_ud;
	qsnap_error *sink_err;
	int sink_r;
	struct sha256 *hash;
	uint64_t expect, got;
	bool too_long;
};

struct req {
	const char *method; /* GET HEAD POST PUT PATCH */
	const char *url;
	const char *content_type, *accept, *content_range;
	struct body *body;
	bool follow;
	const char *auth; /* a fixed Authorization (token requests) */
};

/* ---- the bare exchange (registry_http.c) ---- */

/* One request on c with auth as its Authorization (NULL: none); p gets
 * the answer, errbuf (CURL_ERROR_SIZE bytes) curl's message. */
CURLcode reg_perform(struct registry *r, CURL *c, const struct req *q, const char *auth,
		     struct resp *p, char *errbuf);
void reg_resp_free(struct resp *p);
/* An answer that is not the one wanted: ENOENT for a 404, EACCES for a
 * 401 or 403, else EIO, with the registry's own error code if it sent one. */
int reg_http_err(struct registry *r, const struct resp *p, const char *what, qsnap_error *err);
/* A transfer that failed below HTTP, with a hint at the likely cause. */
int reg_net_err(struct registry *r, CURLcode rc, const char *errbuf, const char *what,
		qsnap_error *err);

/* ---- the Authorization (registry_token.c) ---- */

/* The registry said 401 (challenge www) to a request made with
 * generation gen of our Authorization: answer it, unless another thread
 * did already. */
int reg_reauth(struct registry *r, CURL *c, unsigned gen, const char *www, qsnap_error *err);

/* ---- the exchange every call makes (registry.c) ---- */

/* An upload Location as a URL (registry_upload.c): a path on the
 * registry, or an absolute URL (storage behind it, which gets no
 * credentials: reg_request), never plain HTTP after HTTPS. */
int reg_upload_url(struct registry *r, const char *loc, char **ret, qsnap_error *err);
/* Is url on the registry's own origin (scheme, host and port)? */
bool reg_own_url(struct registry *r, const char *url);
/* One request with our Authorization (to our own origin only: elsewhere
 * none, and a 401 from there is not answered), answering one or two 401s. Returns
 * 0 with the status in p (which the caller judges), or a network error. */
int reg_request(struct registry *r, CURL *c, const struct req *q, struct resp *p,
		const char *what, qsnap_error *err);

#endif
