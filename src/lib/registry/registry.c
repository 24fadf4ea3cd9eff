/* SPDX-License-Identifier: MIT */
/* An OCI distribution (registry v2) client on libcurl: blobs (HEAD, chunked
 * uploads that resume after a dropped connection, downloads checked against
 * their digest), manifests, and the registries' auth flows (anonymous,
 * Basic, Bearer tokens). One curl handle per thread; the Authorization in
 * use is shared and renewed under a lock. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vmdir/vmdir.h"
#include "registry/registry.h"

#define PIECE (16ULL << 20)	/* one PATCH of a chunked upload */
#define MAX_ERROR_BODY (64 << 10)
#define RETRIES 3

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

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

static void resp_headers_free(struct resp *p)
{
	free(p->location);
	free(p->www_auth);
	free(p->range);
	free(p->digest);
	p->location = p->www_auth = p->range = p->digest = NULL;
}

static void resp_free(struct resp *p)
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

	curl_easy_getinfo(p->c, CURLINFO_RESPONSE_CODE, &code);
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

static CURLcode perform(struct registry *r, CURL *c, const struct req *q, const char *auth,
			struct resp *p, char *errbuf)
{
	struct curl_slist *h = NULL;
	_cleanup_free_ char *ah = NULL, *ct = NULL, *acc = NULL, *cr = NULL;
	CURLcode rc;

	curl_easy_reset(c);
	p->c = c;
	p->status = 0;
	resp_free(p);
	errbuf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, q->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "qsnap");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	/* A stalled transfer fails instead of hanging: under 1 KB/s for 60 s. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, r->base[4] == 's' ? "https" : "http,https");
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, p);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
	/* libcurl sends no custom Authorization to another host after a
	 * redirect (blob storage behind the registry). */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, q->follow ? 1L : 0L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip per piece */
	if (auth) {
		ah = xasprintf("Authorization: %s", auth);
		h = curl_slist_append(h, ah);
	}
	if (q->content_type) {
		ct = xasprintf("Content-Type: %s", q->content_type);
		h = curl_slist_append(h, ct);
	}
	if (q->accept) {
		acc = xasprintf("Accept: %s", q->accept);
		h = curl_slist_append(h, acc);
	}
	if (q->content_range) {
		cr = xasprintf("Content-Range: %s", q->content_range);
		h = curl_slist_append(h, cr);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (!strcmp(q->method, "HEAD")) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(q->method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	} else if (!strcmp(q->method, "PUT") || !strcmp(q->method, "PATCH")) {
		static struct body empty = {.fd = -1};
		struct body *b = q->body ? q->body : &empty;

		b->pos = 0;
		b->err = 0;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, b);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)b->len);
	}
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
	curl_slist_free_all(h);
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

static int http_err(struct registry *r, const struct resp *p, const char *what, qsnap_error *err)
{
	_cleanup_free_ char *s = status_text(p);
	int code = p->status == 404 ? ENOENT : p->status == 401 || p->status == 403 ? EACCES : EIO;

	return qerr(err, code, "registry %s answered %s to %s", r->ref.host, s, what);
}

static int net_err(struct registry *r, CURLcode rc, const char *errbuf, const char *what,
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
		    errbuf[0] ? errbuf : curl_easy_strerror(rc), hint);
}

static char *url_escape(CURL *c, const char *s)
{
	char *e = curl_easy_escape(c, s, 0);
	char *out = xstrdup(e ? e : "");

	curl_free(e);
	return out;
}

static const char *creds_note(struct registry *r)
{
	return r->creds.source ? r->creds.source : "";
}

