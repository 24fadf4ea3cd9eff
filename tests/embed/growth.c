/* SPDX-License-Identifier: MIT */
/* The growth rule of qsnap.h, as programs built against other versions of
 * the header see it (tests/integration/test_embed.py builds this three
 * times: against the installed qsnap.h, against a copy with the last field
 * of qsnap_compact_stats and of qsnap_verify_opts taken out (a program
 * built before they were added), and with -DGROWTH_NEWER against a copy
 * with a field "future" added to both (a program built for a later
 * libqsnap). Each runs against the installed library.
 * Usage: growth VMDIR BASE-IMAGE KERNEL
 * Prints one line per check; exits 0 when every check held. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qsnap.h>

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "growth: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void ok(int r, const char *what, const qsnap_error *err)
{
	if (r < 0)
		die("%s failed (%d): %s", what, r, err->msg);
	printf("ok %s\n", what);
}

int main(int argc, char **argv)
{
	qsnap_error err = {0};
	qsnap_def *def = qsnap_def_new();
	qsnap_vm *vm;
	char spec[4096];
	/* The library must not write past the size the program gave. */
	struct {
		qsnap_compact_stats s;
		unsigned canary;
	} cs = {.s = QSNAP_COMPACT_STATS_INIT, .canary = 0xfeedu};
	qsnap_verify_opts vo = QSNAP_VERIFY_OPTS_INIT;
	qsnap_verify_report *rep;
	int r;

	if (argc != 4)
		die("usage: growth VMDIR BASE-IMAGE KERNEL");
	printf("ok sizeof(qsnap_compact_stats) %zu, sizeof(qsnap_verify_opts) %zu, libqsnap %s\n",
	       sizeof(qsnap_compact_stats), sizeof(qsnap_verify_opts), qsnap_version());
	snprintf(spec, sizeof(spec), "vda=%s", argv[2]);
	if (!def)
		die("qsnap_def_new: out of memory");
	ok(qsnap_def_set(def, "drive", spec, &err), "qsnap_def_set drive", &err);
	ok(qsnap_def_set(def, "kernel", argv[3], &err), "qsnap_def_set kernel", &err);
	ok(qsnap_vm_create(argv[1], def, &err), "qsnap_vm_create", &err);
	qsnap_def_free(def);
	ok(qsnap_vm_open(argv[1], 0, 0, &vm, &err), "qsnap_vm_open", &err);

#ifdef GROWTH_NEWER
	/* Filled: what the library does not know comes back zero. */
	cs.s.future = 77;
	ok(qsnap_vm_compact(vm, 0, &cs.s, &err), "qsnap_vm_compact", &err);
	if (cs.s.future != 0)
		die("qsnap_vm_compact left the unknown field at %d, not 0", cs.s.future);
	/* Read: unknown and 0 is fine; unknown and set is refused. */
	vo.future = 0;
	ok(qsnap_vm_verify(vm, NULL, &vo, &rep, &err), "qsnap_vm_verify, unknown field 0", &err);
	qsnap_verify_report_free(rep);
	vo.future = 1;
	r = qsnap_vm_verify(vm, NULL, &vo, &rep, &err);
	if (r != -E2BIG)
		die("qsnap_vm_verify with an unknown field set returned %d, not -E2BIG", r);
	printf("ok refused: %s\n", err.msg);
#else
	ok(qsnap_vm_compact(vm, 0, &cs.s, &err), "qsnap_vm_compact", &err);
	ok(qsnap_vm_verify(vm, NULL, &vo, &rep, &err), "qsnap_vm_verify", &err);
	if (rep->n_snapshots != 0 || rep->n_problems != 0)
		die("verify of a new VM: %zu snapshots, %zu problems", rep->n_snapshots,
		    rep->n_problems);
	qsnap_verify_report_free(rep);
#endif
	if (cs.canary != 0xfeedu)
		die("qsnap_vm_compact wrote past qsnap_compact_stats.size (%zu): canary %#x",
		    cs.s.size, cs.canary);
	if (cs.s.size != sizeof(cs.s))
		die("qsnap_vm_compact changed the size field to %zu", cs.s.size);
	printf("ok qsnap_compact_stats: merged %u, the bytes past it untouched\n", cs.s.merged);
	/* A size left 0 is a mistake the library names. */
	r = qsnap_vm_compact(vm, 0, &(qsnap_compact_stats){0}, &err);
	if (r != -EINVAL || !strstr(err.msg, "size"))
		die("qsnap_vm_compact with size 0 returned %d (%s)", r, err.msg);
	qsnap_vm_close(vm);
	printf("growth: all checks passed\n");
	return 0;
}
