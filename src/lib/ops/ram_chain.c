/* SPDX-License-Identifier: MIT */
/* Chains of differential snapshots (docs/design.md, "Differential
 * snapshots"). A delta holds the pages that differ from its parent's RAM:
 * the RAM file, then the parent's chain of older deltas, oldest first. A
 * snapshot hard-links every file its chain needs (ram, delta.1 ..
 * delta.N), so deleting any other snapshot leaves it whole.
 *
 * What the chain puts into each page is indexed (ram_index) for the next
 * differential save: of the pages the guest's mapping holds privately,
 * those the chain loaded and the guest has not changed since hash the
 * same, and are left out. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <sys/stat.h>

#include "ops/ops.h"
#include "qemu/stream.h"

#define PAGE 4096
#define CHUNK (1 << 20)

struct ram_index {
	uint64_t pages;
	uint64_t *have; /* a bit per page: the chain writes it */
	XXH128_hash_t *hash;
	XXH128_hash_t zero; /* of a page of zeros */
};

static XXH128_hash_t page_hash(const struct ram_index *ix, const uint8_t *page, size_t len)
{
	uint8_t fill[PAGE];

	if (len == PAGE)
		return XXH3_128bits(page, PAGE);
	if (page[0] == 0)
		return ix->zero;
	memset(fill, page[0], sizeof(fill));
	return XXH3_128bits(fill, sizeof(fill));
}

static bool index_record(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct ram_index *ix = data;
	uint64_t pg = offset / PAGE;

	if (pg < ix->pages) {
		ix->have[pg / 64] |= 1ULL << (pg % 64);
		ix->hash[pg] = page_hash(ix, page, len);
	}
	return true;
}

bool ram_index_same(const struct ram_index *ix, uint64_t offset, const uint8_t *page, size_t len,
		    bool *known)
{
	uint64_t pg = offset / PAGE;

	*known = pg < ix->pages && (ix->have[pg / 64] >> (pg % 64) & 1);
	return *known && XXH128_isEqual(ix->hash[pg], page_hash(ix, page, len));
}

void ram_index_free(struct ram_index *ix)
{
	if (!ix)
		return;
	free(ix->have);
	free(ix->hash);
	free(ix);
}

/* Is path (in the VM directory) the same file as the one the VM maps? */
static bool same_file(qsnap_vm *vm, const char *path)
{
	struct stat a, b;

	return vm->st.ram_file && fstatat(vm->dirfd, path, &a, 0) == 0 &&
	       fstatat(vm->dirfd, vm->st.ram_file, &b, 0) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

const struct snapshot *ram_chain_parent(qsnap_vm *vm)
{
	if (!vm->st.ram_parent || vm->st.ram_shared)
		return NULL;
	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];
		_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

		if (s->mode == QSNAP_RAM_SHARED && !s->compressed && s->vmstate_checksum &&
		    !strcmp(s->vmstate_checksum, vm->st.ram_parent) && same_file(vm, ram))
			return s;
	}
	return NULL;
}

int delta_read(int dirfd, const char *path, const struct ram_delta *want, stream_keep_fn keep,
	       void *data, int out_fd, int cancel_fd, qsnap_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	struct stream_filter *f = NULL;
	uint8_t *buf = NULL, *out = NULL;
	size_t out_len = 0, out_cap = 0;
	struct hasher h;
	_cleanup_free_ char *sum = NULL;
	uint64_t total = 0;
	int r = 0;

	if (fd < 0)
		return qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	buf = xmalloc(CHUNK);
	hasher_init(&h);
	f = stream_filter_new("ram0", keep, data);
	stream_filter_records_only(f);
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
			break;
		}
		if (n == 0) {
			r = stream_filter_end(f, err);
			break;
		}
		total += (uint64_t)n;
		hasher_update(&h, buf, (size_t)n);
		out_len = 0;
		r = stream_filter_feed(f, buf, (size_t)n, &out, &out_len, &out_cap, err);
		if (r == 0 && out_fd >= 0)
			r = write_wait(out_fd, out, out_len, cancel_fd, err);
		if (r < 0)
			break;
	}
	sum = hasher_final(&h);
	stream_filter_free(f);
	free(buf);
	free(out);
	if (r < 0)
		return qerr_prefix(err, "%s", path);
	if (total != want->size || strcmp(sum, want->checksum))
		return qerr(err, EIO,
			    "%s (the delta of snapshot '%s') does not match the checksum it was saved with (%s, %llu bytes; expected %s, %llu bytes): the file is damaged",
			    path, want->snapshot, sum, (unsigned long long)total, want->checksum,
			    (unsigned long long)want->size);
	return 0;
}

struct ram_delta ram_delta_dup(const struct ram_delta *d)
{
	return (struct ram_delta){
	    .snapshot = xstrdup(d->snapshot), .size = d->size, .checksum = xstrdup(d->checksum)};
}

size_t ram_chain_of_child(const struct snapshot *p, struct ram_delta **ret, char ***ret_paths)
{
	size_t n = p->ram_base ? p->n_ram_chain + 1 : 0;
	struct ram_delta *c = xcalloc(n + 1, sizeof(*c));
	char **paths = xcalloc(n + 1, sizeof(*paths));

	for (size_t i = 0; i < n; i++) {
		const struct ram_delta *src =
		    i < p->n_ram_chain
			? &p->ram_chain[i]
			: &(struct ram_delta){.snapshot = p->name, .size = p->vmstate_size,
					      .checksum = p->vmstate_checksum};

		c[i] = ram_delta_dup(src);
		paths[i] = i < p->n_ram_chain ? snapshot_delta(p, i + 1) : snapshot_vmstate(p);
	}
	*ret = c;
	*ret_paths = paths;
	return n;
}

int ram_index_build(qsnap_vm *vm, const struct ram_delta *chain, char *const *paths, size_t n,
		    struct ram_index **ret, qsnap_error *err)
{
	struct ram_index *ix = xcalloc(1, sizeof(*ix));
	uint8_t zero[PAGE] = {0};
	int r = 0;

	ix->pages = vm->def.memory / PAGE;
	ix->have = xcalloc(ix->pages / 64 + 1, sizeof(*ix->have));
	ix->hash = xcalloc(ix->pages + 1, sizeof(*ix->hash));
	ix->zero = XXH3_128bits(zero, sizeof(zero));
	for (size_t i = 0; i < n && r == 0; i++)
		r = delta_read(vm->dirfd, paths[i], &chain[i], index_record, ix, -1, -1, err);
	if (r < 0) {
		ram_index_free(ix);
		return r;
	}
	*ret = ix;
	return 0;
}

void ram_chain_free(struct ram_delta *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++) {
		free(c[i].snapshot);
		free(c[i].checksum);
	}
	free(c);
}
