/* SPDX-License-Identifier: MIT */
/* pagemap_reads_allocate answers as this host's kernel behaves: reading
 * 64 MiB of untouched memory, advised for huge pages as QEMU advises
 * guest RAM, makes it resident exactly where the probe says reads
 * allocate. Of a file mapped copy-on-write, pagemap_written names the
 * pages written and pagemap_read reads what the process sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/pagemap.h"

#define LEN (64UL << 20)

static long rss_anon_kib(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long kib = -1;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
			break;
	fclose(f);
	assert_true(kib >= 0);
	return kib;
}

static void test_reads_allocate(void **state)
{
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile unsigned long sum = 0;
	long before, grew;
	bool probe = pagemap_reads_allocate();

	(void)state;
	assert_true(p != MAP_FAILED);
	madvise(p, LEN, MADV_HUGEPAGE);
	before = rss_anon_kib();
	for (size_t i = 0; i < LEN; i += 4096)
		sum += ((volatile char *)p)[i];
	grew = rss_anon_kib() - before;
	assert_int_equal(sum, 0);
	printf("reading %lu MiB made %ld KiB resident; the probe says reads %s\n", LEN >> 20, grew,
	       probe ? "allocate" : "do not allocate");
	/* Half of it either way: other allocations of this process in
	 * between cannot tip it. */
	assert_int_equal(probe, grew > (long)(LEN >> 11));
	assert_int_equal(pagemap_reads_allocate(), probe); /* asked once, kept */
	munmap(p, LEN);
}

/* A file of 8 pages, page i filled with i + 1, mapped copy-on-write by
 * this process, which writes pages 2 and 5 and reads page 3. */
static void test_written_and_read(void **state)
{
	char path[] = "/tmp/qsnap-test-pagemapXXXXXX";
	int fd = mkstemp(path);
	uint8_t page[4096], got[4 * 4096];
	struct pagemap *pm;
	qsnap_error err;
	volatile uint8_t *p;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	for (int i = 0; i < 8; i++) {
		memset(page, i + 1, sizeof(page));
		assert_int_equal(write(fd, page, sizeof(page)), (ssize_t)sizeof(page));
	}
	p = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	assert_true(p != MAP_FAILED);
	p[2 * 4096] = 0xee;
	p[5 * 4096 + 100] = 0xee;
	assert_int_equal(p[3 * 4096], 4);
	assert_true(pagemap_readable(getpid()));
	assert_int_equal(pagemap_open(getpid(), fd, &pm, &err), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(pagemap_written(pm, (uint64_t)i * 4096), i == 2 || i == 5);
	assert_int_equal(pagemap_errors(pm), 0);
	assert_int_equal(pagemap_read(pm, 2 * 4096, got, sizeof(got), &err), 0);
	assert_int_equal(got[0], 0xee);
	assert_int_equal(got[1], 3);
	assert_int_equal(got[4096], 4);
	assert_int_equal(got[2 * 4096], 5);
	assert_int_equal(got[3 * 4096 + 100], 0xee);
	assert_int_equal(got[3 * 4096 + 101], 6);
	/* Past the mapping: an error that says so, not a short read. */
	assert_int_not_equal(pagemap_read(pm, 7 * 4096, got, 2 * 4096, &err), 0);
	assert_non_null(strstr(err.msg, "no longer maps"));
	pagemap_close(pm);
	munmap((void *)p, 8 * 4096);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reads_allocate),
	    cmocka_unit_test(test_written_and_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
