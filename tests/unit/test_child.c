/* SPDX-License-Identifier: MIT */
/* Unit tests of how children start and are waited for (src/lib/base/child.c,
 * through run_program in src/lib/base/program.c), and of processes known by
 * pid and start time (src/lib/base/process.c), under a caller with a
 * hostile signal state: SIGCHLD ignored (the kernel reaps ordinary children
 * itself), a thread that reaps every child with waitpid(-1), SIGTERM and
 * SIGINT blocked, SIGHUP ignored, a handler on SIGUSR1. */
#include <errno.h>
#include <fcntl.h>
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

/* Everything a detached program said on the pipe at its fd 3, until
 * every copy of the pipe closed. */
static char *detached_output(const char *script, const char *prog, int *ret, qsnap_error *err)
{
	int p[2], devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* A descriptor of the caller's left open across exec. */
	int leak = open("/dev/zero", O_RDONLY);
	char *out = xstrdup(""), buf[4096];
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	assert_true(devnull >= 0 && leak >= 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	*ret = child_exec_detached(
		&(struct child_exec){.prog = prog,
				     .argv = (char *[]){"sh", "-c", (char *)script, NULL},
				     .envp = (char *[]){"ONLY=this", NULL},
				     .fds = (int[]){devnull, devnull, devnull, p[1]},
				     .n_fds = 4,
				     .umask = -1},
		&pid, err);
	close(p[1]);
	close(devnull);
	close(leak);
	while ((n = read(p[0], buf, sizeof(buf))) > 0) {
		out = xrealloc(out, len + (size_t)n + 1);
		memcpy(out + len, buf, (size_t)n);
		len += (size_t)n;
		out[len] = '\0';
	}
	close(p[0]);
	return out;
}

/* A detached program gets exactly the descriptors it is given, at their
 * numbers, the environment it is given, and a clean signal state (read by
 * grep, which the shell execs into: the shell itself blocks every signal
 * for a moment while it waits for a command it started). */
static void test_detached_gets_only_what_it_is_given(void **state)
{
	qsnap_error err = {0};
	int r;
	char *out = detached_output("exec >&3; i=0; while [ $i -lt 64 ]; do "
				    "[ -e /proc/$$/fd/$i ] && echo fd $i; i=$((i + 1)); done; "
				    "tr '\\0' ' ' < /proc/$$/environ; echo; exec grep -E '^Sig(Blk|Ign)' /proc/self/status",
				    "/bin/sh", &r, &err);

	if (r < 0)
		fail_msg("%s", err.msg);
	if (!strstr(out, "fd 0\nfd 1\nfd 2\nfd 3\nONLY=this \n"))
		fail_msg("not only the descriptors given: %s", out);
	assert_int_equal(field(out, "SigBlk:"), 0);
	assert_int_equal(field(out, "SigIgn:"), 0);
	free(out);
}

/* Its exec failure says why. */
static void test_detached_exec_failure_says_why(void **state)
{
	qsnap_error err = {0};
	int r;
	char *out = detached_output("true", "/nonexistent/qsnap-test", &r, &err);

	assert_int_equal(r, -ENOENT);
	assert_non_null(strstr(err.msg, "cannot run /nonexistent/qsnap-test"));
	free(out);
}

/* A helper program that is not there is an error naming where it was
 * looked for; one that cannot begin says why through its ready pipe. */
static void test_helper_errors(void **state)
{
	qsnap_error err = {0};
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int file = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	char *dir = helper_dir();
	pid_t pid;

	assert_true(devnull >= 0 && file >= 0);
	assert_true(helper_start((char *[]){"qsnap-nothing", NULL}, (char *[]){NULL},
				 (int[]){devnull, devnull, devnull}, 3, &pid, &err) < 0);
	assert_non_null(strstr(err.msg, dir));
	assert_non_null(strstr(err.msg, "qsnap-nothing"));
	assert_non_null(strstr(err.msg, "install"));
	/* The saver, given a file where the VM directory should be. */
	assert_int_equal(helper_start((char *[]){"qsnap-saver", "/vm", "name", NULL},
				      (char *[]){NULL}, (int[]){devnull, devnull, devnull, file, file},
				      5, &pid, &err),
			 -EBADF);
	assert_non_null(strstr(err.msg, "/vm: no VM directory was handed over"));
	/* Started by hand, without its descriptors: it never says it is
	 * ready. */
	assert_true(helper_start((char *[]){"qsnap-console", "serial.log", "100", NULL},
				 (char *[]){NULL}, (int[]){devnull, devnull, devnull}, 3, &pid,
				 &err) < 0);
	assert_non_null(strstr(err.msg, "ended before it was ready"));
	free(dir);
	close(devnull);
	close(file);
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
		cmocka_unit_test(test_detached_gets_only_what_it_is_given),
		cmocka_unit_test(test_detached_exec_failure_says_why),
		cmocka_unit_test(test_helper_errors),
		cmocka_unit_test(test_wait_gone),
		cmocka_unit_test(test_signal_by_start_time),
	};

	return cmocka_run_group_tests(tests, hostile, NULL);
}
