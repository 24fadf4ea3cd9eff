/* SPDX-License-Identifier: MIT */
/* Registry references: host[:port]/repository[:tag] or
 * host[:port]/repository@sha256:<hex>, with the grammar of
 * the distribution spec (repository components in lowercase, tags of at
 * most 128 characters). */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"
#include "registry/registry.h"

static bool host_valid(const char *h)
{
	const char *colon = strrchr(h, ':');
	size_t n = colon ? (size_t)(colon - h) : strlen(h);

	if (!n || n > 253 || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != n)
		return false;
	if (h[0] == '-' || h[0] == '.')
		return false;
	if (colon) {
		size_t d = strlen(colon + 1);

		if (d < 1 || d > 5 || strspn(colon + 1, "0123456789") != d)
			return false;
	}
	return true;
}

/* [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)* */
static bool repo_valid(const char *r)
{
	size_t len = strlen(r);

	if (!len || len > 255)
		return false;
	for (const char *p = r; *p;) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (!n || !isalnum((unsigned char)p[0]) || !isalnum((unsigned char)p[n - 1]))
			return false;
		for (size_t i = 0; i < n; i++) {
			char c = p[i];

			if (isupper((unsigned char)c))
				return false;
			if (isalnum((unsigned char)c) || c == '-')
				continue;
			if (c == '.' && isalnum((unsigned char)p[i + 1]))
				continue;
			if (c == '_' && (isalnum((unsigned char)p[i + 1]) ||
					 (p[i + 1] == '_' && isalnum((unsigned char)p[i + 2]) &&
					  (i == 0 || p[i - 1] != '_'))))
				continue;
			return false;
		}
		p += n;
		if (*p == '/') {
			p++;
			if (!*p)
				return false;
		}
	}
	return true;
}

bool reg_tag_valid(const char *t)
{
	size_t n = t ? strlen(t) : 0;

	if (!n || n > 128 || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
		return false;
	return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int reg_ref_parse(const char *s, const char *default_tag, struct reg_ref *ret, qsnap_error *err)
{
	const char *slash = s ? strchr(s, '/') : NULL;
	_cleanup_free_ char *host = NULL, *rest = NULL;
	char *colon, *tag = NULL, *at, *digest = NULL;

	if (!slash || slash == s)
		return qerr(err, EINVAL, "'%s' is not a registry reference: write host[:port]/repository[:tag], e.g. localhost:5000/vms/web:booted",
			    s ? s : "");
	host = strndup(s, (size_t)(slash - s));
	rest = xstrdup(slash + 1);
	if (!host)
		abort();
	if (!host_valid(host))
		return qerr(err, EINVAL, "'%s' in '%s' is not a registry host: write host[:port], e.g. localhost:5000",
			    host, s);
	/* As docker has it: a first component without '.' or ':' is a
	 * repository of Docker Hub, which qsnap does not guess. */
	if (!strpbrk(host, ".:") && strcmp(host, "localhost"))
		return qerr(err, EINVAL, "'%s' does not start with a registry host: write host[:port]/repository[:tag], e.g. localhost:5000/%s",
			    s, s);
	if ((at = strchr(rest, '@'))) {
		*at = '\0';
		digest = at + 1;
		if (strncmp(digest, "sha256:", 7) || strlen(digest) != DIGEST_LEN ||
		    strspn(digest + 7, "0123456789abcdef") != DIGEST_LEN - 7)
			return qerr(err, EINVAL, "'%s': a reference by digest ends in @sha256: and 64 lowercase hex digits",
				    s);
	}
	colon = strrchr(rest, ':');
	if (colon && !strchr(colon, '/')) {
		*colon = '\0';
		tag = colon + 1;
	}
	if (!repo_valid(rest))
		return qerr(err, EINVAL, "'%s' in '%s' is not a repository name: lowercase letters, digits and . _ - in components separated by /",
			    rest, s);
	if (digest && tag)
		return qerr(err, EINVAL, "'%s': name a tag or a digest, not both", s);
	if (!tag)
		tag = (char *)default_tag;
	if (!reg_tag_valid(tag))
		return qerr(err, EINVAL, "'%s' in '%s' is not a tag: letters, digits, '.', '_' and '-', at most 128 characters, not starting with '.' or '-'",
			    tag ? tag : "", s);
	ret->host = TAKE_PTR(host);
	/* The manifest's URL takes the digest where the tag would be. */
	ret->tag = xstrdup(digest ? digest : tag);
	ret->digest = xstrdup_or_null(digest);
	ret->repo = TAKE_PTR(rest);
	return 0;
}

void reg_ref_free(struct reg_ref *r)
{
	free(r->host);
	free(r->repo);
	free(r->tag);
	free(r->digest);
	r->host = r->repo = r->tag = r->digest = NULL;
}
