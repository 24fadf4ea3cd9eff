/* SPDX-License-Identifier: MIT */
/* What a vm.json from elsewhere may carry (vmdef_foreign): the paths of
 * the layout only, bounded sizes and names; qemu, ram_dir, extra_args,
 * serial_log_max and an unusual machine dropped unless trusted, and the
 * line that says so. And whose URLs get the registry's credentials. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ops/ops.h"
#include "registry/http.h"

#define DRIVE "\"drives\": [{\"id\": \"vda\", \"path\": \"images/vda.qcow2\", \"format\": \"qcow2\"}]"
#define BASE "{\"memory\": 268435456, \"kernel\": \"boot/kernel\", " DRIVE

static int foreign(const char *text, bool trust, const char *qemu, qsnap_def *def, char **note,
		   qsnap_error *err)
{
	struct foreign f = {.trust = trust, .qemu = qemu};

	return vmdef_foreign(text, "vm.json of X", &f, def, note, err);
}

static void test_plain_is_taken_silently(void **state)
{
	qsnap_def def;
	qsnap_error err = {0};
	char *note = NULL;

	(void)state;
	assert_int_equal(foreign(BASE ", \"machine\": \"q35\"}", false, NULL, &def, &note, &err), 0);
	assert_null(note);
	assert_string_equal(def.machine, "q35");
	assert_null(def.qemu);
	def_clear(&def);
	/* The user's QEMU, and the artifact's own when it is the same. */
	assert_int_equal(foreign(BASE ", \"qemu\": \"/bin/true\"}", false, "/bin/true", &def, &note, &err), 0);
	assert_null(note);
	assert_string_equal(def.qemu, "/bin/true");
	def_clear(&def);
	/* A --qemu that is not there. */
	assert_true(foreign(BASE "}", false, "/nonexistent/qemu", &def, &note, &err) < 0);
	assert_non_null(strstr(err.msg, "--qemu /nonexistent/qemu: no such program"));
}

static void test_what_runs_is_dropped(void **state)
{
	const char *text = BASE ", \"qemu\": \"/bin/sh\", \"ram_dir\": \"/root\", \"machine\": \"microvm\","
			   " \"serial_log_max\": 1099511627776,"
			   " \"extra_args\": [\"-chardev\", \"file,id=x,path=/etc/x\"]}";
	qsnap_def def;
	qsnap_error err = {0};
	char *note = NULL;

	(void)state;
	assert_int_equal(foreign(text, false, NULL, &def, &note, &err), 0);
	assert_null(def.qemu);
	assert_null(def.ram_dir);
	assert_null(def.machine);
	assert_int_equal(def.n_extra, 0);
	assert_int_equal(def.serial_log_max, 0);
	assert_non_null(strstr(note, "dropped from vm.json of X"));
	assert_non_null(strstr(note, "qemu /bin/sh"));
	assert_non_null(strstr(note, "ram_dir /root"));
	assert_non_null(strstr(note, "machine microvm"));
	assert_non_null(strstr(note, "extra_args [-chardev file,id=x,path=/etc/x]"));
	assert_non_null(strstr(note, "--trust-config"));
	assert_null(strchr(note, '\n'));
	free(note);
	def_clear(&def);
	/* Trusted: kept, and told as taken. */
	assert_int_equal(foreign(text, true, NULL, &def, &note, &err), 0);
	assert_string_equal(def.qemu, "/bin/sh");
	assert_string_equal(def.ram_dir, "/root");
	assert_string_equal(def.machine, "microvm");
	assert_int_equal(def.n_extra, 2);
	assert_non_null(strstr(note, "taken from vm.json of X (--trust-config)"));
	free(note);
	def_clear(&def);
	/* Trusted, but that QEMU is not here. */
	assert_true(foreign(BASE ", \"qemu\": \"/nonexistent/qemu\"}", true, NULL, &def, &note, &err) < 0);
	assert_non_null(strstr(err.msg, "which this host does not have"));
	assert_null(note);
}

static void refused(const char *text, const char *word)
{
	qsnap_def def;
	qsnap_error err = {0};
	char *note = NULL;

	for (int trust = 0; trust < 2; trust++) {
		assert_true(foreign(text, trust, NULL, &def, &note, &err) < 0);
		if (!strstr(err.msg, word))
			fail_msg("%s: %s", text, err.msg);
		assert_null(note);
	}
}

