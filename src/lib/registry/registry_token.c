/* SPDX-License-Identifier: MIT */
/* Answering a registry's 401: Basic with the credentials found
 * (registry_auth.c), or a Bearer token for our repository from the realm
 * the registry names. The Authorization in use is shared by the threads
 * and renewed under the registry's lock, once for all of them. */
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

static char *url_escape(CURL *c, const char *s)
{
	char *e = curl_fn.easy_escape(c, s, 0);
	char *out = xstrdup(e ? e : "");

	curl_fn.free(e);
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
	rc = reg_perform(r, c,
			 &(struct req){.method = "GET", .url = url, .follow = true, .auth = basic},
			 basic, &p, errbuf);
	if (basic)
		explicit_bzero(basic, strlen(basic));
	if (rc != CURLE_OK) {
		reg_resp_free(&p);
		return reg_net_err(r, rc, errbuf, "get a token", err);
	}
	if (p.status == 401 || p.status == 403) {
		reg_resp_free(&p);
		if (!r->creds.user)
			return qerr(err, EACCES, "registry %s needs credentials for %s: set QSNAP_REGISTRY_USER and QSNAP_REGISTRY_PASSWORD, or log in (docker/podman/skopeo login write ~/.docker/config.json)",
				    r->ref.host, r->ref.repo);
		return qerr(err, EACCES, "registry %s refused the credentials of user '%s' (from %s) for %s: check the user name and password",
			    r->ref.host, r->creds.user, creds_note(r), r->ref.repo);
	}
	if (p.status != 200) {
		int ret = reg_http_err(r, &p, "a token request", err);
		reg_resp_free(&p);
		return ret;
	}
	o = p.text ? json_tokener_parse(p.text) : NULL;
	tok = jstr(o, "token") ? jstr(o, "token") : jstr(o, "access_token");
	if (!tok || !*tok || strpbrk(tok, "\r\n")) {
		reg_resp_free(&p);
		return qerr(err, EPROTO, "the token server of registry %s sent no token", r->ref.host);
	}
	*ret_auth = xasprintf("Bearer %s", tok);
	reg_resp_free(&p);
	return 0;
}

int reg_reauth(struct registry *r, CURL *c, unsigned gen, const char *www, qsnap_error *err)
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
