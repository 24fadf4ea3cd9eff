/* SPDX-License-Identifier: MIT */
/* The migration stream filter of differential saves (qemu/stream.c) and
 * the RAM-file save's writer (qemu/stream_ram.c): a stream built here
 * record by record, fed whole and byte by byte, and the beginnings of
 * streams QEMU 7.2 and 10.0 wrote (tests/unit/streams/).
 * QSNAP_STREAM_SAMPLES (paths separated by ':') adds whole streams: kept
 * whole, they must pass through byte for byte. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "qemu/stream.h"

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put8(struct buf *b, uint8_t v)
{
	put(b, &v, 1);
}

static void put32(struct buf *b, uint32_t v)
{
	uint8_t x[4] = {v >> 24, v >> 16, v >> 8, v};

	put(b, x, 4);
}

static void put64(struct buf *b, uint64_t v)
{
	put32(b, (uint32_t)(v >> 32));
	put32(b, (uint32_t)v);
}

static void putstr(struct buf *b, const char *s)
{
	put8(b, (uint8_t)strlen(s));
	put(b, s, strlen(s));
}

/* Set by build: the kept page and zero records alone (what records_only
 * passes), and where the START section ends. */
static struct buf records;
static size_t start_end;

/* A record of a RAM section into both the input and (keep) the expected
 * output. */
static void record(struct buf *in, struct buf *want, bool keep, uint64_t off, unsigned flags,
		   const char *block, uint8_t fill)
{
	struct buf r = {0};
	uint8_t page[4096];

	put64(&r, off | flags);
	if (!(flags & 0x20))
		putstr(&r, block);
	if (flags & 0x08) {
		memset(page, fill, sizeof(page));
		put(&r, page, sizeof(page));
	} else {
		put8(&r, 0);
	}
	put(in, r.p, r.n);
	if (keep) {
		put(want, r.p, r.n);
		put(&records, r.p, r.n);
	}
	free(r.p);
}

static void both(struct buf *in, struct buf *want, const void *p, size_t n)
{
	put(in, p, n);
	put(want, p, n);
}

/* Pages of ram0 the "guest wrote": offsets 1, 4 and 6 (in pages). */
static bool written(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	(void)data;
	return offset == 4096 || offset == 4 * 4096 || offset == 6 * 4096;
}

static bool all(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	(void)data;
	(void)offset;
	return true;
}

static bool none(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	(void)data;
	(void)offset;
	return false;
}

/* The stream of a save with x-ignore-shared in its configuration (so
 * MEM_SIZE carries addresses) and QEMU 10's switchover-start command. */
