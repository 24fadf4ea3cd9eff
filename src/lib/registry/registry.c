/* SPDX-License-Identifier: MIT */
/* An OCI distribution (registry v2) client on libcurl: opening one (the
 * reference parsed, the credentials found, the API checked), and the
 * request every call makes with the Authorization in use, tried again
 * after a dropped connection and after a 401 answered. Blobs, uploads,
 * manifests and parallel transfers have files of their own (registry_*.c). */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

bool reg_own_url(struct registry *r, const char *url)
{
	size_t n = strlen(r->base);

	/* scheme://host[:port] exactly, then the path: "http://h:5000@evil/"
	 * or "http://h:50000/" are not ours. */
	return !strncasecmp(url, r->base, n) && (url[n] == '/' || url[n] == '?' || !url[n]);
}

int reg_request(struct registry *r, CURL *c, const struct req *q, struct resp *p,
		const char *what, qsnap_error *err)
{
	/* Our Authorization goes to the registry's own scheme, host and port
	 * only: never to an upload Location elsewhere (nor a 401 from there
	 * answered with our credentials). */
	bool own = reg_own_url(r, q->url);
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
		auth = own ? xstrdup_or_null(r->auth) : NULL;
		pthread_mutex_unlock(&r->lock);
		rc = reg_perform(r, c, q, auth, p, errbuf);
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
			return reg_net_err(r, rc, errbuf, what, err);
		if (p->status != 401 || attempt >= 2 || !own)
			break;
		ret = reg_reauth(r, c, gen, p->www_auth, err);
		if (ret < 0)
			return ret;
	}
	if (p->status == 401 && !own)
		return qerr(err, EACCES, "%s for %s was sent to %s, which is not registry %s, and refused without credentials: qsnap sends credentials to the registry itself only",
			    what, r->ref.repo, q->url, r->ref.host);
	if (p->status == 401)
		return qerr(err, EACCES, "registry %s refused %s%s%s%s", r->ref.host, what,
			    r->creds.user ? " with the credentials of user '" : " without credentials",
			    r->creds.user ? r->creds.user : "", r->creds.user ? "'" : "");
	return 0;
}

int registry_open(const char *refstr, const char *default_tag, bool insecure, bool push,
		  struct registry **ret, qsnap_error *err)
{
	struct registry *r;
	struct resp p = {.max = MAX_ERROR_BODY};
	_cleanup_free_ char *url = NULL;
	reg_conn *c;
	int ret_r;

	r = xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	ret_r = reg_ref_parse(refstr, default_tag, &r->ref, err);
	if (ret_r >= 0 && push && r->ref.digest)
		ret_r = qerr(err, EINVAL, "'%s': a push names a tag, not a digest (the digest is the manifest's, known after the push)",
			     refstr);
	if (ret_r >= 0)
		ret_r = reg_creds_find(r->ref.host, &r->creds, err);
	if (ret_r >= 0)
		ret_r = reg_curl_load(err);
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
	ret_r = reg_request(r, c, &(struct req){.method = "GET", .url = url}, &p,
			    "the API check (GET /v2/)", err);
	if (ret_r >= 0 && p.status != 200)
		ret_r = qerr(err, EPROTO, "%s does not answer as an OCI registry (GET /v2/ answered HTTP %ld)",
			     r->ref.host, p.status);
	reg_resp_free(&p);
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