/* A token for our repository from the realm the registry named. */
static int fetch_token(struct registry *r, CURL *c, const struct reg_challenge *ch,
		       char **ret_auth, qsnap_error *err)
{
	_cleanup_free_ char *scope = xasprintf("repository:%s:%s", r->ref.repo,
					       r->push ? "pull,push" : "pull");
	_cleanup_free_ char *esc_scope = url_escape(c, scope), *esc_service = NULL, *url = NULL;
	_cleanup_free_ char *basic = NULL;
	_cleanup_json_ json_object *o = NULL;
	struct resp p = {.max = MAX_ERROR_BODY};
	char errbuf[CURL_ERROR_SIZE];
	const char *tok;
	CURLcode rc;

	if (!ch->realm || (strncmp(ch->realm, "https://", 8) &&
			   (strncmp(ch->realm, "http://", 7) || r->base[4] == 's')))
		return qerr(err, EACCES, "registry %s asks for a token from %s%s%s: only an https:// realm is used (http:// with --insecure)",
			    r->ref.host, ch->realm ? "'" : "no realm", ch->realm ? ch->realm : "",
			    ch->realm ? "'" : "");
	esc_service = ch->service ? url_escape(c, ch->service) : NULL;
	url = xasprintf("%s%sscope=%s%s%s", ch->realm, strchr(ch->realm, '?') ? "&" : "?", esc_scope,
			esc_service ? "&service=" : "", esc_service ? esc_service : "");
	if (r->creds.user) {
		_cleanup_free_ char *up = xasprintf("%s:%s", r->creds.user, r->creds.password);
		_cleanup_free_ char *b = base64_encode(up, strlen(up));

		basic = xasprintf("Basic %s", b);
		explicit_bzero(up, strlen(up));
		explicit_bzero(b, strlen(b));
	}
	rc = perform(r, c, &(struct req){.method = "GET", .url = url, .follow = true, .auth = basic},
		     basic, &p, errbuf);
	if (basic)
		explicit_bzero(basic, strlen(basic));
	if (rc != CURLE_OK) {
		resp_free(&p);
		return net_err(r, rc, errbuf, "get a token", err);
	}
	if (p.status == 401 || p.status == 403) {
		resp_free(&p);
		if (!r->creds.user)
			return qerr(err, EACCES, "registry %s needs credentials for %s: set QSNAP_REGISTRY_USER and QSNAP_REGISTRY_PASSWORD, or log in (docker/podman/skopeo login write ~/.docker/config.json)",
				    r->ref.host, r->ref.repo);
		return qerr(err, EACCES, "registry %s refused the credentials of user '%s' (from %s) for %s: check the user name and password",
			    r->ref.host, r->creds.user, creds_note(r), r->ref.repo);
	}
	if (p.status != 200) {
		int ret = http_err(r, &p, "a token request", err);
		resp_free(&p);
		return ret;
	}
	o = p.text ? json_tokener_parse(p.text) : NULL;
	tok = jstr(o, "token") ? jstr(o, "token") : jstr(o, "access_token");
	if (!tok || !*tok || strpbrk(tok, "\r\n")) {
		resp_free(&p);
		return qerr(err, EPROTO, "the token server of registry %s sent no token", r->ref.host);
	}
	*ret_auth = xasprintf("Bearer %s", tok);
	resp_free(&p);
	return 0;
}

/* The registry said 401 to a request made with generation gen of our
 * Authorization: answer its challenge, unless another thread did. */
static int reauth(struct registry *r, CURL *c, unsigned gen, const char *www, qsnap_error *err)
{
	struct reg_challenge ch = {0};
	char *auth = NULL;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (r->gen != gen)
		goto out;
	if (!www || reg_challenge_parse(www, &ch) < 0) {
		ret = qerr(err, EACCES, "registry %s refused access to %s and asks for no auth scheme qsnap knows (Basic, Bearer)",
			   r->ref.host, r->ref.repo);
		goto out;
	}
	if (!strcmp(ch.scheme, "basic")) {
		_cleanup_free_ char *up = NULL, *b = NULL;

		if (!r->creds.user) {
			ret = qerr(err, EACCES, "registry %s needs credentials for %s: set QSNAP_REGISTRY_USER and QSNAP_REGISTRY_PASSWORD, or log in (docker/podman/skopeo login write ~/.docker/config.json)",
				   r->ref.host, r->ref.repo);
			goto out;
		}
		if (r->auth && !strncmp(r->auth, "Basic ", 6)) {
			ret = qerr(err, EACCES, "registry %s refused the credentials of user '%s' (from %s) for %s: check the user name and password",
				   r->ref.host, r->creds.user, creds_note(r), r->ref.repo);
			goto out;
		}
		up = xasprintf("%s:%s", r->creds.user, r->creds.password);
		b = base64_encode(up, strlen(up));
		auth = xasprintf("Basic %s", b);
		explicit_bzero(up, strlen(up));
		explicit_bzero(b, strlen(b));
	} else {
		ret = fetch_token(r, c, &ch, &auth, err);
		if (ret < 0)
			goto out;
	}
	if (r->auth)
		explicit_bzero(r->auth, strlen(r->auth));
	free(r->auth);
	r->auth = TAKE_PTR(auth);
	r->gen++;
out:
	pthread_mutex_unlock(&r->lock);
	reg_challenge_free(&ch);
	return ret;
}