static void build(struct buf *in, struct buf *want)
{
	struct buf h = {0};

	put32(&h, 0x5145564d);
	put32(&h, 3);
	put8(&h, 0x07); /* configuration */
	put32(&h, 13);
	put(&h, "pc-i440fx-7.2", 13);
	put8(&h, 0x05);
	putstr(&h, "configuration/capabilities");
	put32(&h, 1);
	put32(&h, 1);
	putstr(&h, "x-ignore-shared");
	put8(&h, 0x01); /* START ram */
	put32(&h, 2);
	putstr(&h, "ram");
	put32(&h, 0);
	put32(&h, 4);
	put64(&h, ((8 << 12) + (2 << 12)) | 0x04); /* MEM_SIZE: ram0 8 pages, pc.bios 2 */
	putstr(&h, "ram0");
	put64(&h, 8 << 12);
	put64(&h, 0);
	putstr(&h, "pc.bios");
	put64(&h, 2 << 12);
	put64(&h, 0xfffe0000);
	put64(&h, 0x10); /* EOS */
	put8(&h, 0x7e);
	put32(&h, 2);
	both(in, want, h.p, h.n);
	start_end = h.n;
	records.n = 0;
	h.n = 0;
	put8(&h, 0x08); /* a command: switchover-start */
	put8(&h, 0);
	put8(&h, 0x0a);
	put8(&h, 0);
	put8(&h, 0);
	put8(&h, 0x02); /* PART ram */
	put32(&h, 2);
	both(in, want, h.p, h.n);
	record(in, want, true, 0, 0x08, "ram0", 1);	  /* names its block: kept */
	record(in, want, true, 4096, 0x28, NULL, 2);	  /* written */
	record(in, want, false, 2 * 4096, 0x28, NULL, 3); /* from the file */
	record(in, want, false, 3 * 4096, 0x22, NULL, 0); /* zero, from the file */
	record(in, want, true, 4 * 4096, 0x22, NULL, 0);  /* zero, written */
	record(in, want, true, 0, 0x08, "pc.bios", 5);	  /* another block: kept */
	record(in, want, true, 4096, 0x28, NULL, 6);
	h.n = 0;
	put64(&h, 0x10);
	put8(&h, 0x7e);
	put32(&h, 2);
	put8(&h, 0x03); /* END ram */
	put32(&h, 2);
	both(in, want, h.p, h.n);
	record(in, want, true, 5 * 4096, 0x08, "ram0", 7);
	record(in, want, true, 6 * 4096, 0x28, NULL, 8);
	record(in, want, false, 7 * 4096, 0x28, NULL, 9);
	h.n = 0;
	put64(&h, 0x10);
	put8(&h, 0x7e);
	put32(&h, 2);
	/* A device: passes through unparsed, even bytes that look like RAM
	 * records. */
	put8(&h, 0x04);
	put32(&h, 3);
	putstr(&h, "timer");
	put32(&h, 0);
	put32(&h, 2);
	put64(&h, 7 * 4096 | 0x28);
	put8(&h, 0x7e);
	put32(&h, 3);
	put8(&h, 0x00); /* EOF */
	both(in, want, h.p, h.n);
	free(h.p);
}

/* Feed in to f in pieces of step bytes, whole; what passes goes to out. */
static void feed_all(struct stream_filter *f, const struct buf *in, size_t step, struct buf *out)
{
	qsnap_error err;

	out->n = 0;
	for (size_t i = 0; i < in->n; i += step) {
		size_t n = in->n - i < step ? in->n - i : step;

		assert_int_equal(
		    stream_filter_feed(f, in->p + i, n, &out->p, &out->n, &out->cap, &err), 0);
	}
	assert_int_equal(stream_filter_end(f, &err), 0);
}

static void run(const struct buf *in, size_t step, stream_keep_fn keep, struct buf *out,
		struct stream_stats *st)
{
	struct stream_filter *f = stream_filter_new("ram0", keep, NULL);

	feed_all(f, in, step, out);
	*st = *stream_filter_stats(f);
	stream_filter_free(f);
}

static void test_filter(void **state)
{
	struct buf in = {0}, want = {0}, out = {0};
	struct stream_stats st;
	const size_t steps[] = {1, 7, 4096, 4105, 1 << 20};

	(void)state;
	build(&in, &want);
	for (size_t i = 0; i < sizeof(steps) / sizeof(*steps); i++) {
		run(&in, steps[i], written, &out, &st);
		assert_int_equal(out.n, want.n);
		assert_memory_equal(out.p, want.p, want.n);
		assert_int_equal(st.dropped, 3);
		assert_int_equal(st.kept, 5);
		assert_true(st.passthrough);
		assert_int_equal(st.in, in.n);
		assert_int_equal(st.out, want.n);
	}
	run(&in, 100, all, &out, &st);
	assert_int_equal(out.n, in.n);
	assert_memory_equal(out.p, in.p, in.n);
	free(in.p);
	free(want.p);
	free(out.p);
}

/* records_only passes the kept records and nothing else, and says where
 * the START section ended; a stream with them spliced in after it, as a
 * restore of a chain makes it, parses whole. */
