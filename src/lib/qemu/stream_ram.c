/* SPDX-License-Identifier: MIT */
/* A RAM block taken out of QEMU's migration stream into a file (stream.h):
 * each page record's page is written at its offset, consecutive pages of
 * one piece of input with one pwritev; a zero page stays a hole, or is
 * punched back into one where the file has data (precopy sends a page
 * again after the guest wrote it, and the last record of a page is the
 * one that counts). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "qemu/stream.h"

#define PAGE 4096
/* Pages written by one pwritev: a run of consecutive ones, all in the
 * piece being fed (a 1 MiB piece holds at most 255). */
#define RUN_MAX 256
_Static_assert(RUN_MAX <= IOV_MAX, "a run fits one pwritev");

struct ram_writer {
	int fd;
	uint64_t size;		/* of the RAM block */
	uint64_t *written;	/* a bit per page that has data in the file */
	const uint8_t *lo, *hi; /* the piece being fed */
	struct iovec iov[RUN_MAX];
	size_t n_iov;
	uint64_t run_off; /* the file offset of iov[0] */
	int err;	  /* the first failure (errno) */
	uint64_t bad;	  /* EPROTO: the offset of a page beyond the block */
};

static bool bit(const uint64_t *map, uint64_t pg)
{
	return map[pg / 64] >> (pg % 64) & 1;
}

static void flush(struct ram_writer *w)
{
	struct iovec *iov = w->iov;
	size_t n_iov = w->n_iov;
	uint64_t off = w->run_off;

	w->n_iov = 0;
	while (n_iov && !w->err) {
		ssize_t n = pwritev(w->fd, iov, (int)n_iov, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			w->err = n < 0 ? errno : ENOSPC;
			break;
		}
		off += (uint64_t)n;
		for (size_t left = (size_t)n; left;) {
			if (left >= iov->iov_len) {
				left -= iov->iov_len;
				iov++;
				n_iov--;
			} else {
				iov->iov_base = (uint8_t *)iov->iov_base + left;
				iov->iov_len -= left;
				left = 0;
			}
		}
	}
}

static void write_one(struct ram_writer *w, const uint8_t *page, uint64_t offset)
{
	w->iov[0] = (struct iovec){.iov_base = (void *)page, .iov_len = PAGE};
	w->n_iov = 1;
	w->run_off = offset;
	flush(w);
}

/* A ZERO record: its fill byte (0 in every QEMU since 2.x) over the page. */
static void zero_page(struct ram_writer *w, uint64_t offset, uint8_t fill)
{
	uint64_t pg = offset / PAGE;
	uint8_t page[PAGE];

	if (!fill && !bit(w->written, pg))
		return; /* a hole already */
	flush(w);
	if (!fill && fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
			       PAGE) == 0) {
		w->written[pg / 64] &= ~(1ULL << (pg % 64));
		return;
	}
	memset(page, fill, sizeof(page));
	write_one(w, page, offset);
	w->written[pg / 64] |= 1ULL << (pg % 64);
}

static bool take_page(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct ram_writer *w = data;
	uint64_t pg = offset / PAGE;

	if (w->err)
		return false;
	if (offset >= w->size || w->size - offset < PAGE) {
		w->err = EPROTO;
		w->bad = offset;
		return false;
	}
	if (len == 1) {
		zero_page(w, offset, page[0]);
		return false;
	}
	w->written[pg / 64] |= 1ULL << (pg % 64);
	/* Pages of the piece stay where they are until ram_writer_flush; one
	 * the filter put together from two pieces does not: written at once. */
	if ((uintptr_t)page < (uintptr_t)w->lo || (uintptr_t)page + PAGE > (uintptr_t)w->hi) {
		flush(w);
		write_one(w, page, offset);
		return false;
	}
	if (w->n_iov && (w->n_iov == RUN_MAX || w->run_off + w->n_iov * PAGE != offset))
		flush(w);
	if (!w->n_iov)
		w->run_off = offset;
	w->iov[w->n_iov++] = (struct iovec){.iov_base = (void *)page, .iov_len = PAGE};
	return false;
}

void ram_writer_piece(struct ram_writer *w, const uint8_t *buf, size_t n)
{
	w->lo = buf;
	w->hi = buf + n;
}

int ram_writer_flush(struct ram_writer *w, qsnap_error *err)
{
	flush(w);
	if (w->err == EPROTO)
		return qerr(err, EPROTO, "QEMU's migration stream has a page at offset %llu, beyond the guest's %llu bytes of RAM",
			    (unsigned long long)w->bad, (unsigned long long)w->size);
	if (w->err)
		return qerr(err, w->err, "cannot write the RAM file: %s", strerror(w->err));
	return 0;
}

struct ram_writer *ram_writer_new(int fd, uint64_t size)
{
	struct ram_writer *w = xcalloc(1, sizeof(*w));

	w->fd = fd;
	w->size = size;
	w->written = xcalloc(size / PAGE / 64 + 1, sizeof(*w->written));
	return w;
}

struct stream_filter *ram_writer_filter(struct ram_writer *w, const char *block)
{
	struct stream_filter *f = stream_filter_new(block, take_page, w);

	stream_filter_take(f);
	return f;
}

void ram_writer_free(struct ram_writer *w)
{
	if (!w)
		return;
	free(w->written);
	free(w);
}