/* One request with our Authorization, answering one or two 401s. Returns
 * 0 with the status in p (which the caller judges), or a network error. */
static int request(struct registry *r, CURL *c, const struct req *q, struct resp *p,
		   const char *what, qsnap_error *err)
{
	char errbuf[CURL_ERROR_SIZE];
	/* Requests that carry and stream nothing are tried again after a
	 * dropped connection (a registry restarting); the pieces of an upload
	 * resume in reg_blob_upload_fd, a download fails. */
	bool again = !q->body && !p->sink;
	int lost = 0;

	for (int attempt = 0;; attempt++) {
		_cleanup_free_ char *auth = NULL;
		unsigned gen;
		CURLcode rc;
		int ret;

		pthread_mutex_lock(&r->lock);
		gen = r->gen;
		auth = xstrdup_or_null(r->auth);
		pthread_mutex_unlock(&r->lock);
		rc = perform(r, c, q, auth, p, errbuf);
		if (auth)
			explicit_bzero(auth, strlen(auth));
		if (rc == CURLE_WRITE_ERROR && p->sink_r < 0)
			return p->sink_r;
		if ((rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR) && q->body &&
		    q->body->err)
			return qerr(err, q->body->err, "cannot read what goes to registry %s: %s",
				    r->ref.host, strerror(q->body->err));
		if (again && lost < RETRIES &&
		    (rc == CURLE_COULDNT_CONNECT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
		     rc == CURLE_GOT_NOTHING)) {
			sleep_ms(500 * ++lost);
			attempt--;
			continue;
		}
		if (rc != CURLE_OK && !p->too_long)
			return net_err(r, rc, errbuf, what, err);
		if (p->status != 401 || attempt >= 2)
			break;
		ret = reauth(r, c, gen, p->www_auth, err);
		if (ret < 0)
			return ret;
	}
	if (p->status == 401)
		return qerr(err, EACCES, "registry %s refused %s%s%s%s", r->ref.host, what,
			    r->creds.user ? " with the credentials of user '" : " without credentials",
			    r->creds.user ? r->creds.user : "", r->creds.user ? "'" : "");
	return 0;
}

static char *resolve(struct registry *r, const char *loc)
{
	if (!strncmp(loc, "http://", 7) || !strncmp(loc, "https://", 8))
		return xstrdup(loc);
	return xasprintf("%s%s%s", r->base, loc[0] == '/' ? "" : "/", loc);
}

int registry_open(const char *refstr, const char *default_tag, bool insecure, bool push,
		  struct registry **ret, qsnap_error *err)
{
	struct registry *r;
	struct resp p = {.max = MAX_ERROR_BODY};
	_cleanup_free_ char *url = NULL;
	reg_conn *c;
	int ret_r;

	pthread_once(&curl_once, curl_init_once);
	r = xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	ret_r = reg_ref_parse(refstr, default_tag, &r->ref, err);
	if (ret_r >= 0)
		ret_r = reg_creds_find(r->ref.host, &r->creds, err);
	if (ret_r < 0) {
		registry_close(r);
		return ret_r;
	}
	r->base = xasprintf("%s://%s", insecure ? "http" : "https", r->ref.host);
	r->push = push;
	/* The API check first: it also answers the auth challenge once, before
	 * several threads would. */
	url = xasprintf("%s/v2/", r->base);
	c = reg_conn_new();
	ret_r = request(r, c, &(struct req){.method = "GET", .url = url}, &p, "the API check (GET /v2/)",
			err);
	if (ret_r >= 0 && p.status != 200)
		ret_r = qerr(err, EPROTO, "%s does not answer as an OCI registry (GET /v2/ answered HTTP %ld)",
			     r->ref.host, p.status);
	resp_free(&p);
	reg_conn_free(c);
	if (ret_r < 0) {
		registry_close(r);
		return ret_r;
	}
	*ret = r;
	return 0;
}

