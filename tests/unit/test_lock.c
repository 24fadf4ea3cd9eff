/* SPDX-License-Identifier: MIT */
/* Unit tests of the waits (base/wait.c) and the VM's lock (vmdir/lock.c):
 * a waiter gets the lock as soon as the holder lets go (its close, or its
 * process's end, wakes it: no polling), gives up at its timeout, and ends
 * when its cancellation is raised. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/ops.h"

static char dir[] = "/tmp/qsnap-test-lock-XXXXXX";

static qsnap_vm handle(void)
{
	qsnap_vm vm = {.dir = dir, .lockfd = -1, .cancelfd = -1};

	vm.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(vm.dirfd >= 0);
	return vm;
}

static void drop(qsnap_vm *vm)
{
	closep(&vm->lockfd);
	closep(&vm->dirfd);
}

struct later {
	int fd;
	int ms;
	int64_t at; /* when it acted */
};

static void *close_later(void *arg)
{
	struct later *l = arg;

	sleep_ms(l->ms);
	l->at = now_ms();
	close(l->fd);
	return NULL;
}

static void *raise_later(void *arg)
{
	struct later *l = arg;

	sleep_ms(l->ms);
	l->at = now_ms();
	cancel_raise(l->fd);
	return NULL;
}

/* The holder closes: the waiter has the lock within a moment, far sooner
 * than the slow safety-net retry (2 s). */
static void test_lock_taken_when_holder_closes(void **state)
{
	qsnap_vm a = handle(), b = handle();
	qsnap_error err = {0};
	struct later l = {.ms = 300};
	pthread_t t;
	int64_t t0 = now_ms();

	assert_int_equal(vmdir_lock(&a, 5, &err), 0);
	l.fd = TAKE_FD(a.lockfd);
	assert_int_equal(pthread_create(&t, NULL, close_later, &l), 0);
	assert_int_equal(vmdir_lock(&b, 10, &err), 0);
	int64_t got = now_ms();
	pthread_join(t, NULL);
	assert_true(got - t0 >= 250);
	assert_true(got - l.at < 500);
	drop(&a);
	drop(&b);
}

/* A holder that is a process killed with SIGKILL lets go by ending. */
static void test_lock_taken_when_holder_dies(void **state)
{
	qsnap_vm b = handle();
	qsnap_error err = {0};
	int ready[2];
	char c;
	pid_t pid;

	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		qsnap_vm a = handle();

		if (vmdir_lock(&a, 5, &err) < 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	assert_int_equal(vmdir_lock(&b, 0, &err), -EBUSY);
	closep(&b.lockfd);
	kill(pid, SIGKILL);
	int64_t t0 = now_ms();
	assert_int_equal(vmdir_lock(&b, 10, &err), 0);
	assert_true(now_ms() - t0 < 1000);
	waitpid(pid, NULL, 0);
	drop(&b);
}

/* Busy: the timeout holds, and the error says what to do. */
static void test_lock_timeout(void **state)
{
	qsnap_vm a = handle(), b = handle();
	qsnap_error err = {0};
	int64_t t0;

	assert_int_equal(vmdir_lock(&a, 5, &err), 0);
	t0 = now_ms();
	assert_int_equal(vmdir_lock(&b, 1, &err), -EBUSY);
	assert_true(now_ms() - t0 >= 1000 && now_ms() - t0 < 2500);
	assert_non_null(strstr(err.msg, "--lock-timeout"));
	drop(&a);
	drop(&b);
}

/* A raised cancellation ends the wait for the lock. */
static void test_lock_wait_cancelled(void **state)
{
	qsnap_vm a = handle(), b = handle();
	qsnap_error err = {0};
	struct later l = {.ms = 300};
	pthread_t t;

	b.cancelfd = l.fd = cancel_new();
	assert_true(b.cancelfd >= 0);
	assert_int_equal(vmdir_lock(&a, 5, &err), 0);
	assert_int_equal(pthread_create(&t, NULL, raise_later, &l), 0);
	assert_int_equal(vmdir_lock(&b, 30, &err), -ECANCELED);
	assert_true(now_ms() - l.at < 500);
	pthread_join(t, NULL);
	closep(&b.cancelfd);
	drop(&a);
	drop(&b);
}

/* wait_fd: ready, deadline, cancellation (which wins a tie). */
static void test_wait_fd(void **state)
{
	int c = cancel_new(), p[2];
	int64_t t0 = now_ms();

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(wait_fd(p[0], POLLIN, c, now_ms() + 100), -ETIMEDOUT);
	assert_true(now_ms() - t0 >= 90);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(wait_fd(p[0], POLLIN, c, now_ms() + 100), 0);
	assert_false(cancel_raised(c));
	cancel_raise(c);
	assert_true(cancel_raised(c));
	assert_int_equal(wait_fd(p[0], POLLIN, c, 0), -ECANCELED);
	cancel_clear(c);
	assert_false(cancel_raised(c));
	assert_int_equal(wait_fd(-1, 0, -1, now_ms() + 10), -ETIMEDOUT);
	close(p[0]);
	close(p[1]);
	close(c);
}

static int setup(void **state)
{
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	rm_rf(AT_FDCWD, dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_fd),
		cmocka_unit_test(test_lock_taken_when_holder_closes),
		cmocka_unit_test(test_lock_taken_when_holder_dies),
		cmocka_unit_test(test_lock_timeout),
		cmocka_unit_test(test_lock_wait_cancelled),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
