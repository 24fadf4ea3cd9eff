/* SPDX-License-Identifier: MIT */
/* Unit tests of how children start and are waited for (src/lib/base/child.c,
 * through run_program in src/lib/base/program.c), and of processes known by
 * pid and start time (src/lib/base/process.c), under a caller with a
 * hostile signal state: SIGCHLD ignored (the kernel reaps ordinary children
 * itself), a thread that reaps every child with waitpid(-1), SIGTERM and
 * SIGINT blocked, SIGHUP ignored, a handler on SIGUSR1. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"

static void on_usr1(int sig)
{
	(void)sig;
}

static int hostile(void **state)
{
	sigset_t block;

	signal(SIGCHLD, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, on_usr1);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);
	return 0;
}

/* What a program says, and its exit status. */
static int run(char *const argv[], char **out, int *status, qsnap_error *err)
{
	return run_program_ex(NULL, argv, &(struct run_opts){.ret_status = status}, out, err);
}

/* Exit codes arrive although the kernel reaps SIGCHLD children itself. */
static void test_exit_status_with_sigchld_ignored(void **state)
{
	qsnap_error err = {0};
	char *out = NULL;
	int status = -1;

	assert_int_equal(run((char *[]){"true", NULL}, &out, &status, &err), 0);
	assert_int_equal(status, 0);
	free(out);
	assert_int_equal(run((char *[]){"sh", "-c", "exit 3", NULL}, &out, &status, &err), 0);
	assert_int_equal(status, 3);
	free(out);
	/* Without ret_status a failure is an error with the program's words. */
	assert_true(run_program(NULL, (char *[]){"sh", "-c", "echo nope >&2; exit 1", NULL}, NULL,
				&err) < 0);
	assert_non_null(strstr(err.msg, "failed (exit 1): nope"));
}

static volatile int reaping = 1;

static void *reaper(void *arg)
{
	(void)arg;
	while (reaping)
		if (waitpid(-1, NULL, WNOHANG) <= 0)
			usleep(100);
	return NULL;
}

/* A thread of the caller that reaps every child cannot take ours. */
static void test_exit_status_with_a_reaper(void **state)
{
	qsnap_error err = {0};
	pthread_t t;

	signal(SIGCHLD, SIG_DFL);
	reaping = 1;
	assert_int_equal(pthread_create(&t, NULL, reaper, NULL), 0);
	for (int i = 0; i < 50; i++) {
		int status = -1;

		assert_int_equal(run((char *[]){"sh", "-c", "exit 7", NULL}, NULL, &status, &err), 0);
		assert_int_equal(status, 7);
	}
	reaping = 0;
	pthread_join(t, NULL);
	signal(SIGCHLD, SIG_IGN);
}

static unsigned long long field(const char *status, const char *name)
{
	const char *p = strstr(status, name);

	assert_non_null(p);
	return strtoull(p + strlen(name) + 1, NULL, 16);
}

/* The child starts with default dispositions and an empty mask. */
static void test_child_signal_state_is_clean(void **state)
{
	qsnap_error err = {0};
	char *out = NULL;

	if (run_program(NULL, (char *[]){"cat", "/proc/self/status", NULL}, &out, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(field(out, "SigBlk:"), 0);
	assert_int_equal(field(out, "SigIgn:"), 0);
	free(out);
}

/* An exec that fails says why (the errno through the close-on-exec pipe),
 * not "exit 127". */
static void test_exec_failure_says_why(void **state)
{
	char path[] = "/tmp/qsnap-test-child-XXXXXX";
	qsnap_error err = {0};
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\x7f" "ELF garbage", 12), 12);
	close(fd);
	chmod(path, 0700);
	assert_int_equal(run_program(NULL, (char *[]){path, NULL}, NULL, &err), -ENOEXEC);
	assert_non_null(strstr(err.msg, "cannot run"));
	assert_non_null(strstr(err.msg, strerror(ENOEXEC)));
	unlink(path);
}

/* A process of the test's own, known by pid and start time. */
static pid_t sleeper(const char *seconds, unsigned long long *start)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("sleep", "sleep", seconds, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !(*start = proc_start_time(pid)); i++)
		usleep(1000);
	assert_true(*start != 0);
	return pid;
}

/* proc_wait_gone ends when the process does (its pidfd turns readable),
 * not at the next poll; and gives up at the timeout. */
static void test_wait_gone(void **state)
{
	unsigned long long start;
	pid_t pid = sleeper("0.3", &start);
	int64_t t0 = now_ms();

	assert_int_equal(proc_wait_gone(pid, start, 50, -1), -ETIMEDOUT);
	assert_int_equal(proc_wait_gone(pid, start, 10000, -1), 0);
	assert_true(now_ms() - t0 < 5000);
	assert_false(proc_alive(pid, start));
}

/* A signal goes only to the process that began at that start time. */
static void test_signal_by_start_time(void **state)
{
	unsigned long long start;
	pid_t pid = sleeper("30", &start);

	assert_int_equal(proc_signal(pid, start + 1, SIGKILL), -ESRCH);
	assert_int_equal(proc_signal(pid, 0, SIGKILL), -ESRCH);
	assert_true(proc_alive(pid, start));
	assert_int_equal(proc_signal(pid, start, SIGKILL), 0);
	assert_int_equal(proc_wait_gone(pid, start, 10000, -1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exit_status_with_sigchld_ignored),
		cmocka_unit_test(test_exit_status_with_a_reaper),
		cmocka_unit_test(test_child_signal_state_is_clean),
		cmocka_unit_test(test_exec_failure_says_why),
		cmocka_unit_test(test_wait_gone),
		cmocka_unit_test(test_signal_by_start_time),
	};

	return cmocka_run_group_tests(tests, hostile, NULL);
}
