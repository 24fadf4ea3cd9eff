/* SPDX-License-Identifier: MIT */
/* Registry credentials and challenges. Credentials come from
 * QSNAP_REGISTRY_USER/QSNAP_REGISTRY_PASSWORD or from the Docker-style
 * config.json that docker, podman and skopeo log in with; they are kept in
 * memory only, sent only in Authorization headers, never printed. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/registry.h"

char *base64_encode(const void *data, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

char *base64_decode(const char *s, size_t *ret_len)
{
	size_t n = strlen(s), pad = 0;
	unsigned char *out;
	int r;

	if (n % 4 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != n)
		return NULL;
	while (pad < n && pad < 2 && s[n - 1 - pad] == '=')
		pad++;
	out = xmalloc(n / 4 * 3 + 1);
	r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	if (r < 0 || (size_t)r < pad) {
		free(out);
		return NULL;
	}
	out[r - (int)pad] = '\0';
	if (ret_len)
		*ret_len = (size_t)r - pad;
	return (char *)out;
}

void reg_creds_free(struct reg_creds *c)
{
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	free(c->user);
	free(c->password);
	c->user = c->password = NULL;
}

/* "https://host:port/v1/" -> "host:port" */
static char *auths_key_host(const char *key)
{
	const char *p = strstr(key, "://");
	size_t n;

	p = p ? p + 3 : key;
	n = strcspn(p, "/");
	return strndup(p, n);
}

int reg_creds_from_docker_config(const char *text, const char *what, const char *host,
				 struct reg_creds *ret, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_tokener_parse(text);
	json_object *auths = jobj(o, "auths");

	if (!o || !json_object_is_type(o, json_type_object))
		return qerr(err, EINVAL, "%s is not valid JSON: fix it, or set QSNAP_REGISTRY_USER and QSNAP_REGISTRY_PASSWORD",
			    what);
	if (!auths)
		return 0;
	json_object_object_foreach(auths, key, val)
	{
		_cleanup_free_ char *h = auths_key_host(key);
		const char *auth = jstr(val, "auth");
		_cleanup_free_ char *plain = NULL;
		char *colon;

		if (!h || strcmp(h, host))
			continue;
		if (!auth) {
			if (jstr(val, "username") && jstr(val, "password")) {
				ret->user = xstrdup(jstr(val, "username"));
				ret->password = xstrdup(jstr(val, "password"));
				ret->source = "the Docker config";
				return 0;
			}
			continue;
		}
		plain = base64_decode(auth, NULL);
		if (!plain || !(colon = strchr(plain, ':'))) {
			if (plain)
				explicit_bzero(plain, strlen(plain));
			return qerr(err, EINVAL, "%s: the \"auth\" of %s is not base64 of user:password: log in again",
				    what, key);
		}
		*colon = '\0';
		ret->user = xstrdup(plain);
		ret->password = xstrdup(colon + 1);
		explicit_bzero(colon + 1, strlen(colon + 1));
		ret->source = "the Docker config";
		return 0;
	}
	return 0;
}

int reg_creds_find(const char *host, struct reg_creds *ret, qsnap_error *err)
{
	const char *user = getenv("QSNAP_REGISTRY_USER"), *pw = getenv("QSNAP_REGISTRY_PASSWORD");
	const char *dc = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
	_cleanup_free_ char *path = NULL, *text = NULL;
	int r;

	if (user && *user) {
		if (!pw)
			return qerr(err, EINVAL, "QSNAP_REGISTRY_USER is set but QSNAP_REGISTRY_PASSWORD is not: set both");
		ret->user = xstrdup(user);
		ret->password = xstrdup(pw);
		ret->source = "QSNAP_REGISTRY_USER/QSNAP_REGISTRY_PASSWORD";
		return 0;
	}
	if (dc && *dc)
		path = xasprintf("%s/config.json", dc);
	else if (home && *home)
		path = xasprintf("%s/.docker/config.json", home);
	else
		return 0;
	r = read_file(AT_FDCWD, path, &text, NULL, err);
	if (r == -ENOENT) {
		*err = (qsnap_error){0};
		return 0;
	}
	if (r < 0)
		return r;
	r = reg_creds_from_docker_config(text, path, host, ret, err);
	explicit_bzero(text, strlen(text));
	return r;
}

void reg_challenge_free(struct reg_challenge *c)
{
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	*c = (struct reg_challenge){0};
}

/* Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"
 * (RFC 7235: auth-params, values a token or a quoted string). */
int reg_challenge_parse(const char *h, struct reg_challenge *ret)
{
	struct reg_challenge c = {0};
	const char *p = h;
	size_t n;

	while (*p == ' ' || *p == '\t')
		p++;
	n = strcspn(p, " \t");
	if (!n)
		return -EINVAL;
	c.scheme = strndup(p, n);
	for (char *s = c.scheme; *s; s++)
		*s = (char)tolower((unsigned char)*s);
	p += n;
	for (;;) {
		_cleanup_free_ char *key = NULL;
		char *val;
		size_t len = 0;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p || *p == '\r' || *p == '\n')
			break;
		n = strcspn(p, "= \t,");
		if (!n || p[n] != '=') {
			reg_challenge_free(&c);
			return -EINVAL;
		}
		key = strndup(p, n);
		p += n + 1;
		val = xmalloc(strlen(p) + 1);
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1])
					p++;
				val[len++] = *p;
			}
			if (*p != '"') {
				free(val);
				reg_challenge_free(&c);
				return -EINVAL;
			}
			p++;
		} else {
			while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '\r')
				val[len++] = *p++;
		}
		val[len] = '\0';
		if (!strcasecmp(key, "realm") && !c.realm)
			c.realm = val;
		else if (!strcasecmp(key, "service") && !c.service)
			c.service = val;
		else if (!strcasecmp(key, "scope") && !c.scope)
			c.scope = val;
		else
			free(val);
	}
	if (strcmp(c.scheme, "basic") && strcmp(c.scheme, "bearer")) {
		reg_challenge_free(&c);
		return -ENOTSUP;
	}
	*ret = c;
	return 0;
}
