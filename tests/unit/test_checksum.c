/* SPDX-License-Identifier: MIT */
/* Checksums: the form they are written in, and hashing a file while
 * another thread still appends to it (as QEMU's migration does). */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/ops.h"

static void test_valid(void **state)
{
	struct hasher h;
	char *sum;

	(void)state;
	hasher_init(&h);
	hasher_update(&h, "qsnap", 5);
	sum = hasher_final(&h);
	assert_true(checksum_valid(sum));
	assert_int_equal(strlen(sum), strlen(CHECKSUM_PREFIX) + 32);
	free(sum);
	assert_false(checksum_valid(NULL));
	assert_false(checksum_valid("xxh3-128:"));
	assert_false(checksum_valid("xxh3-128:0123456789abcdef0123456789ABCDEF"));
	assert_false(checksum_valid("sha256:0123456789abcdef0123456789abcdef"));
	assert_true(checksum_valid("xxh3-128:0123456789abcdef0123456789abcdef"));
}

struct writer {
	int fd;
	size_t chunks;
};

static void *write_slowly(void *userdata)
{
	struct writer *w = userdata;
	char buf[65536];

	for (size_t i = 0; i < w->chunks; i++) {
		for (size_t j = 0; j < sizeof(buf); j++)
			buf[j] = (char)(i * 31 + j * 7);
		/* no cmocka asserts off the test's thread */
		if (write(w->fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			abort();
		if (i % 16 == 0)
			usleep(2000);
	}
	return NULL;
}

static int temp_file(void)
{
	char path[] = "/tmp/qsnap-test-checksum-XXXXXX";
	int fd = mkostemp(path, O_CLOEXEC);

	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

static void test_follow_growing_file(void **state)
{
	struct writer w = {.fd = temp_file(), .chunks = 160};
	struct checksum_follow *f;
	qsnap_error err = {0};
	char *followed = NULL, *whole = NULL;
	pthread_t t;

	(void)state;
	f = checksum_follow_start(w.fd);
	assert_int_equal(pthread_create(&t, NULL, write_slowly, &w), 0);
	pthread_join(t, NULL);
	assert_int_equal(checksum_follow_finish(f, "test file", &followed, &err), 0);
	assert_int_equal(checksum_fd(w.fd, "test file", &whole, &err), 0);
	assert_string_equal(followed, whole);
	free(followed);
	free(whole);
	close(w.fd);
}

static void test_follow_cancel(void **state)
{
	int fd = temp_file();

	(void)state;
	checksum_follow_cancel(checksum_follow_start(fd));
	checksum_follow_cancel(NULL);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_follow_growing_file),
		cmocka_unit_test(test_follow_cancel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
