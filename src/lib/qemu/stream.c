/* SPDX-License-Identifier: MIT */
/* Filtering QEMU's sequential migration stream (stream.h). The format, the
 * same in QEMU 7.2 and 10.0 (migration/savevm.c, migration/ram.c):
 *
 *   be32 magic "QEVM", be32 version 3
 *   [0x07 configuration: be32 len, machine type, subsections 0x05 ...]
 *   sections: 0x01 START / 0x04 FULL: be32 id, u8 len, idstr, be32 instance,
 *             be32 version; 0x02 PART / 0x03 END: be32 id; then the
 *             section's content and a footer 0x7e + be32 id;
 *             0x08 command: be16 cmd, be16 len, data (10.0: switchover-start)
 *   0x00 EOF, then an optional JSON description of the devices
 *
 * A RAM section ("ram") is a list of records, each a be64 offset | flags:
 * MEM_SIZE 0x04 (the list of blocks), PAGE 0x08 + 4096 bytes, ZERO 0x02 +
 * one byte, EOS 0x10 (the section's end), 10.0's MULTIFD_FLUSH 0x200;
 * PAGE and ZERO name their block (u8 len + idstr) unless CONTINUE 0x20
 * says it is the one of the record before. QEMU's loader writes only the
 * pages a stream holds, so records left out keep what the destination
 * has. QEMU writes every RAM section before the first device section
 * (qemu_savevm_state_complete_precopy): from the first section that is
 * not RAM, everything passes through unparsed.
 *
 * A restore of a chain of differential snapshots feeds QEMU one stream:
 * the newest one's up to the end of its RAM START section, then one RAM
 * PART section (that section's id) per older delta holding its page and
 * zero records (records_only), oldest first, then the rest of the newest
 * one's. The first page record of each delta names its block, so no
 * CONTINUE record depends on the delta before.
 *
 * A tail (stream_filter_tail) adds records at the end of the last RAM
 * section, before its EOS: QEMU writes nothing into RAM after them, so
 * they are the last word on their pages, and the first of them names its
 * block, so the CONTINUE ones after it never depend on QEMU's records. */
#include <errno.h>
#include <string.h>

#include "qemu/stream.h"

#define QEVM_MAGIC 0x5145564dU
#define QEVM_VERSION 3
#define PAGE_SIZE_TARGET 4096

enum {
	SEC_EOF = 0x00,
	SEC_START = 0x01,
	SEC_PART = 0x02,
	SEC_END = 0x03,
	SEC_FULL = 0x04,
	SEC_SUBSECTION = 0x05,
	SEC_CONFIGURATION = 0x07,
	SEC_COMMAND = 0x08,
	SEC_FOOTER = 0x7e,
};

enum {
	RAM_ZERO = 0x02,
	RAM_MEM_SIZE = 0x04,
	RAM_PAGE = 0x08,
	RAM_EOS = 0x10,
	RAM_CONTINUE = 0x20,
	RAM_MULTIFD_FLUSH = 0x200,
	RAM_FLAGS = PAGE_SIZE_TARGET - 1,
};

enum where { AT_HEADER, AT_TOP, IN_RAM, PASS };

struct stream_filter {
	char *block;
	stream_keep_fn keep;
	void *data;
	enum where at;
	bool ignore_shared; /* the configuration lists x-ignore-shared */
	bool have_ram_id;
	uint32_t ram_id;
	bool records_only;
	bool take;	 /* the block's records all go to keep, none passes */
	bool in_start;	 /* inside the first RAM section (START) */
	bool start_ended; /* ... whose EOS (and footer) the last item was */
	bool in_end;	  /* inside the last RAM section (END) */
	bool ram_done;	  /* ... which ended */
	bool footers;
	stream_tail_fn tail;
	void *tail_data;
	bool tail_now;	 /* the EOS of the END section was parsed */
	bool tail_done;
	bool tail_named; /* a put record named the block */
	uint8_t **out;	 /* where puts go, while the tail runs */
	size_t *out_len, *out_cap;
	size_t out_start; /* where this feed's output began in *out */
	stream_drain_fn drain;
	void *drain_data;
	uint64_t pos;	       /* input bytes parsed as whole items */
	uint64_t ram_start_end; /* input offset where the START section ended */
	char cur[256]; /* the block the last PAGE/ZERO record named */
	uint8_t *pend; /* input not consumed yet */
	size_t pend_len, pend_cap;
	struct stream_stats st;
};