static void test_records_only(void **state)
{
	struct buf in = {0}, want = {0}, out = {0}, spliced = {0}, out2 = {0};
	const size_t steps[] = {1, 13, 4096, 1 << 20};
	uint8_t head[5], tail[13];
	uint32_t id = 0;
	bool footers = false;

	(void)state;
	build(&in, &want);
	for (size_t i = 0; i < sizeof(steps) / sizeof(*steps); i++) {
		struct stream_filter *f = stream_filter_new("ram0", written, NULL);

		stream_filter_records_only(f);
		feed_all(f, &in, steps[i], &out);
		assert_int_equal(out.n, records.n);
		assert_memory_equal(out.p, records.p, records.n);
		assert_int_equal(stream_filter_ram_start_end(f, &id, &footers), start_end);
		assert_int_equal(id, 2);
		assert_true(footers);
		stream_filter_free(f);
	}
	put(&spliced, in.p, start_end);
	put(&spliced, head, stream_part_head(head, id));
	put(&spliced, out.p, out.n);
	put(&spliced, tail, stream_part_tail(tail, id, footers));
	put(&spliced, in.p + start_end, in.n - start_end);
	{
		struct stream_stats st, st2;

		run(&spliced, 4096, all, &out2, &st2);
		run(&in, 4096, all, &out, &st);
		/* Every byte parsed up to the devices (passed whole), and the
		 * five records of ram0 spliced in were read as records. */
		assert_int_equal(out2.n, spliced.n);
		assert_true(st2.passthrough);
		assert_int_equal(st2.kept, st.kept + 5);
	}
	free(in.p);
	free(want.p);
	free(out.p);
	free(out2.p);
	free(spliced.p);
}

/* Feed in to a RAM writer over a fresh 8-page file in pieces of step
 * bytes; what passes goes to out. Returns the file, or -1 with err set
 * when a flush failed. */
