/* SPDX-License-Identifier: MIT */
/* Removing directory trees: rm_rf_detached leaves nothing behind in the
 * caller, neither names nor descriptors, however many big files there are. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/base.h"

/* Our open descriptors that name a deleted file. */
static int deleted_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char link[64], target[4096];
		ssize_t len;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		n += strstr(target, " (deleted)") != NULL;
	}
	closedir(d);
	return n;
}

static void make_file(int dirfd, const char *name, off_t size)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	/* Allocated, not sparse: the size on disk is what counts. */
	if (size)
		assert_int_equal(posix_fallocate(fd, 0, size), 0);
	else
		assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
}

static void test_rm_rf_detached(void **state)
{
	char tmpl[] = "/tmp/qsnap-test-files-XXXXXX";
	char *top = mkdtemp(tmpl);
	int topfd, dirfd, before;
	struct stat st;

	(void)state;
	assert_non_null(top);
	topfd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(topfd >= 0);
	assert_int_equal(mkdirat(topfd, "snap", 0755), 0);
	assert_int_equal(mkdirat(topfd, "snap/sub", 0755), 0);
	dirfd = openat(topfd, "snap", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dirfd >= 0);
	/* More big files than one child takes descriptors. */
	for (int i = 0; i < CHILD_MAX_FDS + 2; i++) {
		char name[32];

		snprintf(name, sizeof(name), "big.%d", i);
		make_file(dirfd, name, 64 << 20);
	}
	make_file(dirfd, "meta.json", 0);
	make_file(dirfd, "sub/small", 0);
	close(dirfd);
	before = deleted_fds();

	assert_int_equal(rm_rf_detached(topfd, "snap"), 0);
	assert_int_equal(fstatat(topfd, "snap", &st, 0), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(deleted_fds(), before);
	/* Missing is not an error. */
	assert_int_equal(rm_rf_detached(topfd, "snap"), 0);
	/* A single file goes as well. */
	make_file(topfd, "layer.qcow2", 64 << 20);
	assert_int_equal(rm_rf_detached(topfd, "layer.qcow2"), 0);
	assert_int_equal(fstatat(topfd, "layer.qcow2", &st, 0), -1);
	assert_int_equal(deleted_fds(), before);
	close(topfd);
	assert_int_equal(rmdir(top), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rm_rf_detached),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