struct stream_filter *stream_filter_new(const char *block, stream_keep_fn keep, void *data)
{
	struct stream_filter *f = xcalloc(1, sizeof(*f));

	f->block = xstrdup(block);
	f->keep = keep;
	f->data = data;
	return f;
}

void stream_filter_free(struct stream_filter *f)
{
	if (!f)
		return;
	free(f->block);
	free(f->pend);
	free(f);
}

const struct stream_stats *stream_filter_stats(const struct stream_filter *f)
{
	return &f->st;
}

void stream_filter_records_only(struct stream_filter *f)
{
	f->records_only = true;
}

void stream_filter_take(struct stream_filter *f)
{
	f->take = true;
}

void stream_filter_tail(struct stream_filter *f, stream_tail_fn fn, void *data)
{
	f->tail = fn;
	f->tail_data = data;
}

void stream_filter_drain(struct stream_filter *f, stream_drain_fn fn, void *data)
{
	f->drain = fn;
	f->drain_data = data;
}

uint64_t stream_filter_ram_start_end(const struct stream_filter *f, uint32_t *ram_id,
				     bool *footers)
{
	*ram_id = f->ram_id;
	*footers = f->footers;
	return f->ram_start_end;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

size_t stream_part_head(uint8_t buf[5], uint32_t ram_id)
{
	buf[0] = SEC_PART;
	put_be32(buf + 1, ram_id);
	return 5;
}

size_t stream_part_tail(uint8_t buf[13], uint32_t ram_id, bool footers)
{
	put_be32(buf, 0);
	put_be32(buf + 4, RAM_EOS);
	if (!footers)
		return 8;
	buf[8] = SEC_FOOTER;
	put_be32(buf + 9, ram_id);
	return 13;
}

static void emit(const uint8_t *p, size_t n, uint8_t **out, size_t *len, size_t *cap)
{
	if (!n)
		return;
	if (*len + n > *cap) {
		*cap = (*len + n) * 2 + 65536;
		*out = xrealloc(*out, *cap);
	}
	memcpy(*out + *len, p, n);
	*len += n;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

int stream_put_page(struct stream_filter *f, uint64_t offset, const uint8_t *page,
		    qsnap_error *err)
{
	static const uint8_t zeros[PAGE_SIZE_TARGET];
	bool zero = !memcmp(page, zeros, sizeof(zeros));
	uint8_t head[8 + 1 + 255];
	size_t n = 8, name_len = strlen(f->block);

	put_be64(head, offset | (zero ? RAM_ZERO : RAM_PAGE) | (f->tail_named ? RAM_CONTINUE : 0));
	if (!f->tail_named) {
		head[n++] = (uint8_t)name_len;
		memcpy(head + n, f->block, name_len);
		n += name_len;
		f->tail_named = true;
	}
	emit(head, n, f->out, f->out_len, f->out_cap);
	emit(zero ? zeros : page, zero ? 1 : PAGE_SIZE_TARGET, f->out, f->out_len, f->out_cap);
	f->st.kept++;
	if (f->drain && *f->out_len >= STREAM_DRAIN_AT) {
		int r = f->drain(f->drain_data, *f->out, *f->out_len, err);

		if (r < 0)
			return r;
		f->st.out += *f->out_len - f->out_start;
		*f->out_len = f->out_start = 0;
	}
	return 0;
}

/* A cursor over the pending input; each get fails (false) when the input
 * ends first: the caller waits for more and parses the item again. */
struct cur {
	const uint8_t *p;
	size_t n, i;
};

static bool get(struct cur *c, size_t n, const uint8_t **ret)
{
	if (c->n - c->i < n)
		return false;
	*ret = c->p + c->i;
	c->i += n;
	return true;
}

static bool get8(struct cur *c, uint8_t *v)
{
	const uint8_t *p;

	if (!get(c, 1, &p))
		return false;
	*v = p[0];
	return true;
}

static bool get16(struct cur *c, uint16_t *v)
{
	const uint8_t *p;

	if (!get(c, 2, &p))
		return false;
	*v = (uint16_t)(p[0] << 8 | p[1]);
	return true;
}

static bool get32(struct cur *c, uint32_t *v)
{
	const uint8_t *p;

	if (!get(c, 4, &p))
		return false;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return true;
}

static bool get64(struct cur *c, uint64_t *v)
{
	uint32_t hi, lo;

	if (!get32(c, &hi) || !get32(c, &lo))
		return false;
	*v = (uint64_t)hi << 32 | lo;
	return true;
}

/* u8 length + bytes, as a string (at most 255). */
static bool getstr(struct cur *c, char s[256])
{
	const uint8_t *p;
	uint8_t len;

	if (!get8(c, &len) || !get(c, len, &p))
		return false;
	memcpy(s, p, len);
	s[len] = '\0';
	return true;
}

/* Results of parsing one item: more input needed, pass it on, leave it
 * out, pass it on as a page or zero record (records_only passes only
 * those), pass everything on from here. */
enum item { ITEM_MORE, ITEM_EMIT, ITEM_DROP, ITEM_RECORD, ITEM_PASS };

/* The configuration section (vmstate_configuration): its subsections have
 * the fields QEMU 7.2 and 10.0 give them; an unknown one ends parsing. */
static enum item parse_configuration(struct stream_filter *f, struct cur *c)
{
	const uint8_t *p;
	uint32_t len;

	if (!get32(c, &len) || !get(c, len, &p))
		return ITEM_MORE;
	for (;;) {
		char name[256];
		uint32_t version, n;

		if (c->i == c->n)
			return ITEM_MORE; /* a subsection may follow */
		if (c->p[c->i] != SEC_SUBSECTION)
			return ITEM_EMIT;
		c->i++;
		if (!getstr(c, name) || !get32(c, &version))
			return ITEM_MORE;
		if (!strcmp(name, "configuration/target-page-bits")) {
			if (!get32(c, &n))
				return ITEM_MORE;
		} else if (!strcmp(name, "configuration/capabilities")) {
			if (!get32(c, &n))
				return ITEM_MORE;
			for (uint32_t k = 0; k < n; k++) {
				char cap[256];

				if (!getstr(c, cap))
					return ITEM_MORE;
				if (!strcmp(cap, "x-ignore-shared"))
					f->ignore_shared = true;
			}
		} else if (!strcmp(name, "configuration/uuid")) {
			if (!get(c, 16, &p))
				return ITEM_MORE;
		} else {
			return ITEM_PASS;
		}
	}
}

/* A section's header at the top level. */
static enum item parse_top(struct stream_filter *f, struct cur *c)
{
	uint8_t type;
	uint32_t id, instance, version;
	uint16_t cmd, len;
	const uint8_t *p;
	char idstr[256];

	if (!get8(c, &type))
		return ITEM_MORE;
	switch (type) {
	case SEC_CONFIGURATION:
		return parse_configuration(f, c);
	case SEC_COMMAND:
		if (!get16(c, &cmd) || !get16(c, &len) || !get(c, len, &p))
			return ITEM_MORE;
		return ITEM_EMIT;
	case SEC_START:
		if (!get32(c, &id) || !getstr(c, idstr) || !get32(c, &instance) ||
		    !get32(c, &version))
			return ITEM_MORE;
		if (strcmp(idstr, "ram") || f->have_ram_id)
			return ITEM_PASS;
		f->have_ram_id = true;
		f->ram_id = id;
		f->at = IN_RAM;
		f->in_start = true;
		return ITEM_EMIT;
	case SEC_PART:
	case SEC_END:
		if (!get32(c, &id))
			return ITEM_MORE;
		if (!f->have_ram_id || id != f->ram_id)
			return ITEM_PASS;
		f->at = IN_RAM;
		f->in_end = type == SEC_END;
		return ITEM_EMIT;
	default: /* a device's section, the end: the rest as it is */
		return ITEM_PASS;
	}
}

/* One record of a RAM section. */
static enum item parse_ram(struct stream_filter *f, struct cur *c)
{
	uint64_t v, flags, offset;
	const uint8_t *p = NULL;
	char name[256];
	size_t len;

	if (!get64(c, &v))
		return ITEM_MORE;
	flags = v & RAM_FLAGS;
	offset = v & ~(uint64_t)RAM_FLAGS;
	switch (flags & ~(uint64_t)RAM_CONTINUE) {
	case RAM_MEM_SIZE:
		for (uint64_t left = offset; left > 0;) {
			uint64_t used, addr;

			if (!getstr(c, name) || !get64(c, &used))
				return ITEM_MORE;
			if (f->ignore_shared && !get64(c, &addr))
				return ITEM_MORE;
			if (used > left)
				return ITEM_PASS;
			left -= used;
		}
		return ITEM_EMIT;
	case RAM_EOS:
		/* The section's footer, when QEMU writes footers. */
		if (c->i == c->n)
			return ITEM_MORE;
		if (c->p[c->i] == SEC_FOOTER && !get(c, 5, &p))
			return ITEM_MORE;
		if (f->in_start) {
			f->footers = p && p[0] == SEC_FOOTER;
			f->in_start = false;
			f->start_ended = true;
		}
		f->ram_done = f->in_end;
		f->tail_now = f->in_end && f->tail && !f->tail_done;
		f->at = AT_TOP;
		return ITEM_EMIT;
	case RAM_MULTIFD_FLUSH:
		return ITEM_EMIT;
	case RAM_PAGE:
	case RAM_ZERO:
		break;
	default:
		return ITEM_PASS;
	}
	if (!(flags & RAM_CONTINUE)) {
		if (!getstr(c, name))
			return ITEM_MORE;
	}
	len = (flags & RAM_PAGE) ? PAGE_SIZE_TARGET : 1;
	if (!get(c, len, &p))
		return ITEM_MORE;
	if (!(flags & RAM_CONTINUE))
		memcpy(f->cur, name, sizeof(f->cur));
	if (f->take && !strcmp(f->cur, f->block)) {
		/* None of the block's records passes, so no CONTINUE record
		 * that passes follows one of them: the next record of another
		 * block names it (QEMU names a block whenever it changes). */
		f->keep(f->data, offset, p, len);
		f->st.dropped++;
		return ITEM_DROP;
	}
	if (!(flags & RAM_CONTINUE)) {
		/* Records that name their block are always kept, so that the
		 * loader's "block of the record before" is the same as the
		 * source's for every CONTINUE record that passes. keep is
		 * still told about the page. */
		if (!strcmp(name, f->block)) {
			f->keep(f->data, offset, p, len);
			f->st.kept++;
		}
		return ITEM_RECORD;
	}
	if (strcmp(f->cur, f->block))
		return ITEM_RECORD;
	if (f->keep(f->data, offset, p, len)) {
		f->st.kept++;
		return ITEM_RECORD;
	}
	f->st.dropped++;
	return ITEM_DROP;
}

/* Parse and filter p[0..n): the bytes consumed go to *ret_used; what is
 * left is an item that needs more input. */
static int parse(struct stream_filter *f, const uint8_t *p, size_t n, size_t *ret_used,
		 uint8_t **out, size_t *out_len, size_t *out_cap, qsnap_error *err)
{
	struct cur c = {.p = p, .n = n};

	while (c.i < c.n && f->at != PASS) {
		size_t at = c.i;
		enum item it = ITEM_MORE;
		uint32_t magic, version;

		switch (f->at) {
		case AT_HEADER:
			if (!get32(&c, &magic) || !get32(&c, &version))
				break;
			if (magic != QEVM_MAGIC || version != QEVM_VERSION)
				return qerr(err, EPROTO,
					    "not a QEMU migration stream (magic %08x, version %u)",
					    magic, version);
			f->at = AT_TOP;
			it = ITEM_EMIT;
			break;
		case AT_TOP:
			it = parse_top(f, &c);
			break;
		case IN_RAM:
			it = parse_ram(f, &c);
			break;
		case PASS:
			break;
		}
		if (it == ITEM_MORE) {
			c.i = at;
			break;
		}
		if (it == ITEM_PASS) {
			/* Records after it would be lost, not passed; or,
			 * taking a block, passed after its records were
			 * taken (a CONTINUE one then names the wrong block). */
			if ((f->records_only || f->take) && !f->ram_done)
				return qerr(err, EPROTO,
					    "the migration stream has an item qsnap cannot read at byte %llu, inside its RAM sections",
					    (unsigned long long)(f->pos + at));
			f->at = PASS;
			f->st.passthrough = true;
			c.i = at;
			break;
		}
		if (f->tail_now) {
			int r;

			f->tail_now = false;
			f->tail_done = true;
			f->out = out;
			f->out_len = out_len;
			f->out_cap = out_cap;
			r = f->tail(f->tail_data, f, err);
			f->out = NULL;
			if (r < 0)
				return r;
		}
		if (it == ITEM_RECORD || (it == ITEM_EMIT && !f->records_only))
			emit(c.p + at, c.i - at, out, out_len, out_cap);
		if (f->start_ended) {
			f->start_ended = false;
			f->ram_start_end = f->pos + c.i;
		}
	}
	if (f->at == PASS) {
		if (!f->records_only)
			emit(c.p + c.i, c.n - c.i, out, out_len, out_cap);
		c.i = c.n;
	}
	f->pos += c.i;
	*ret_used = c.i;
	return 0;
}

static void pend_add(struct stream_filter *f, const uint8_t *p, size_t n)
{
	if (!n)
		return;
	if (f->pend_len + n > f->pend_cap) {
		f->pend_cap = (f->pend_len + n) * 2;
		f->pend = xrealloc(f->pend, f->pend_cap);
	}
	memcpy(f->pend + f->pend_len, p, n);
	f->pend_len += n;
}

/* The input is parsed where it lies; only an item cut by the end of a
 * piece is copied, and once it is complete parsing goes on in the next
 * piece itself. */
int stream_filter_feed(struct stream_filter *f, const uint8_t *buf, size_t n, uint8_t **out,
		       size_t *out_len, size_t *out_cap, qsnap_error *err)
{
	size_t i = 0, used;
	int r;

	f->out_start = *out_len;
	f->st.in += n;
	while (f->pend_len > 0 && i < n) {
		size_t old = f->pend_len, take = n - i < 65536 ? n - i : 65536;

		pend_add(f, buf + i, take);
		r = parse(f, f->pend, f->pend_len, &used, out, out_len, out_cap, err);
		if (r < 0)
			return r;
		if (used >= old) {
			/* The cut item is complete: on in buf itself. */
			i += used - old;
			f->pend_len = 0;
			break;
		}
		memmove(f->pend, f->pend + used, f->pend_len - used);
		f->pend_len -= used;
		i += take;
	}
	if (i < n) {
		r = parse(f, buf + i, n - i, &used, out, out_len, out_cap, err);
		if (r < 0)
			return r;
		pend_add(f, buf + i + used, n - i - used);
	}
	f->st.out += *out_len - f->out_start;
	return 0;
}

int stream_filter_end(struct stream_filter *f, qsnap_error *err)
{
	if (f->at != PASS || f->pend_len)
		return qerr(
		    err, EPROTO, "the migration stream ended early (%llu bytes, inside its %s)",
		    (unsigned long long)f->st.in, f->at == IN_RAM ? "RAM section" : "header");
	if (f->tail && !f->tail_done)
		return qerr(err, EPROTO,
			    "the migration stream has no last RAM section (END) to add pages to");
	return 0;
}