static int take(const struct buf *in, size_t step, struct buf *out, struct stream_stats *st,
		qsnap_error *err)
{
	char path[] = "/tmp/qsnap-test-ramXXXXXX";
	int fd = mkstemp(path);
	struct ram_writer *w;
	struct stream_filter *f;
	int r = 0;

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, 8 * 4096), 0);
	w = ram_writer_new(fd, 8 * 4096);
	f = ram_writer_filter(w, "ram0");
	out->n = 0;
	for (size_t i = 0; i < in->n && r == 0; i += step) {
		size_t n = in->n - i < step ? in->n - i : step;

		ram_writer_piece(w, in->p + i, n);
		assert_int_equal(
		    stream_filter_feed(f, in->p + i, n, &out->p, &out->n, &out->cap, err), 0);
		r = ram_writer_flush(w, err);
	}
	if (r == 0)
		assert_int_equal(stream_filter_end(f, err), 0);
	*st = *stream_filter_stats(f);
	stream_filter_free(f);
	ram_writer_free(w);
	if (r < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void check_page(int fd, uint64_t pg, uint8_t fill)
{
	uint8_t page[4096], want[4096];

	memset(want, fill, sizeof(want));
	assert_int_equal(pread(fd, page, sizeof(page), (off_t)(pg * 4096)), 4096);
	assert_memory_equal(page, want, sizeof(want));
}

/* Every record of ram0 goes into the file at its offset and none is left
 * in the stream, which still parses whole; the other block's records
 * stay. A page sent again as zero becomes a hole; a page beyond the block
 * fails the save. */
static void test_ram_writer(void **state)
{
	struct buf in = {0}, want = {0}, out = {0}, again = {0}, h = {0};
	struct stream_stats st;
	const size_t steps[] = {1, 7, 4096, 4105, 1 << 20};
	/* ram0's records in build(): two pages that name it, four continued
	 * pages, two continued zeros. */
	const size_t ram0_bytes = 2 * (8 + 5 + 4096) + 4 * (8 + 4096) + 2 * (8 + 1);
	const uint8_t fills[8] = {1, 2, 3, 0, 0, 7, 8, 9};
	qsnap_error err;
	size_t start;
	int fd;

	(void)state;
	build(&in, &want);
	for (size_t i = 0; i < sizeof(steps) / sizeof(*steps); i++) {
		fd = take(&in, steps[i], &out, &st, &err);
		assert_true(fd >= 0);
		assert_int_equal(st.dropped, 8);
		assert_int_equal(st.kept, 0);
		assert_int_equal(out.n, in.n - ram0_bytes);
		for (uint64_t pg = 0; pg < 8; pg++)
			check_page(fd, pg, fills[pg]);
		/* Zero pages never written are holes. */
		assert_int_equal(lseek(fd, 3 * 4096, SEEK_DATA), 5 * 4096);
		close(fd);
		/* What is left parses whole: pc.bios's two records. */
		run(&out, 4096, all, &again, &st);
		assert_int_equal(again.n, out.n);
		assert_int_equal(st.kept + st.dropped, 0);
		assert_true(st.passthrough);
	}

	/* Page 1 sent, then sent again as zero; page 2 after it (all in the
	 * END section, which QEMU writes last). */
	put32(&h, 0x5145564d);
	put32(&h, 3);
	put8(&h, 0x01); /* START ram, no configuration, no footers */
	put32(&h, 2);
	putstr(&h, "ram");
	put32(&h, 0);
	put32(&h, 4);
	put64(&h, (8 << 12) | 0x04);
	putstr(&h, "ram0");
	put64(&h, 8 << 12);
	put64(&h, 0x10); /* EOS */
	start = h.n;
	put8(&h, 0x03); /* END ram */
	put32(&h, 2);
	record(&h, &want, false, 4096, 0x08, "ram0", 4);
	record(&h, &want, false, 4096, 0x22, NULL, 0);
	record(&h, &want, false, 2 * 4096, 0x28, NULL, 0x11);
	put64(&h, 0x10);
	put8(&h, 0x00); /* EOF */
	fd = take(&h, 4096, &out, &st, &err);
	assert_true(fd >= 0);
	check_page(fd, 1, 0);
	check_page(fd, 2, 0x11);
	assert_int_equal(lseek(fd, 0, SEEK_DATA), 2 * 4096);
	close(fd);

	/* A page past the block's end. */
	h.n -= 9;
	record(&h, &want, false, 8 * 4096, 0x28, NULL, 0x22);
	put64(&h, 0x10);
	put8(&h, 0x00);
	assert_int_equal(take(&h, 1 << 20, &out, &st, &err), -1);
	assert_non_null(strstr(err.msg, "beyond"));

	/* A section of something else among the RAM sections: refused, since
	 * the records after it would pass unparsed. */
	h.n = start;
	put8(&h, 0x02); /* PART of section 9 */
	put32(&h, 9);
	put64(&h, 0);
	{
		struct stream_filter *f = stream_filter_new("ram0", all, NULL);

		stream_filter_take(f);
		out.n = 0;
		assert_int_not_equal(stream_filter_feed(f, h.p, h.n, &out.p, &out.n, &out.cap, &err),
				     0);
		assert_non_null(strstr(err.msg, "cannot read"));
		stream_filter_free(f);
	}
	free(in.p);
	free(want.p);
	free(out.p);
	free(again.p);
	free(h.p);
}

/* A tail that puts pages 1 (0xaa), 3 (zeros) and 6 (0xbb) of ram0. */
static int tail_calls;

static int put_three(void *data, struct stream_filter *f, qsnap_error *err)
{
	uint8_t page[4096];

	(void)data;
	tail_calls++;
	memset(page, 0xaa, sizeof(page));
	assert_int_equal(stream_put_page(f, 4096, page, err), 0);
	memset(page, 0, sizeof(page));
	assert_int_equal(stream_put_page(f, 3 * 4096, page, err), 0);
	memset(page, 0xbb, sizeof(page));
	assert_int_equal(stream_put_page(f, 6 * 4096, page, err), 0);
	return 0;
}

/* A tail of 3000 pages (12 MiB): the output is drained as it grows. */
#define MANY 3000

static int put_many(void *data, struct stream_filter *f, qsnap_error *err)
{
	uint8_t page[4096];

	(void)data;
	for (uint64_t i = 0; i < MANY; i++) {
		memset(page, (int)(i % 255 + 1), sizeof(page));
		assert_int_equal(stream_put_page(f, i * 4096, page, err), 0);
	}
	return 0;
}

static int drained_n;

static int drain_into(void *data, const uint8_t *p, size_t len, qsnap_error *err)
{
	(void)err;
	put(data, p, len);
	drained_n++;
	return 0;
}

/* Taking ram0 with a tail (a differential save that rereads): no record
 * of QEMU's for ram0 passes, the tail's records go at the end of the END
 * section, just before its EOS, the first naming ram0; the stream parses
 * whole. A stream without an END section fails. */
static void test_tail(void **state)
{
	struct buf in = {0}, want = {0}, out = {0}, again = {0}, tail = {0}, cut = {0};
	const size_t steps[] = {1, 13, 4096, 1 << 20};
	uint8_t page[4096];
	struct stream_stats st;
	qsnap_error err;

	(void)state;
	build(&in, &want);
	put64(&tail, 4096 | 0x08);
	putstr(&tail, "ram0");
	memset(page, 0xaa, sizeof(page));
	put(&tail, page, sizeof(page));
	put64(&tail, 3 * 4096 | 0x22);
	put8(&tail, 0);
	put64(&tail, 6 * 4096 | 0x28);
	memset(page, 0xbb, sizeof(page));
	put(&tail, page, sizeof(page));
	put64(&tail, 0x10); /* END's EOS, its footer, then the device */
	put8(&tail, 0x7e);
	put32(&tail, 2);
	put8(&tail, 0x04);
	for (size_t i = 0; i < sizeof(steps) / sizeof(*steps); i++) {
		struct stream_filter *f = stream_filter_new("ram0", none, NULL);

		stream_filter_take(f);
		stream_filter_tail(f, put_three, NULL);
		tail_calls = 0;
		feed_all(f, &in, steps[i], &out);
		assert_int_equal(tail_calls, 1);
		st = *stream_filter_stats(f);
		assert_int_equal(st.dropped, 8); /* QEMU's records of ram0 */
		assert_int_equal(st.kept, 3);	 /* the tail's */
		assert_non_null(memmem(out.p, out.n, tail.p, tail.n));
		stream_filter_free(f);
	}
	/* What passed parses whole: of ram0, only the tail's three records. */
	run(&out, 4096, all, &again, &st);
	assert_int_equal(again.n, out.n);
	assert_int_equal(st.kept, 3);
	/* A tail larger than STREAM_DRAIN_AT goes out as it is put: what was
	 * drained and what was left make the whole stream, in order. */
	{
		struct stream_filter *f = stream_filter_new("ram0", none, NULL);
		struct buf drained = {0};

		stream_filter_take(f);
		stream_filter_tail(f, put_many, NULL);
		stream_filter_drain(f, drain_into, &drained);
		drained_n = 0;
		out.n = 0;
		for (size_t k = 0; k < in.n; k += 4096) {
			size_t n = in.n - k < 4096 ? in.n - k : 4096;

			assert_int_equal(stream_filter_feed(f, in.p + k, n, &out.p, &out.n, &out.cap,
							    &err),
					 0);
			put(&drained, out.p, out.n);
			out.n = 0;
		}
		assert_int_equal(stream_filter_end(f, &err), 0);
		assert_true(drained_n >= 2);
		assert_true(out.n < STREAM_DRAIN_AT);
		assert_int_equal(stream_filter_stats(f)->out, drained.n);
		run(&drained, 65536, all, &again, &st);
		assert_int_equal(again.n, drained.n);
		assert_int_equal(st.kept, MANY);
		stream_filter_free(f);
		free(drained.p);
	}
	/* START, then a device section at once: no END to add the pages to
	 * (taking ram0, the feed refuses the device section already). */
	put(&cut, in.p, start_end);
	put(&cut, in.p + in.n - 33, 33);
	{
		struct stream_filter *f = stream_filter_new("ram0", none, NULL);

		stream_filter_tail(f, put_three, NULL);
		out.n = 0;
		assert_int_equal(stream_filter_feed(f, cut.p, cut.n, &out.p, &out.n, &out.cap, &err),
				 0);
		assert_int_not_equal(stream_filter_end(f, &err), 0);
		assert_non_null(strstr(err.msg, "no last RAM section"));
		stream_filter_free(f);
	}
	free(in.p);
	free(want.p);
	free(out.p);
	free(again.p);
	free(tail.p);
	free(cut.p);
}

static void test_refused(void **state)
{
	struct buf in = {0}, want = {0}, out = {0};
	struct stream_filter *f = stream_filter_new("ram0", all, NULL);
	qsnap_error err;

	(void)state;
	assert_int_not_equal(stream_filter_feed(f, (const uint8_t *)"QEVN\0\0\0\3", 8, &out.p,
						&out.n, &out.cap, &err),
			     0);
	assert_non_null(strstr(err.msg, "not a QEMU migration stream"));
	stream_filter_free(f);
	/* Cut inside the RAM sections: QEMU's migration ended early. */
	build(&in, &want);
	f = stream_filter_new("ram0", all, NULL);
	assert_int_equal(stream_filter_feed(f, in.p, in.n / 2, &out.p, &out.n, &out.cap, &err), 0);
	assert_int_not_equal(stream_filter_end(f, &err), 0);
	assert_non_null(strstr(err.msg, "ended early"));
	stream_filter_free(f);
	free(in.p);
	free(want.p);
	free(out.p);
}

static void slurp(const char *path, struct buf *b)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b->n = b->cap = (size_t)st.st_size;
	b->p = malloc(b->n + 1);
	assert_int_equal(read(fd, b->p, b->n), (ssize_t)b->n);
	close(fd);
}