static void test_outside_the_layout_is_refused(void **state)
{
	(void)state;
	refused("{\"memory\": 268435456, \"drives\": [{\"id\": \"vda\", \"path\": \"/etc/shadow\", \"format\": \"raw\"}]}",
		"drive 'vda' is /etc/shadow");
	refused("{\"memory\": 268435456, \"drives\": [{\"id\": \"vda\", \"path\": \"images/vdb.qcow2\", \"format\": \"qcow2\"}]}",
		"names its drives images/vda.qcow2");
	refused("{\"memory\": 268435456, \"kernel\": \"/boot/vmlinuz\"}", "outside boot/");
	refused("{\"memory\": 268435456, \"kernel\": \"boot/kernel\", \"initrd\": \"boot/../x\"}", "outside boot/");
	refused(BASE ", \"memory\": 2199023255552}", "at most 1 TiB");
	refused(BASE ", \"accel\": \"kvm,kernel-irqchip=off\"}", "'accel'");
	refused(BASE ", \"cpu\": \"host;x\"}", "'cpu'");
}

static void test_meta(void **state)
{
	qsnap_def def;
	qsnap_error err = {0};
	char *note = NULL;
	json_object *m;

	(void)state;
	assert_int_equal(foreign(BASE "}", false, NULL, &def, &note, &err), 0);
	m = json_tokener_parse("{\"memory\": 268435456, \"machine\": \"pc-i440fx-7.2\"}");
	assert_int_equal(vmdef_foreign_meta(m, &def, "X", &err), 0);
	json_object_put(m);
	m = json_tokener_parse("{\"memory\": 268435456, \"machine\": \"pc,accel=kvm\"}");
	assert_true(vmdef_foreign_meta(m, &def, "X", &err) < 0);
	assert_non_null(strstr(err.msg, "not a machine type name"));
	json_object_put(m);
	m = json_tokener_parse("{\"memory\": 536870912}");
	assert_true(vmdef_foreign_meta(m, &def, "X", &err) < 0);
	assert_non_null(strstr(err.msg, "536870912 bytes of RAM"));
	json_object_put(m);
	assert_true(foreign_vmstate_max(def.memory) > def.memory);
	def_clear(&def);
}

static void test_own_origin(void **state)
{
	struct registry r = {.base = "https://reg.example:5000"};

	(void)state;
	assert_true(reg_own_url(&r, "https://reg.example:5000/v2/a/blobs/uploads/x?y"));
	assert_true(reg_own_url(&r, "HTTPS://REG.example:5000/v2/"));
	assert_false(reg_own_url(&r, "http://reg.example:5000/v2/"));
	assert_false(reg_own_url(&r, "https://reg.example:50001/v2/"));
	assert_false(reg_own_url(&r, "https://reg.example:5000@evil.example/v2/"));
	assert_false(reg_own_url(&r, "https://reg.example:5000.evil.example/v2/"));
	assert_false(reg_own_url(&r, "https://storage.example/upload"));
}

static void test_upload_url(void **state)
{
	struct registry r = {.base = "https://reg.example:5000", .ref = {.host = "reg.example:5000"}};
	qsnap_error err = {0};
	char *url = NULL;

	(void)state;
	assert_int_equal(reg_upload_url(&r, "/v2/a/blobs/uploads/u?s=1", &url, &err), 0);
	assert_string_equal(url, "https://reg.example:5000/v2/a/blobs/uploads/u?s=1");
	free(url);
	assert_int_equal(reg_upload_url(&r, "https://storage.example/u", &url, &err), 0);
	assert_string_equal(url, "https://storage.example/u");
	assert_false(reg_own_url(&r, url));
	free(url);
	url = NULL;
	assert_true(reg_upload_url(&r, "http://reg.example:5000/v2/a/blobs/uploads/u", &url, &err) < 0);
	assert_non_null(strstr(err.msg, "does not leave HTTPS"));
	assert_null(url);
	assert_true(reg_upload_url(&r, "HTTP://storage.example/u", &url, &err) < 0);
	r.base = "http://reg.example:5000"; /* --insecure: an http location is the registry's way */
	assert_int_equal(reg_upload_url(&r, "http://reg.example:5000/v2/u", &url, &err), 0);
	free(url);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_is_taken_silently),
		cmocka_unit_test(test_what_runs_is_dropped),
		cmocka_unit_test(test_outside_the_layout_is_refused),
		cmocka_unit_test(test_meta),
		cmocka_unit_test(test_own_origin),
		cmocka_unit_test(test_upload_url),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
