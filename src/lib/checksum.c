/* SPDX-License-Identifier: MIT */
/* Checksums of snapshot files: XXH3-128 (libxxhash), written as
 * "xxh3-128:<32 hex digits>". Fast enough to run over gigabytes of machine
 * state at save time; meant to find damage, not tampering. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

#define CHUNK (1 << 20)

void hasher_init(struct hasher *h)
{
	h->state = XXH3_createState();
	if (!h->state)
		abort();
	XXH3_128bits_reset(h->state);
	h->bytes = 0;
}

void hasher_update(struct hasher *h, const void *data, size_t len)
{
	XXH3_128bits_update(h->state, data, len);
	h->bytes += len;
}

char *hasher_final(struct hasher *h)
{
	XXH128_canonical_t c;
	char hex[2 * sizeof(c.digest) + 1];

	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h->state));
	XXH3_freeState(h->state);
	h->state = NULL;
	for (size_t i = 0; i < sizeof(c.digest); i++)
		snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
	return xasprintf(CHECKSUM_PREFIX "%s", hex);
}

void hasher_free(struct hasher *h)
{
	if (h->state)
		XXH3_freeState(h->state);
	h->state = NULL;
}

bool checksum_valid(const char *s)
{
	size_t n = strlen(CHECKSUM_PREFIX);

	if (!s || strncmp(s, CHECKSUM_PREFIX, n) || strlen(s + n) != 32)
		return false;
	return strspn(s + n, "0123456789abcdef") == 32;
}

int checksum_fd(int fd, const char *what, char **ret, qsnap_error *err)
{
	return checksum_fd_ex(fd, what, NULL, NULL, ret, err);
}

int checksum_fd_ex(int fd, const char *what, void (*on_read)(uint64_t n, void *userdata),
		   void *userdata, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *buf = xmalloc(CHUNK);
	struct hasher h;
	off_t off = 0;

	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	hasher_init(&h);
	for (;;) {
		ssize_t n = pread(fd, buf, CHUNK, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			hasher_free(&h);
			return qerr(err, e, "cannot read %s: %s", what, strerror(e));
		}
		if (n == 0)
			break;
		hasher_update(&h, buf, (size_t)n);
		off += n;
		if (on_read)
			on_read((uint64_t)n, userdata);
	}
	*ret = hasher_final(&h);
	return 0;
}

int checksum_file(int dirfd, const char *path, char **ret, qsnap_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	return checksum_fd(fd, path, ret, err);
}

int checksum_vmstate(qsnap_vm *vm, const char *snapdir, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *path = xasprintf("%s/vmstate", snapdir);
	int r = checksum_file(vm->dirfd, path, ret, err);

	return r < 0 ? qerr_prefix(err, "checksum of the machine state in %s", vm->dir) : 0;
}
