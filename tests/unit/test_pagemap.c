/* SPDX-License-Identifier: MIT */
/* pagemap_reads_allocate answers as this host's kernel behaves: reading
 * 64 MiB of untouched memory, advised for huge pages as QEMU advises
 * guest RAM, makes it resident exactly where the probe says reads
 * allocate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reads_allocate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
