/* SPDX-License-Identifier: MIT */
/* A filter over QEMU's sequential migration stream (stream.c): the pages
 * of one RAM block that the caller says are unchanged are left out, and
 * everything else passes through byte for byte. docs/design.md,
 * "Differential snapshots", has the format and why this is safe. */
#ifndef QSNAP_QEMU_STREAM_H
#define QSNAP_QEMU_STREAM_H

#include "base/base.h"

/* Keep the page at this offset of the filtered block? Asked only after
 * the page's record was fed in whole (the caller reads its input first). */
typedef bool (*stream_keep_fn)(void *data, uint64_t offset);

struct stream_stats {
	uint64_t in, out;	/* bytes fed, bytes passed on */
	uint64_t kept, dropped; /* page and zero records of the filtered block */
	bool passthrough;	/* past the RAM sections: bytes pass as they are */
};

struct stream_filter;
/* block: the RAM block's idstr ("ram0"). */
struct stream_filter *stream_filter_new(const char *block, stream_keep_fn keep, void *data);
void stream_filter_free(struct stream_filter *f);
/* Feed the next n bytes of the stream; what passes is appended to *out
 * (grown with xrealloc; *out_len bytes in it, *out_cap its size). Fails
 * on a stream that is not QEMU's (bad magic or version). */
int stream_filter_feed(struct stream_filter *f, const uint8_t *buf, size_t n, uint8_t **out,
		       size_t *out_len, size_t *out_cap, qsnap_error *err);
/* The stream ended: fails if it ended inside the RAM sections (QEMU's
 * migration was cut short). */
int stream_filter_end(struct stream_filter *f, qsnap_error *err);
const struct stream_stats *stream_filter_stats(const struct stream_filter *f);

#endif
