/* SPDX-License-Identifier: MIT */
/* A filter over QEMU's sequential migration stream (stream.c): the pages
 * of one RAM block that the caller says are unchanged are left out, and
 * everything else passes through byte for byte. docs/design.md,
 * "Differential snapshots", has the format and why this is safe. */
#ifndef QSNAP_QEMU_STREAM_H
#define QSNAP_QEMU_STREAM_H

#include "base/base.h"

/* Keep the page at this offset of the filtered block? Asked only after
 * the page's record was fed in whole (the caller reads its input first),
 * for every PAGE and ZERO record of the block: page is the record's 4096
 * bytes (len 4096) or a ZERO record's fill byte (len 1). A record that
 * names its block passes whatever the answer (see stream.c). */
typedef bool (*stream_keep_fn)(void *data, uint64_t offset, const uint8_t *page, size_t len);

struct stream_stats {
	uint64_t in, out;	/* bytes fed, bytes passed on */
	uint64_t kept, dropped; /* page and zero records of the filtered block */
	bool passthrough;	/* past the RAM sections: bytes pass as they are */
};

struct stream_filter;
/* block: the RAM block's idstr ("ram0"). */
struct stream_filter *stream_filter_new(const char *block, stream_keep_fn keep, void *data);
/* Pass on only the page and zero records of the RAM sections (of every
 * block, those of `block` as keep says): no header, no section headers or
 * footers, nothing after the RAM sections. What a restore puts into
 * another stream's RAM section (stream_ram_part). */
void stream_filter_records_only(struct stream_filter *f);
/* Take the block out of the stream: every page and zero record of it goes
 * to keep (whose answer is ignored), named or not, and none passes. An
 * item it cannot read before the RAM sections ended fails the feed (the
 * block's records after it would pass). What a RAM-file save wants
 * (stream_ram.c). */
void stream_filter_take(struct stream_filter *f);
/* Called once, when the records of the last RAM section (END, written
 * with the guest stopped) are through and only its end is left: what fn
 * adds with stream_put_page goes into that section after every record
 * QEMU wrote, so the loader keeps it. A stream that ends without that
 * section fails stream_filter_end. */
typedef int (*stream_tail_fn)(void *data, struct stream_filter *f, qsnap_error *err);
void stream_filter_tail(struct stream_filter *f, stream_tail_fn fn, void *data);
/* From within the tail: a record of the filtered block for the page at
 * offset (4096 bytes; a page of zeros becomes a ZERO record). Fails only
 * as the drain does. */
int stream_put_page(struct stream_filter *f, uint64_t offset, const uint8_t *page,
		    qsnap_error *err);
/* Where the output goes while a tail puts pages, so that it need not all
 * be held: once STREAM_DRAIN_AT bytes wait, fn gets all the output not
 * taken yet (what the feed passed before the tail too), in order. */
#define STREAM_DRAIN_AT (4 << 20)
typedef int (*stream_drain_fn)(void *data, const uint8_t *p, size_t len, qsnap_error *err);
void stream_filter_drain(struct stream_filter *f, stream_drain_fn fn, void *data);
/* Where the first RAM section (the START section, with the list of RAM
 * blocks) ends in the input, its footer included; 0 until it was parsed.
 * *ram_id: its section id; *footers: QEMU writes section footers. */
uint64_t stream_filter_ram_start_end(const struct stream_filter *f, uint32_t *ram_id,
				     bool *footers);
/* The header (type, section id) and the end (EOS record, footer) of a RAM
 * PART section: records_only output between them makes one. */
size_t stream_part_head(uint8_t buf[5], uint32_t ram_id);
size_t stream_part_tail(uint8_t buf[13], uint32_t ram_id, bool footers);
void stream_filter_free(struct stream_filter *f);

/* A RAM block taken out of the stream into a file (stream_ram.c): fd, as
 * long as the block (size) and empty, gets every page at its offset, a
 * zero page as a hole. Its filter (taken by the caller) is fed piece by
 * piece: ram_writer_piece with each piece before it is fed, and
 * ram_writer_flush after, which writes what the piece held and fails
 * with the first write that failed, or on a page beyond the block. */
struct ram_writer;
struct ram_writer *ram_writer_new(int fd, uint64_t size);
struct stream_filter *ram_writer_filter(struct ram_writer *w, const char *block);
void ram_writer_piece(struct ram_writer *w, const uint8_t *buf, size_t n);
int ram_writer_flush(struct ram_writer *w, qsnap_error *err);
void ram_writer_free(struct ram_writer *w);
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
