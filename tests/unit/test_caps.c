/* SPDX-License-Identifier: MIT */
/* The capability parser (src/lib/qemu/caps.c) against the real replies of
 * the installed QEMUs: the system's (qemu-system-x86_64 on PATH, 7.2 on
 * Debian 12) and QEMU 10 (build/qemu10, scripts/qemu10; meson passes
 * where it may be in QSNAP_QEMU10). Each starts with "-machine none -qmp
 * stdio" on one end of a socket pair, in well under a second. A QEMU that
 * is not installed is a skipped case, named as such, never a pass.
 *
 * What is expected follows from the version QEMU reports, by the QEMU
 * release that added or removed each feature, so that a third QEMU can be
 * tested the same way. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "qemu/qemu.h"

#define OPEN_TIMEOUT_MS 20000

/* The QEMU a case started and has not waited for; the teardown ends it
 * when a failed check left the case early. */
static pid_t running;

static int end_qemu(void **state)
{
	if (running > 0) {
		kill(running, SIGKILL);
		waitpid(running, NULL, 0);
		running = 0;
	}
	return 0;
}

struct real_qemu {
	pid_t pid;
	struct qmp *q;
};

/* The binary named by path (a PATH lookup without a slash), or NULL. */
static const char *find_binary(const char *path)
{
	static char found[4096];
	const char *dirs;

	if (!path || !*path)
		return NULL;
	if (strchr(path, '/'))
		return access(path, X_OK) == 0 ? path : NULL;
	dirs = getenv("PATH");
	for (const char *d = dirs; d && *d;) {
		size_t n = strcspn(d, ":");

		snprintf(found, sizeof(found), "%.*s/%s", (int)n, d, path);
		if (access(found, X_OK) == 0)
			return found;
		d += n + (d[n] == ':');
	}
	return NULL;
}

