/* SPDX-License-Identifier: MIT */
/* Copying guest RAM files (shared-RAM mode) as fast as the machine allows:
 * only allocated extents are read (SEEK_DATA/SEEK_HOLE), pages of zeros
 * stay holes in the copy, the file is cut into chunks that several threads
 * copy at once, each with large writes straight from a mapping of the
 * source. The copy can hash the source on the way (the RAM file's
 * checksum): a thread of the caller's hashes the chunks in order as the
 * copiers finish them, holes as zeros. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "base/base.h"

#define CHUNK (64UL << 20) /* unit of work handed to a thread */
#define PAGE 4096UL
#define MAX_THREADS 8

struct copy_job {
	const uint8_t *src; /* the whole source, mapped */
	int dst;
	uint64_t size;
	atomic_uint_fast64_t next_chunk;
	atomic_uint_fast64_t done; /* bytes of the source handled */
	atomic_int error;	   /* first errno seen */
	int srcfd;
	atomic_bool *chunk_done;   /* per chunk, set when copied */
};

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < PAGE / sizeof(uint64_t); i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	return true;
}

static int pwrite_all(int fd, const uint8_t *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Copy [start, end) of the source: data extents only, zero pages skipped,
 * runs of non-zero pages written with one pwrite each. */
static int copy_range(struct copy_job *j, uint64_t start, uint64_t end)
{
	uint64_t pos = start;

	while (pos < end) {
		off_t data = lseek(j->srcfd, (off_t)pos, SEEK_DATA);
		off_t hole;

		if (data < 0 && errno == ENXIO)
			break; /* only holes from here on */
		if (data < 0)
			return errno;
		if ((uint64_t)data >= end)
			break;
		hole = lseek(j->srcfd, data, SEEK_HOLE);
		if (hole < 0)
			return errno;
		uint64_t ext_end = (uint64_t)hole < end ? (uint64_t)hole : end;
		uint64_t p = (uint64_t)data & ~(PAGE - 1);

		while (p < ext_end) {
			uint64_t run;

			if (page_is_zero(j->src + p)) {
				p += PAGE;
				continue;
			}
			for (run = p + PAGE; run < ext_end && !page_is_zero(j->src + run); run += PAGE)
				;
			int e = pwrite_all(j->dst, j->src + p, run - p, (off_t)p);
			if (e)
				return e;
			p = run;
		}
		pos = ext_end;
	}
	return 0;
}

static void *worker(void *arg)
{
	struct copy_job *j = arg;

	for (;;) {
		uint64_t c = atomic_fetch_add(&j->next_chunk, 1);
		uint64_t start = c * CHUNK, end;

		if (start >= j->size || atomic_load(&j->error))
			return NULL;
		end = start + CHUNK < j->size ? start + CHUNK : j->size;
		int e = copy_range(j, start, end);
		if (e) {
			int zero = 0;
			atomic_compare_exchange_strong(&j->error, &zero, e);
			return NULL;
		}
		atomic_fetch_add(&j->done, end - start);
		atomic_store(&j->chunk_done[c], true);
	}
}

uint64_t ramfile_allocated(int dirfd, const char *path)
{
	struct stat st;

	return fstatat(dirfd, path, &st, 0) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

int ramfile_check_space(int dirfd, const char *dir, uint64_t need, const char *what,
			qsnap_error *err)
{
	struct statvfs sv;
	_cleanup_close_ int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t avail;

	if (fd < 0 || fstatvfs(fd, &sv) < 0)
		return qerr(err, errno, "cannot check the free space in %s: %s", dir, strerror(errno));
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	/* A little headroom for metadata and rounding. */
	if (need + (need >> 6) + (16ULL << 20) > avail)
		return qerr(err, ENOSPC, "%s needs %llu MiB but %s has %llu MiB free: free some space or choose another directory",
			    what, (unsigned long long)(need >> 20), dir,
			    (unsigned long long)(avail >> 20));
	return 0;
}

/* Hash the chunks the copiers have finished, in order, from where the
 * last call stopped; returns 0 or an errno. */
static int hash_done_chunks(struct copy_job *j, struct hasher *h, uint64_t *next)
{
	uint64_t n_chunks = (j->size + CHUNK - 1) / CHUNK;

	while (*next < n_chunks && atomic_load(&j->chunk_done[*next])) {
		uint64_t start = *next * CHUNK;
		uint64_t end = start + CHUNK < j->size ? start + CHUNK : j->size;
		int e = hasher_update_range(h, j->srcfd, j->src, start, end, NULL, NULL);

		if (e)
			return e;
		(*next)++;
	}
	return 0;
}

int ramfile_copy(int srcdirfd, const char *src, int dstdirfd, const char *dst, uint64_t size,
		 const char *phase, qsnap_progress_fn progress, void *userdata,
		 char **ret_checksum, qsnap_error *err)
{
	_cleanup_free_ atomic_bool *chunk_done = NULL;
	struct hasher h = {0};
	uint64_t hashed = 0, n_chunks = (size + CHUNK - 1) / CHUNK;
	_cleanup_close_ int sfd = -1, dfd = -1;
	struct copy_job j = {0};
	pthread_t threads[MAX_THREADS];
	int n_threads = 0, e = 0;
	struct progress pr;
	struct stat st;
	void *map;

	progress_begin(&pr, phase, progress, userdata, size);
	sfd = openat(srcdirfd, src, O_RDONLY | O_CLOEXEC);
	if (sfd < 0 || fstat(sfd, &st) < 0)
		return qerr(err, errno, "cannot open RAM file %s: %s", src, strerror(errno));
	if ((uint64_t)st.st_size < size)
		return qerr(err, EINVAL, "RAM file %s has %lld bytes, the VM has %llu", src,
			    (long long)st.st_size, (unsigned long long)size);
	dfd = openat(dstdirfd, dst, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (dfd < 0)
		return qerr(err, errno, "cannot create %s: %s", dst, strerror(errno));
	/* The whole size as a hole first: what is not written reads as zeros. */
	if (ftruncate(dfd, (off_t)size) < 0)
		return qerr(err, errno, "cannot size %s: %s", dst, strerror(errno));

	if (ret_checksum)
		hasher_init(&h);
	if (size == 0) {
		if (ret_checksum)
			*ret_checksum = hasher_final(&h);
		return 0;
	}
	map = mmap(NULL, size, PROT_READ, MAP_SHARED, sfd, 0);
	if (map == MAP_FAILED) {
		hasher_free(&h);
		return qerr(err, errno, "cannot map %s: %s", src, strerror(errno));
	}
	madvise(map, size, MADV_SEQUENTIAL);
	j.src = map;
	j.srcfd = sfd;
	j.dst = dfd;
	j.size = size;
	chunk_done = xcalloc(n_chunks, sizeof(*chunk_done));
	j.chunk_done = chunk_done;
	/* Threads beyond the cores only wait on each other. */
	n_threads = (int)host_cores(MAX_THREADS);
	if ((uint64_t)n_threads > (size + CHUNK - 1) / CHUNK)
		n_threads = (int)((size + CHUNK - 1) / CHUNK);
	for (int i = 0; i < n_threads; i++)
		if (pthread_create(&threads[i], NULL, worker, &j) != 0) {
			n_threads = i;
			break;
		}
	if (n_threads == 0)
		worker(&j);
	/* Report progress (and hash what is copied) while the threads work. */
	for (;;) {
		uint64_t done = atomic_load(&j.done);

		if (ret_checksum && !atomic_load(&j.error)) {
			int he = hash_done_chunks(&j, &h, &hashed);

			if (he) {
				int zero = 0;
				atomic_compare_exchange_strong(&j.error, &zero, he);
			}
		}
		if ((done >= size && (!ret_checksum || hashed == n_chunks)) ||
		    atomic_load(&j.error))
			break;
		progress_report(&pr, done, false);
		if (n_threads == 0 && !ret_checksum)
			break;
		sleep_ms(ret_checksum ? 5 : 50);
	}
	for (int i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	munmap(map, size);
	e = atomic_load(&j.error);
	if (e) {
		hasher_free(&h);
		unlinkat(dstdirfd, dst, 0);
		return qerr(err, e, "copying RAM to %s: %s", dst, strerror(e));
	}
	if (ret_checksum)
		*ret_checksum = hasher_final(&h);
	progress_report(&pr, size, true);
	return 0;
}
