/* SPDX-License-Identifier: MIT */
/* Unit tests of the planners, pure functions of the VM's state: which
 * layers a delete leaves unneeded (src/lib/vmdir/chain.c), which layers a
 * compaction merges or flattens (the same), and QEMU's command line
 * (src/lib/qemu/argv.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ops/ops.h"

/* A chain for drive d: "1 2 3" adds layers/d-1.qcow2 on d's base image,
 * d-2 on d-1 and d-3 on d-2; the first number's backing is below (NULL:
 * the base image). */
static void add_chain(struct state *st, const char *drive, const char *below, const char *seqs)
{
	_cleanup_free_ char *copy = xstrdup(seqs), *prev = xstrdup_or_null(below);
	char *save = NULL;

	for (char *n = strtok_r(copy, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
		char *path = xasprintf("layers/%s-%s.qcow2", drive, n);

		state_add_layer(st, path, drive, prev);
		free(prev);
		prev = path;
	}
}

static char *layer(const char *drive, int seq)
{
	return xasprintf("layers/%s-%d.qcow2", drive, seq);
}

static void set_active(struct state *st, const char *drive, int seq)
{
	_cleanup_free_ char *l = layer(drive, seq);

	state_set_active(st, drive, l);
}

/* A snapshot whose drive d is frozen at layer d-seq. */
static void add_snapshot(struct state *st, const char *name, const char *drive, int seq)
{
	struct snapshot *s;

	st->snapshots = xrealloc(st->snapshots, (st->n_snapshots + 1) * sizeof(*st->snapshots));
	s = &st->snapshots[st->n_snapshots++];
	*s = (struct snapshot){.name = xstrdup(name), .dir = xasprintf("snapshots/%s", name),
			       .mode = QSNAP_RAM_STREAM, .n_drives = 1};
	s->drives = xcalloc(1, sizeof(*s->drives));
	s->drives[0] = (struct snap_drive){.drive = xstrdup(drive), .layer = layer(drive, seq)};
}

/* The strv as one string, "a b c" ("" for NULL). */
static char *joined(char **v)
{
	char *out = xstrdup("");

	for (char **p = v; p && *p; p++) {
		char *n = xasprintf("%s%s%s", out, *out ? " " : "", *p);
		free(out);
		out = n;
	}
	return out;
}

static void assert_unneeded(const struct state *st, const char *want)
{
	char **v = chain_unneeded(st);
	_cleanup_free_ char *got = joined(v);

	strv_free(v);
	assert_string_equal(got, want);
}

/* A tree: s1 at d-1; d-2, d-3 above it where s3 was saved; the guest went
 * back to s1 and runs on d-4. */
static void tree(struct state *st)
{
	*st = (struct state){0};
	add_chain(st, "d", NULL, "1 2 3");
	add_chain(st, "d", "layers/d-1.qcow2", "4");
	set_active(st, "d", 4);
	add_snapshot(st, "s1", "d", 1);
	add_snapshot(st, "s3", "d", 3);
}

static void test_delete_plan(void **ctx)
{
	struct state st;

	/* Everything is needed: by the live disk or a snapshot. */
	tree(&st);
	assert_unneeded(&st, "");
	/* Deleting s3 leaves its branch unneeded, and only that. */
	state_remove_snapshot(&st, "s3");
	assert_unneeded(&st, "layers/d-2.qcow2 layers/d-3.qcow2");
	state_free(&st);

	/* Deleting s1 frees nothing: the live disk reads through d-1. */
	tree(&st);
	state_remove_snapshot(&st, "s1");
	assert_unneeded(&st, "");
	/* With s3 gone too, only the live chain stays. */
	state_remove_snapshot(&st, "s3");
	assert_unneeded(&st, "layers/d-2.qcow2 layers/d-3.qcow2");
	state_free(&st);
}

static void test_delete_plan_two_drives(void **ctx)
{
	struct state st = {0};

	/* A snapshot names a layer of every drive: each drive's chain below
	 * it stays, each drive's branch goes with it. */
	add_chain(&st, "a", NULL, "1 2");
	add_chain(&st, "b", NULL, "3 4");
	add_chain(&st, "a", "layers/a-1.qcow2", "5");
	add_chain(&st, "b", "layers/b-3.qcow2", "6");
	set_active(&st, "a", 5);
	set_active(&st, "b", 6);
	add_snapshot(&st, "s", "a", 2);
	st.snapshots[0].drives = xrealloc(st.snapshots[0].drives, 2 * sizeof(struct snap_drive));
	st.snapshots[0].drives[1] = (struct snap_drive){.drive = xstrdup("b"), .layer = layer("b", 4)};
	st.snapshots[0].n_drives = 2;
	assert_unneeded(&st, "");
	state_remove_snapshot(&st, "s");
	assert_unneeded(&st, "layers/a-2.qcow2 layers/b-4.qcow2");
	state_free(&st);
}

static void test_compact_merge_plan(void **ctx)
{
	struct state st = {0};
	struct layer *child;

	/* s1 at d-1, the guest on d-3: d-2 is named by nothing and has one
	 * layer on top, so d-3 takes it in and reads from d-1 directly. */
	add_chain(&st, "d", NULL, "1 2 3");
	set_active(&st, "d", 3);
	add_snapshot(&st, "s1", "d", 1);
	child = chain_next_merge(&st);
	assert_non_null(child);
	assert_string_equal(child->path, "layers/d-3.qcow2");
	assert_string_equal(child->backing, "layers/d-2.qcow2");

	/* A snapshot at d-2 keeps it. */
	add_snapshot(&st, "s2", "d", 2);
	assert_null(chain_next_merge(&st));
	state_remove_snapshot(&st, "s2");

	/* Two layers on top (a branch): merging would copy it twice. */
	add_chain(&st, "d", "layers/d-2.qcow2", "4");
	add_snapshot(&st, "s4", "d", 4);
	assert_null(chain_next_merge(&st));
	state_free(&st);
}

static void test_compact_flatten_plan(void **ctx)
{
	struct state st = {0};
	char **v;
	_cleanup_free_ char *got = NULL;

	/* a: base + 5 layers = 6 images; b: base + 2. */
	add_chain(&st, "a", NULL, "1 2 3 4 5");
	add_chain(&st, "b", NULL, "6 7");
	set_active(&st, "a", 5);
	set_active(&st, "b", 7);
	assert_int_equal(chain_length(&st, "layers/a-5.qcow2"), 6);
	v = chain_too_long(&st, 6);
	assert_null(v);
	v = chain_too_long(&st, 5);
	got = joined(v);
	strv_free(v);
	assert_string_equal(got, "layers/a-5.qcow2");
	free(got);
	v = chain_too_long(&st, 2);
	got = joined(v);
	strv_free(v);
	assert_string_equal(got, "layers/a-5.qcow2 layers/b-7.qcow2");
	state_free(&st);
}

/* ---- QEMU's command line ---- */

/* The index of the argument equal to s, or -1. */
static int find_arg(char **argv, const char *s)
{
	for (int i = 0; argv[i]; i++)
		if (!strcmp(argv[i], s))
			return i;
	return -1;
}

/* opt follows a flag somewhere on the command line. */
static void assert_option(char **argv, const char *flag, const char *value)
{
	for (int i = 0; argv[i] && argv[i + 1]; i++)
		if (!strcmp(argv[i], flag) && !strcmp(argv[i + 1], value))
			return;
	fail_msg("no \"%s %s\" on the command line", flag, value);
}

static void test_argv(void **ctx)
{
	qsnap_drive_def drives[] = {
		{.id = "vda", .path = "/img/a,b.qcow2", .format = "qcow2", .iface = QSNAP_IF_VIRTIO},
		{.id = "cd", .path = "/img/cd.raw", .format = "raw", .iface = QSNAP_IF_IDE,
		 .readonly = true},
		{.id = "sda", .path = "/img/s.raw", .format = "raw", .iface = QSNAP_IF_SCSI},
		{.id = "sdb", .path = "/img/t.raw", .format = "raw", .iface = QSNAP_IF_SCSI},
	};
	char *extra[] = {"-device", "virtio-rng-pci"};
	qsnap_def def = {.accel = "kvm:tcg", .smp = 2, .memory = 512ull << 20, .serial = true,
			 .n_drives = 4, .drives = drives, .n_extra = 2, .extra = extra};
	const char *a_layers[] = {"layers/vda-1.qcow2", "layers/vda-2.qcow2"};
	const char *s_layers[] = {"layers/sda-3.qcow2"}, *t_layers[] = {"layers/sdb-4.qcow2"};
	struct qemu_chain chains[] = {{a_layers, 2}, {NULL, 0}, {s_layers, 1}, {t_layers, 1}};
	struct qemu_cmd c = {.def = &def, .chains = chains, .machine = "pc-i440fx-7.2",
			     .qmp_socket = "run/qmp.sock", .pid_file = "run/qemu.pid",
			     .incoming = true, .ram_file = "/dev/shm/q,snap/ram", .ram_share = true};
	char **argv = qemu_argv(&c);
	int n = 0;

	assert_string_equal(argv[0], "qemu-system-x86_64");
	assert_option(argv, "-accel", "kvm");
	assert_option(argv, "-accel", "tcg");
	assert_option(argv, "-machine", "pc-i440fx-7.2,memory-backend=ram0");
	assert_option(argv, "-smp", "2");
	assert_option(argv, "-m", "512M");
	/* Commas in paths are doubled inside option lists. */
	assert_option(argv, "-object",
		      "memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/q,,snap/ram,share=on");
	assert_option(argv, "-qmp", "unix:run/qmp.sock,server=on,wait=off");
	assert_option(argv, "-pidfile", "run/qemu.pid");
	assert_option(argv, "-chardev", "socket,id=serial0,fd=" QEMU_CONSOLE_FD_STR);
	/* The chain: base read-only, lower layers read-only, the top writable. */
	assert_option(argv, "-blockdev",
		      "driver=qcow2,node-name=base0,read-only=on,file.driver=file,"
		      "file.filename=/img/a,,b.qcow2");
	assert_option(argv, "-blockdev",
		      "driver=qcow2,node-name=n1,read-only=on,file.driver=file,"
		      "file.filename=layers/vda-1.qcow2,backing=base0");
	assert_option(argv, "-blockdev",
		      "driver=qcow2,node-name=n2,file.driver=file,"
		      "file.filename=layers/vda-2.qcow2,backing=n1");
	assert_option(argv, "-device", "virtio-blk-pci,drive=n2,id=vda");
	/* A read-only drive: its base image, no layer. */
	assert_option(argv, "-device", "ide-hd,drive=base1,id=cd");
	/* One SCSI controller for both SCSI disks. */
	assert_option(argv, "-device", "scsi-hd,drive=n3,id=sda");
	assert_option(argv, "-device", "scsi-hd,drive=n4,id=sdb");
	for (int i = 0; argv[i]; i++)
		n += !strcmp(argv[i], "virtio-scsi-pci,id=scsi0");
	assert_int_equal(n, 1);
	assert_true(find_arg(argv, "-S") > 0);
	assert_option(argv, "-incoming", "defer");
	/* vm.json's extra arguments come last, as given. */
	for (n = 0; argv[n]; n++)
		;
	assert_string_equal(argv[n - 2], "-device");
	assert_string_equal(argv[n - 1], "virtio-rng-pci");
	strv_free(argv);

	/* Inspecting a dump: every layer read-only; no machine type, no
	 * incoming, no console, anonymous RAM. */
	c = (struct qemu_cmd){.def = &def, .chains = chains, .qmp_socket = "q", .pid_file = "p",
			      .readonly_disks = true};
	def.serial = false;
	argv = qemu_argv(&c);
	assert_option(argv, "-machine", "memory-backend=ram0");
	assert_option(argv, "-object", "memory-backend-ram,id=ram0,size=512M");
	assert_option(argv, "-blockdev",
		      "driver=qcow2,node-name=n2,read-only=on,file.driver=file,"
		      "file.filename=layers/vda-2.qcow2,backing=n1");
	assert_int_equal(find_arg(argv, "-incoming"), -1);
	assert_int_equal(find_arg(argv, "-chardev"), -1);
	strv_free(argv);

	/* A restore on a host whose reads allocate: RAM allocated up front. */
	c.ram_prealloc = 2;
	argv = qemu_argv(&c);
	assert_option(argv, "-object",
		      "memory-backend-ram,id=ram0,size=512M,prealloc=on,prealloc-threads=2");
	strv_free(argv);
}

static void test_argv_pflash(void **ctx)
{
	qsnap_drive_def drives[] = {
		{.id = "code", .path = "/fw/code.fd", .format = "raw", .iface = QSNAP_IF_PFLASH,
		 .readonly = true},
		{.id = "vars", .path = "/fw/vars.fd", .format = "raw", .iface = QSNAP_IF_PFLASH},
	};
	qsnap_def def = {.accel = "tcg", .smp = 1, .memory = 1ull << 30, .n_drives = 2,
			 .drives = drives};
	const char *v_layers[] = {"layers/vars-7.qcow2"};
	struct qemu_chain chains[] = {{NULL, 0}, {v_layers, 1}};
	char **argv = qemu_argv(&(struct qemu_cmd){.def = &def, .chains = chains,
						   .machine = "q35", .qmp_socket = "q",
						   .pid_file = "p"});

	/* Flash is a machine property, not a -device: pflash0 the code, pflash1
	 * the vars' writable top layer. */
	assert_option(argv, "-machine", "q35,memory-backend=ram0,pflash0=base0,pflash1=n7");
	for (int i = 0; argv[i]; i++)
		assert_null(strstr(argv[i], "id=vars"));
	strv_free(argv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delete_plan),
		cmocka_unit_test(test_delete_plan_two_drives),
		cmocka_unit_test(test_compact_merge_plan),
		cmocka_unit_test(test_compact_flatten_plan),
		cmocka_unit_test(test_argv),
		cmocka_unit_test(test_argv_pflash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