static int start_qemu(const char *bin, struct real_qemu *rq)
{
	qsnap_error err = {0};
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rq->pid = fork();
	assert_true(rq->pid >= 0);
	if (rq->pid == 0) {
		/* A failed check leaves the case by longjmp: QEMU (which does
		 * not end when its QMP stdio closes) ends with the test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(sv[1], 0);
		dup2(sv[1], 1);
		execl(bin, bin, "-machine", "none", "-nodefaults", "-display", "none", "-qmp",
		      "stdio", (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	running = rq->pid;
	if (qmp_open_fd_take(sv[0], OPEN_TIMEOUT_MS, &rq->q, &err) < 0)
		fail_msg("%s: %s", bin, err.msg);
	return 0;
}

static void stop_qemu(struct real_qemu *rq)
{
	qsnap_error err = {0};
	int status = 0;

	/* quit may lose its reply to the end of the connection. */
	(void)qmp_execute(rq->q, "quit", NULL, NULL, 5000, &err);
	qmp_free(rq->q);
	assert_int_equal(waitpid(rq->pid, &status, 0), rq->pid);
	running = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* "QEMU emulator version 7.2.22 (Debian ...)" -> major, minor, micro. */
static void version_of(const char *bin, int *major, int *minor, int *micro)
{
	char cmd[4200], line[512] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "'%s' --version", bin);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	assert_int_equal(sscanf(line, "QEMU emulator version %d.%d.%d", major, minor, micro), 3);
}

#define AT_LEAST(maj, min) (major > (maj) || (major == (maj) && minor >= (min)))

static void check_qemu(const char *bin)
{
	struct real_qemu rq;
	qsnap_error err = {0};
	struct qemu_caps *c;
	char want[64];
	_cleanup_free_ char *pc = NULL, *q35 = NULL, *kept = NULL;
	int major, minor, micro;

	version_of(bin, &major, &minor, &micro);
	start_qemu(bin, &rq);
	if (caps_learn(rq.q, &err) < 0)
		fail_msg("%s: %s", bin, err.msg);
	c = qmp_caps(rq.q);
	assert_true(c->known);
	assert_int_equal(c->major, major);
	assert_int_equal(c->minor, minor);
	assert_int_equal(c->micro, micro);
	snprintf(want, sizeof(want), "%d.%d.%d", major, minor, micro);
	assert_string_equal(caps_version(rq.q), want);

	/* Migration capabilities: a list of {capability, state}. */
	assert_true(caps_migrate_cap(rq.q, "events"));
	assert_true(caps_migrate_cap(rq.q, "x-ignore-shared"));
	assert_true(caps_migrate_cap(rq.q, "multifd"));
	assert_int_equal(caps_migrate_cap(rq.q, "background-snapshot"), AT_LEAST(6, 0));
	assert_int_equal(caps_migrate_cap(rq.q, "mapped-ram"), AT_LEAST(9, 0));
	/* 9.1 removed the compress capability. */
	assert_int_equal(caps_migrate_cap(rq.q, "compress"), !AT_LEAST(9, 1));
	assert_false(caps_migrate_cap(rq.q, "no-such-capability"));
	assert_false(caps_migrate_cap(rq.q, "capability"));
	/* Migration parameters: one object whose keys are the names. */
	assert_true(caps_migrate_param(rq.q, "max-bandwidth"));
	assert_true(caps_migrate_param(rq.q, "multifd-channels"));
	assert_int_equal(caps_migrate_param(rq.q, "direct-io"), AT_LEAST(9, 1));
	assert_false(caps_migrate_param(rq.q, "no-such-parameter"));
	/* Commands: a list of {name}. */
	assert_true(caps_command(rq.q, "query-migrate"));
	assert_true(caps_command(rq.q, "migrate-incoming"));
	assert_true(caps_command(rq.q, "blockdev-snapshot"));
	assert_true(caps_command(rq.q, "getfd"));
	assert_true(caps_command(rq.q, "add-fd"));
	assert_true(caps_command(rq.q, "query-fdsets"));
	assert_true(caps_command(rq.q, "query-named-block-nodes"));
	assert_int_equal(caps_command(rq.q, "query-yank"), AT_LEAST(6, 0));
	assert_false(caps_command(rq.q, "no-such-command"));
	assert_false(caps_command(rq.q, "name"));
	/* The file: transport goes with mapped-ram (9.0). */
	assert_int_equal(caps_file_uri(rq.q), AT_LEAST(9, 0));

	/* Machine types: the default and an alias resolve to this version's
	 * versioned types; a versioned name is kept as given. */
	snprintf(want, sizeof(want), "pc-i440fx-%d.%d", major, minor);
	assert_int_equal(caps_resolve_machine(rq.q, NULL, &pc, &err), 0);
	assert_string_equal(pc, want);
	snprintf(want, sizeof(want), "pc-q35-%d.%d", major, minor);
	assert_int_equal(caps_resolve_machine(rq.q, "q35", &q35, &err), 0);
	assert_string_equal(q35, want);
	assert_int_equal(caps_resolve_machine(rq.q, "pc-i440fx-2.12", &kept, &err), 0);
	assert_string_equal(kept, "pc-i440fx-2.12");
	stop_qemu(&rq);
}

static void test_system_qemu(void **state)
{
	const char *bin = find_binary("qemu-system-x86_64");

	if (!bin)
		skip();
	check_qemu(bin);
}

static void test_qemu10(void **state)
{
	/* QSNAP_QEMU10: where it may be, ':'-separated; the first there. */
	char *list = getenv("QSNAP_QEMU10") ? strdup(getenv("QSNAP_QEMU10")) : NULL;
	const char *bin = NULL;
	char *save = NULL;

	for (char *p = list ? strtok_r(list, ":", &save) : NULL; p && !bin;
	     p = strtok_r(NULL, ":", &save))
		bin = find_binary(p);
	if (!bin) {
		free(list);
		skip();
	}
	check_qemu(bin);
	free(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_system_qemu, end_qemu),
		cmocka_unit_test_teardown(test_qemu10, end_qemu),
	};

	/* A QEMU that ends early must not end the test with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