void registry_close(struct registry *r)
{
	if (!r)
		return;
	reg_ref_free(&r->ref);
	reg_creds_free(&r->creds);
	if (r->auth)
		explicit_bzero(r->auth, strlen(r->auth));
	free(r->auth);
	free(r->base);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

reg_conn *reg_conn_new(void)
{
	CURL *c;

	pthread_once(&curl_once, curl_init_once);
	c = curl_easy_init();
	if (!c)
		abort();
	return c;
}

void reg_conn_free(reg_conn *c)
{
	if (c)
		curl_easy_cleanup(c);
}

int reg_blob_exists(struct registry *r, reg_conn *c, const char *digest, bool *ret,
		    qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/blobs/%s", r->base, r->ref.repo, digest);
	_cleanup_free_ char *what = xasprintf("a check for blob %s", digest);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret_r;

	ret_r = request(r, c, &(struct req){.method = "HEAD", .url = url, .follow = true}, &p, what,
			err);
	if (ret_r >= 0 && p.status != 200 && p.status != 404)
		ret_r = http_err(r, &p, what, err);
	if (ret_r >= 0)
		*ret = p.status == 200;
	resp_free(&p);
	return ret_r;
}

/* Start an upload session: its URL. */
static int upload_start(struct registry *r, CURL *c, const char *what, char **ret_url,
			qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/blobs/uploads/", r->base, r->ref.repo);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = request(r, c, &(struct req){.method = "POST", .url = url}, &p, what, err);
	if (ret >= 0 && (p.status != 202 || !p.location))
		ret = p.status == 202 ? qerr(err, EPROTO, "registry %s started an upload without a Location",
					     r->ref.host)
				      : http_err(r, &p, what, err);
	if (ret >= 0)
		*ret_url = resolve(r, p.location);
	resp_free(&p);
	return ret;
}

static int upload_finish(struct registry *r, CURL *c, const char *url, const char *digest,
			 struct body *b, const char *what, qsnap_error *err)
{
	_cleanup_free_ char *put = xasprintf("%s%sdigest=%s", url, strchr(url, '?') ? "&" : "?", digest);
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = request(r, c,
		      &(struct req){.method = "PUT", .url = put, .body = b,
				    .content_type = "application/octet-stream"},
		      &p, what, err);
	if (ret >= 0 && p.status != 201)
		ret = http_err(r, &p, what, err);
	resp_free(&p);
	return ret;
}

/* Where the registry has the upload now (after a failed PATCH): the next
 * offset, or -ENOENT when it forgot the session. */
static int upload_offset(struct registry *r, CURL *c, char **url, uint64_t *ret_pos,
			 const char *what, qsnap_error *err)
{
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = request(r, c, &(struct req){.method = "GET", .url = *url}, &p, what, err);
	if (ret >= 0 && p.status == 404)
		ret = -ENOENT;
	else if (ret >= 0 && p.status != 204)
		ret = http_err(r, &p, what, err);
	if (ret >= 0) {
		unsigned long long a = 0, b = 0;

		*ret_pos = p.range && sscanf(p.range, "%llu-%llu", &a, &b) == 2 ? b + 1 : 0;
		if (p.location) {
			free(*url);
			*url = resolve(r, p.location);
		}
	}
	resp_free(&p);
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
			ret = request(r, c,
				      &(struct req){.method = "PATCH", .url = url, .body = &b,
						    .content_type = "application/octet-stream",
						    .content_range = range},
				      &p, what, err);
			if (ret >= 0 && p.status == 202 && p.location) {
				free(url);
				url = resolve(r, p.location);
				pos += piece;
				resp_free(&p);
				continue;
			}
			if (ret >= 0)
				ret = http_err(r, &p, what, err);
			resp_free(&p);
			if (ret == -EACCES || b.err)
				return ret;
			goto failed;
		}
		ret = upload_finish(r, c, url, digest, NULL, what, err);
		if (ret >= 0 || ret == -EACCES)
			return ret;
	failed:
		if (ret == -EACCES || tries++ >= RETRIES)
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
	ret = request(r, c, &(struct req){.method = "GET", .url = url, .follow = true}, &p, what, err);
	if (ret >= 0 && p.status == 404)
		ret = qerr(err, ENOENT, "blob %s is missing from registry %s (%s)", digest, r->ref.host,
			   r->ref.repo);
	else if (ret >= 0 && p.status != 200)
		ret = http_err(r, &p, what, err);
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
	resp_free(&p);
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

int reg_manifest_put(struct registry *r, reg_conn *c, const char *media_type, const char *json,
		     qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/manifests/%s", r->base, r->ref.repo, r->ref.tag);
	struct body b = {.mem = json, .fd = -1, .len = strlen(json)};
	struct resp p = {.max = MAX_ERROR_BODY};
	int ret;

	ret = request(r, c,
		      &(struct req){.method = "PUT", .url = url, .body = &b, .content_type = media_type},
		      &p, "the manifest upload", err);
	if (ret >= 0 && p.status != 201)
		ret = http_err(r, &p, "the manifest upload", err);
	resp_free(&p);
	return ret;
}

int reg_manifest_get(struct registry *r, reg_conn *c, const char *accept, char **ret_json,
		     char ret_digest[DIGEST_LEN + 1], qsnap_error *err)
{
	_cleanup_free_ char *url = xasprintf("%s/v2/%s/manifests/%s", r->base, r->ref.repo, r->ref.tag);
	struct resp p = {.max = OCI_MAX_SMALL_BLOB};
	int ret;

	ret = request(r, c, &(struct req){.method = "GET", .url = url, .accept = accept, .follow = true},
		      &p, "the manifest request", err);
	if (ret >= 0 && p.status == 404)
		ret = qerr(err, ENOENT, "%s/%s:%s is not in the registry (no such tag or repository)",
			   r->ref.host, r->ref.repo, r->ref.tag);
	else if (ret >= 0 && p.status != 200)
		ret = http_err(r, &p, "the manifest request", err);
	else if (ret >= 0 && (p.too_long || !p.text))
		ret = qerr(err, EINVAL, "the manifest of %s/%s:%s is %s", r->ref.host, r->ref.repo,
			   r->ref.tag, p.too_long ? "too large" : "empty");
	if (ret >= 0) {
		sha256_buf(p.text, p.len, ret_digest);
		if (p.digest && strcmp(p.digest, ret_digest))
			ret = qerr(err, EIO, "the manifest of %s/%s:%s does not match the digest the registry gives for it (%s)",
				   r->ref.host, r->ref.repo, r->ref.tag, p.digest);
	}
	if (ret >= 0)
		*ret_json = TAKE_PTR(p.text);
	resp_free(&p);
	return ret;
}

/* ---- a few transfers at a time ---- */

struct pool {
	struct registry *r;
	size_t n, next, running;
	reg_job fn;
	void *ud;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool failed;
	qsnap_error err;
};

static void *worker(void *arg)
{
	struct pool *pl = arg;
	reg_conn *c = reg_conn_new();

	for (;;) {
		qsnap_error e = {0};
		size_t i;
		int r;

		pthread_mutex_lock(&pl->lock);
		if (pl->failed || pl->next >= pl->n) {
			pthread_mutex_unlock(&pl->lock);
			break;
		}
		i = pl->next++;
		pthread_mutex_unlock(&pl->lock);
		r = pl->fn(pl->r, c, i, pl->ud, &e);
		if (r < 0) {
			pthread_mutex_lock(&pl->lock);
			if (!pl->failed) {
				pl->failed = true;
				pl->err = e;
				if (!pl->err.code)
					pl->err.code = -r;
			}
			pthread_mutex_unlock(&pl->lock);
		}
	}
	reg_conn_free(c);
	pthread_mutex_lock(&pl->lock);
	pl->running--;
	pthread_cond_signal(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	return NULL;
}

int reg_parallel(struct registry *r, size_t n, unsigned threads, reg_job fn, void *ud,
		 void (*tick)(void *ud), qsnap_error *err)
{
	struct pool pl = {.r = r, .n = n, .fn = fn, .ud = ud};
	pthread_t *tids;
	size_t started = 0;

	if (!n)
		return 0;
	if (threads > n)
		threads = (unsigned)n;
	pthread_mutex_init(&pl.lock, NULL);
	pthread_cond_init(&pl.cond, NULL);
	tids = xcalloc(threads, sizeof(*tids));
	pthread_mutex_lock(&pl.lock);
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&tids[i], NULL, worker, &pl) != 0)
			break;
		started++;
		pl.running++;
	}
	while (pl.running > 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&pl.cond, &pl.lock, &ts);
		if (tick) {
			pthread_mutex_unlock(&pl.lock);
			tick(ud);
			pthread_mutex_lock(&pl.lock);
		}
	}
	pthread_mutex_unlock(&pl.lock);
	for (size_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	pthread_mutex_destroy(&pl.lock);
	pthread_cond_destroy(&pl.cond);
	if (!started)
		return qerr(err, EAGAIN, "cannot start a transfer thread");
	if (pl.failed) {
		*err = pl.err;
		return -pl.err.code;
	}
	return 0;
}