/* The beginning of a real stream: header, configuration, the RAM blocks,
 * then pages; none of it passed through unparsed, and with nothing kept
 * only the records that name their block are left of ram0. */
static void check_prefix(const char *name)
{
	_cleanup_free_ char *path = xasprintf(
	    "%s/streams/%s", getenv("QSNAP_UNIT_DIR") ? getenv("QSNAP_UNIT_DIR") : ".", name);
	struct buf in = {0}, out = {0};
	struct stream_filter *f = stream_filter_new("ram0", none, NULL);
	qsnap_error err;

	slurp(path, &in);
	assert_int_equal(stream_filter_feed(f, in.p, in.n, &out.p, &out.n, &out.cap, &err), 0);
	assert_false(stream_filter_stats(f)->passthrough);
	assert_true(stream_filter_stats(f)->dropped > 5);
	assert_true(out.n < in.n - stream_filter_stats(f)->dropped * 4096 / 2);
	assert_memory_equal(out.p, in.p, 16); /* the header passes */
	stream_filter_free(f);
	free(in.p);
	free(out.p);
}

static void test_qemu72(void **state)
{
	(void)state;
	check_prefix("qemu7.2-prefix.bin");
}

static void test_qemu10(void **state)
{
	(void)state;
	check_prefix("qemu10.0-prefix.bin");
}

static void test_samples(void **state)
{
	const char *env = getenv("QSNAP_STREAM_SAMPLES");
	_cleanup_free_ char *list = env ? xstrdup(env) : NULL;
	char *save = NULL;

	(void)state;
	if (!list)
		skip();
	for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		struct buf in = {0}, out = {0};
		struct stream_stats st;

		slurp(p, &in);
		run(&in, 1 << 20, all, &out, &st);
		assert_int_equal(out.n, in.n);
		assert_memory_equal(out.p, in.p, in.n);
		run(&in, 65536, none, &out, &st);
		assert_true(st.dropped > 0);
		fprintf(
		    stderr,
		    "%s: %llu bytes, %llu of ram0's records kept, %llu dropped, %zu bytes left\n",
		    p, (unsigned long long)in.n, (unsigned long long)st.kept,
		    (unsigned long long)st.dropped, out.n);
		free(in.p);
		free(out.p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_filter),  cmocka_unit_test(test_records_only),
	    cmocka_unit_test(test_refused), cmocka_unit_test(test_ram_writer),
	    cmocka_unit_test(test_qemu72),  cmocka_unit_test(test_qemu10),
	    cmocka_unit_test(test_samples), cmocka_unit_test(test_tail),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
