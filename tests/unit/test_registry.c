/* SPDX-License-Identifier: MIT */
/* The registry client's parsers: references, WWW-Authenticate challenges,
 * the Docker config's credentials, base64, sha256. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ops/ops.h"
#include "registry/registry.h"

static void ref_ok(const char *s, const char *dflt, const char *host, const char *repo,
		   const char *tag)
{
	struct reg_ref r = {0};
	qsnap_error err = {0};

	assert_int_equal(reg_ref_parse(s, dflt, &r, &err), 0);
	assert_string_equal(r.host, host);
	assert_string_equal(r.repo, repo);
	assert_string_equal(r.tag, tag);
	reg_ref_free(&r);
}

static void ref_bad(const char *s, const char *word)
{
	struct reg_ref r = {0};
	qsnap_error err = {0};

	assert_true(reg_ref_parse(s, "latest", &r, &err) < 0);
	assert_non_null(strstr(err.msg, word));
	assert_null(r.host);
}

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_refs(void **state)
{
	(void)state;
	ref_ok("localhost:5000/vms/web:booted", "x", "localhost:5000", "vms/web", "booted");
	ref_ok("registry.example.com/a/b/c", "S1", "registry.example.com", "a/b/c", "S1");
	ref_ok("127.0.0.1:5123/x", "latest", "127.0.0.1:5123", "x", "latest");
	ref_ok("h.example/a.b_c__d-e", "t", "h.example", "a.b_c__d-e", "t");
	ref_ok("localhost/x", "t", "localhost", "x", "t");
	ref_bad("vms", "not a registry reference");
	ref_bad("/vms", "not a registry reference");
	ref_bad("host:port/vms", "not a registry host");
	ref_bad("vms/web:booted", "does not start with a registry host");
	ref_bad("host:5000/VMs", "not a repository name");
	ref_bad("host:5000/vms/", "not a repository name");
	ref_bad("host:5000/a..b", "not a repository name");
	ref_bad("host:5000/vms:.bad", "not a tag");
	ref_bad("host:5000/vms:", "not a tag");
	ref_bad("host:5000/vms@sha256:00", "digest");
	ref_bad("host:5000/vms@md5:0123456789abcdef0123456789abcdef", "digest");
	ref_bad("host:5000/vms:t@sha256:" D64, "not both");
	{
		struct reg_ref r = {0};
		qsnap_error err = {0};

		assert_int_equal(reg_ref_parse("h:1/a/b@sha256:" D64, "latest", &r, &err), 0);
		assert_string_equal(r.repo, "a/b");
		assert_string_equal(r.digest, "sha256:" D64);
		assert_string_equal(r.tag, "sha256:" D64);
		reg_ref_free(&r);
		assert_int_equal(reg_ref_parse("h:1/a:t", "latest", &r, &err), 0);
		assert_null(r.digest);
		reg_ref_free(&r);
	}
	ref_bad("h:1/a@sha256:" D64 "0", "digest");
	ref_bad("h:1/a@sha256:" "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789", "digest");
}

static void test_challenges(void **state)
{
	struct reg_challenge c = {0};

	(void)state;
	assert_int_equal(reg_challenge_parse("Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\"", &c), 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "https://auth.example/token");
	assert_string_equal(c.service, "registry.example");
	assert_string_equal(c.scope, "repository:a/b:pull,push");
	reg_challenge_free(&c);
	assert_int_equal(reg_challenge_parse("Basic realm=\"a \\\"q\\\" b\"", &c), 0);
	assert_string_equal(c.scheme, "basic");
	assert_string_equal(c.realm, "a \"q\" b");
	assert_null(c.service);
	reg_challenge_free(&c);
	assert_int_equal(reg_challenge_parse("bearer realm=https://x/t, service=s", &c), 0);
	assert_string_equal(c.realm, "https://x/t");
	assert_string_equal(c.service, "s");
	reg_challenge_free(&c);
	assert_int_equal(reg_challenge_parse("Negotiate abc", &c), -EINVAL);
	assert_int_equal(reg_challenge_parse("Digest realm=\"x\"", &c), -ENOTSUP);
	assert_int_equal(reg_challenge_parse("Bearer realm=\"unterminated", &c), -EINVAL);
	assert_int_equal(reg_challenge_parse("", &c), -EINVAL);
}

static void test_docker_config(void **state)
{
	struct reg_creds c = {0};
	qsnap_error err = {0};
	/* alice:pa:ss */
	const char *cfg = "{\"auths\": {\"https://other:5000/v1/\": {\"auth\": \"eDp5\"},"
			  " \"http://reg.example:5000\": {\"auth\": \"YWxpY2U6cGE6c3M=\"}}}";

	(void)state;
	assert_int_equal(reg_creds_from_docker_config(cfg, "config.json", "reg.example:5000", &c, &err), 0);
	assert_string_equal(c.user, "alice");
	assert_string_equal(c.password, "pa:ss");
	reg_creds_free(&c);
	assert_int_equal(reg_creds_from_docker_config(cfg, "config.json", "nowhere", &c, &err), 0);
	assert_null(c.user);
	assert_true(reg_creds_from_docker_config("{\"auths\": {\"h\": {\"auth\": \"!!\"}}}",
						 "config.json", "h", &c, &err) < 0);
	assert_non_null(strstr(err.msg, "not base64"));
	assert_true(reg_creds_from_docker_config("nope", "config.json", "h", &c, &err) < 0);
	assert_non_null(strstr(err.msg, "not valid JSON"));
}

static void test_base64_sha256(void **state)
{
	char d[DIGEST_LEN + 1];
	char *e = base64_encode("user:pw", 7), *back;
	size_t n;

	(void)state;
	assert_string_equal(e, "dXNlcjpwdw==");
	back = base64_decode(e, &n);
	assert_int_equal(n, 7);
	assert_string_equal(back, "user:pw");
	free(e);
	free(back);
	assert_null(base64_decode("abc", NULL));
	sha256_buf("", 0, d);
	assert_string_equal(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_true(digest_valid(d));
	assert_false(digest_valid("sha256:E3B0"));
	assert_false(digest_valid("md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_challenges),
		cmocka_unit_test(test_docker_config),
		cmocka_unit_test(test_base64_sha256),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
