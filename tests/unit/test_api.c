/* SPDX-License-Identifier: MIT */
/* The API's growth rule (base/sized.c): a struct the caller hands in is
 * read only as far as its size says, the rest taken as zero; a bigger one
 * is refused when what this library does not know is set; a struct the
 * library fills is written only as far as its size says. And a definition
 * made, set and read by key (vmdir/vmdef_keys.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmdir/vmdir.h"

/* An older caller's qsnap_save_opts: the fields up to compress. */
struct old_save_opts {
	size_t size;
	bool replace;
	bool live;
	int compress;
};

/* A newer caller's: one field more at the end. */
struct new_save_opts {
	qsnap_save_opts o;
	int future;
};

static void test_in_older(void **state)
{
	struct old_save_opts old = {.size = sizeof(old), .live = true, .compress = 7};
	qsnap_save_opts o;
	qsnap_error err = {0};

	(void)state;
	memset(&o, 0xa5, sizeof(o));
	assert_int_equal(sized_in(&o, sizeof(o), &old, "qsnap_save_opts", &err), 0);
	assert_int_equal(o.size, sizeof(o));
	assert_true(o.live);
	assert_int_equal(o.compress, 7);
	/* What the old caller does not know is 0, the default. */
	assert_int_equal(o.timeout, 0);
	assert_null(o.progress);
	assert_null(o.stats);
}

static void test_in_newer(void **state)
{
	struct new_save_opts n = {.o = {.size = sizeof(n), .replace = true}};
	qsnap_save_opts o;
	qsnap_error err = {0};

	(void)state;
	assert_int_equal(sized_in(&o, sizeof(o), &n, "qsnap_save_opts", &err), 0);
	assert_true(o.replace);
	assert_int_equal(o.size, sizeof(o));
	n.future = 1;
	assert_int_equal(sized_in(&o, sizeof(o), &n, "qsnap_save_opts", &err), -E2BIG);
	assert_int_equal(err.code, E2BIG);
	assert_non_null(strstr(err.msg, "qsnap_save_opts"));
}

static void test_in_unset(void **state)
{
	qsnap_save_opts zero = {0}, o;
	qsnap_error err = {0};

	(void)state;
	assert_int_equal(sized_in(&o, sizeof(o), &zero, "qsnap_save_opts", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "sizeof(qsnap_save_opts)"));
	assert_int_equal(sized_in(&o, sizeof(o), NULL, "qsnap_save_opts", &err), 0);
	assert_int_equal(o.size, sizeof(o));
	assert_false(o.live);
	qsnap_save_opts init = QSNAP_SAVE_OPTS_INIT;
	assert_int_equal(init.size, sizeof(init));
}

static void test_out(void **state)
{
	qsnap_compact_stats full = {.size = sizeof(full), .merged = 3, .flattened = 2, .longest = 5};
	struct {
		size_t size;
		unsigned merged;
		unsigned canary;
	} old = {.size = offsetof(qsnap_compact_stats, flattened), .canary = 0xdead};
	struct {
		qsnap_compact_stats s;
		uint64_t future;
	} newer = {.s = {.size = sizeof(newer)}, .future = 42};
	qsnap_error err = {0};

	(void)state;
	sized_out(&old, &full, sizeof(full));
	assert_int_equal(old.size, offsetof(qsnap_compact_stats, flattened));
	assert_int_equal(old.merged, 3);
	assert_int_equal(old.canary, 0xdead); /* past its size: untouched */
	sized_out(&newer, &full, sizeof(full));
	assert_int_equal(newer.s.size, sizeof(newer));
	assert_int_equal(newer.s.longest, 5);
	assert_int_equal(newer.future, 0); /* unknown here: zero */
	sized_out(NULL, &full, sizeof(full));
	assert_int_equal(sized_check(&(qsnap_compact_stats){0}, "qsnap_compact_stats", &err), -EINVAL);
	assert_int_equal(sized_check(NULL, "qsnap_compact_stats", &err), 0);
}

