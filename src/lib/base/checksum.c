/* SPDX-License-Identifier: MIT */
/* Checksums of snapshot files: XXH3-128 (libxxhash), written as
 * "xxh3-128:<32 hex digits>". Fast enough to run over gigabytes of machine
 * state at save time; meant to find damage, not tampering. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#include <sys/stat.h>

#include "base/base.h"

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

/* Holes read as zeros: hashed from this, never read from the file. */
static uint8_t zeros[CHUNK];

int hasher_update_range(struct hasher *h, int fd, const uint8_t *map, uint64_t start,
			uint64_t end, void (*on_read)(uint64_t n, void *userdata), void *userdata)
{
	_cleanup_free_ uint8_t *buf = map ? NULL : xmalloc(CHUNK);
	uint64_t pos = start;

	while (pos < end) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		uint64_t data_end, hole_end;

		if (data < 0 && errno != ENXIO)
			return errno;
		/* ENXIO: only a hole from here to the end of the file. */
		hole_end = data < 0 || (uint64_t)data > end ? end : (uint64_t)data;
		while (pos < hole_end) {
			size_t n = hole_end - pos < CHUNK ? hole_end - pos : CHUNK;

			hasher_update(h, zeros, n);
			pos += n;
			if (on_read)
				on_read(n, userdata);
		}
		if (pos >= end)
			break;
		off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);
		if (hole < 0)
			return errno;
		data_end = (uint64_t)hole < end ? (uint64_t)hole : end;
		while (pos < data_end) {
			size_t n = data_end - pos < CHUNK ? data_end - pos : CHUNK;

			if (map) {
				hasher_update(h, map + pos, n);
			} else {
				ssize_t got = pread(fd, buf, n, (off_t)pos);

				if (got < 0 && errno == EINTR)
					continue;
				if (got < 0)
					return errno;
				if (got == 0)
					return EIO; /* the file shrank under us */
				n = (size_t)got;
				hasher_update(h, buf, n);
			}
			pos += n;
			if (on_read)
				on_read(n, userdata);
		}
	}
	return 0;
}

/* A file that cannot seek (a pipe): read to its end. */
static int hash_stream(struct hasher *h, int fd, void (*on_read)(uint64_t n, void *userdata),
		       void *userdata)
{
	_cleanup_free_ char *buf = xmalloc(CHUNK);

	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return 0;
		hasher_update(h, buf, (size_t)n);
		if (on_read)
			on_read((uint64_t)n, userdata);
	}
}

int checksum_fd_ex(int fd, const char *what, void (*on_read)(uint64_t n, void *userdata),
		   void *userdata, char **ret, qsnap_error *err)
{
	struct hasher h;
	struct stat st;
	int e;

	if (fstat(fd, &st) < 0)
		return qerr(err, errno, "cannot read %s: %s", what, strerror(errno));
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	hasher_init(&h);
	/* A regular file is hashed extent by extent: a sparse RAM file's holes
	 * cost no reads. */
	e = S_ISREG(st.st_mode) ? hasher_update_range(&h, fd, NULL, 0, (uint64_t)st.st_size, on_read,
						      userdata)
				: hash_stream(&h, fd, on_read, userdata);
	if (e) {
		hasher_free(&h);
		return qerr(err, e, "cannot read %s: %s", what, strerror(e));
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

/* Hashing the machine state while QEMU writes it: QEMU writes the stream
 * in order and never seeks, so every byte below the file's size is final.
 * Hashed alongside the migration, the checksum costs the paused guest only
 * the last few megabytes instead of a second pass over the whole file. */
struct checksum_follow {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int fd;
	bool complete; /* the writer is done: hash to the end and stop */
	bool cancel;
	int error;     /* errno of a failed read */
	struct hasher h;
};

static void *follow_thread(void *userdata)
{
	struct checksum_follow *f = userdata;
	char *buf = xmalloc(CHUNK);
	off_t off = 0;

	for (;;) {
		struct stat st;
		bool complete;
		ssize_t n = 0;

		pthread_mutex_lock(&f->lock);
		complete = f->complete;
		if (f->cancel) {
			pthread_mutex_unlock(&f->lock);
			break;
		}
		pthread_mutex_unlock(&f->lock);
		if (fstat(f->fd, &st) < 0) {
			f->error = errno;
			break;
		}
		if (st.st_size > off) {
			n = pread(f->fd, buf, CHUNK, off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				f->error = errno;
				break;
			}
			hasher_update(&f->h, buf, (size_t)n);
			off += n;
		}
		if (n > 0)
			continue;
		if (complete)
			break; /* read to the end after the writer was done */
		/* Caught up: wait for more, or for the end. */
		pthread_mutex_lock(&f->lock);
		if (!f->complete && !f->cancel) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&f->wake, &f->lock, &ts);
		}
		pthread_mutex_unlock(&f->lock);
	}
	free(buf);
	return NULL;
}

struct checksum_follow *checksum_follow_start(int fd)
{
	struct checksum_follow *f = xcalloc(1, sizeof(*f));

	f->fd = fd;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->wake, NULL);
	hasher_init(&f->h);
	if (pthread_create(&f->thread, NULL, follow_thread, f) != 0)
		abort();
	return f;
}

static void follow_stop(struct checksum_follow *f, bool cancel)
{
	pthread_mutex_lock(&f->lock);
	f->complete = true;
	f->cancel = cancel;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	pthread_cond_destroy(&f->wake);
	pthread_mutex_destroy(&f->lock);
}

int checksum_follow_finish(struct checksum_follow *f, const char *what, char **ret,
			   qsnap_error *err)
{
	int e;

	follow_stop(f, false);
	e = f->error;
	if (e) {
		hasher_free(&f->h);
		free(f);
		return qerr(err, e, "cannot read %s for its checksum: %s", what, strerror(e));
	}
	*ret = hasher_final(&f->h);
	free(f);
	return 0;
}

void checksum_follow_cancel(struct checksum_follow *f)
{
	if (!f)
		return;
	follow_stop(f, true);
	hasher_free(&f->h);
	free(f);
}