static void test_def_keys(void **state)
{
	qsnap_def *def = qsnap_def_new();
	qsnap_error err = {0};
	char *v;

	(void)state;
	assert_non_null(def);
	assert_int_equal(qsnap_def_set(def, "memory", "512M", &err), 0);
	assert_int_equal(qsnap_def_get(def, "memory", &v, &err), 0);
	assert_string_equal(v, "536870912");
	qsnap_free(v);
	assert_int_equal(qsnap_def_set(def, "drive", "vda=/img.qcow2,format=qcow2", &err), 0);
	assert_int_equal(qsnap_def_set(def, "drive", "vdb=/ro.raw,readonly", &err), 0);
	assert_int_equal(qsnap_def_get(def, "drive", &v, &err), 0);
	assert_string_equal(v, "vda=/img.qcow2,format=qcow2,if=virtio\nvdb=/ro.raw,if=virtio,readonly");
	qsnap_free(v);
	assert_int_equal(qsnap_def_get(def, "kernel", &v, &err), 0);
	assert_null(v);
	assert_int_equal(qsnap_def_set(def, "kernel", "/boot/k", &err), 0);
	assert_int_equal(qsnap_def_get(def, "kernel", &v, &err), 0);
	assert_string_equal(v, "/boot/k");
	qsnap_free(v);
	assert_int_equal(qsnap_def_get(def, "accel", &v, &err), 0);
	assert_string_equal(v, "kvm:tcg");
	qsnap_free(v);
	assert_int_equal(qsnap_def_set(def, "extra", "-nodefaults", &err), 0);
	assert_int_equal(qsnap_def_set(def, "serial", "off", &err), 0);
	assert_false(def->serial);
	assert_int_equal(qsnap_def_set(def, "serial", "maybe", &err), -EINVAL);
	assert_int_equal(qsnap_def_set(def, "smp", "0", &err), -EINVAL);
	assert_int_equal(qsnap_def_set(def, "colour", "red", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "colour"));
	assert_int_equal(qsnap_def_set(def, "drive", NULL, &err), 0);
	assert_int_equal(def->n_drives, 0);
	/* The save settings: auto (unset) by default, words checked. */
	assert_int_equal(qsnap_def_get(def, "save-path", &v, &err), 0);
	assert_null(v);
	assert_int_equal(qsnap_def_set(def, "save-path", "mapped-ram", &err), 0);
	assert_int_equal(qsnap_def_get(def, "save-path", &v, &err), 0);
	assert_string_equal(v, "mapped-ram");
	qsnap_free(v);
	assert_int_equal(qsnap_def_set(def, "save-path", "fast", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "save-path"));
	assert_int_equal(qsnap_def_set(def, "multifd-channels", "8", &err), 0);
	assert_int_equal(qsnap_def_get(def, "multifd-channels", &v, &err), 0);
	assert_string_equal(v, "8");
	qsnap_free(v);
	assert_int_equal(qsnap_def_set(def, "multifd-channels", "65", &err), -EINVAL);
	assert_int_equal(qsnap_def_set(def, "multifd-channels", "2x", &err), -EINVAL);
	assert_int_equal(qsnap_def_set(def, "multifd-channels", "auto", &err), 0);
	assert_int_equal(qsnap_def_get(def, "multifd-channels", &v, &err), 0);
	assert_null(v);
	assert_int_equal(qsnap_def_set(def, "precopy", "off", &err), 0);
	assert_int_equal(qsnap_def_get(def, "precopy", &v, &err), 0);
	assert_string_equal(v, "off");
	qsnap_free(v);
	assert_int_equal(qsnap_def_set(def, "direct-io", "sometimes", &err), -EINVAL);
	assert_int_equal(qsnap_def_set(def, "precopy", NULL, &err), 0);
	assert_int_equal(qsnap_def_get(def, "precopy", &v, &err), 0);
	assert_null(v);
	qsnap_def_free(def);
	qsnap_def_free(NULL);
	assert_non_null(strchr(qsnap_version(), '.'));
	/* Every phase the library reports has its enum value. */
	const char *names[] = {"save",	"save RAM", "persist RAM", "restore", "restore RAM",
			       "dump",	"load dump", "publish",	    "verify",  "flatten vda",
			       "export", "import",   "digest",	    "check",   "upload",
			       "download"};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		assert_int_equal(qsnap_progress_phase(&(qsnap_progress){.phase = names[i]}),
				 QSNAP_PHASE_SAVE + (int)i);
	assert_int_equal(qsnap_progress_phase(&(qsnap_progress){.phase = "new"}), QSNAP_PHASE_OTHER);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_older), cmocka_unit_test(test_in_newer),
		cmocka_unit_test(test_in_unset), cmocka_unit_test(test_out),
		cmocka_unit_test(test_def_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
