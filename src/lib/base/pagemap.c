/* SPDX-License-Identifier: MIT */
/* Which pages of a private file mapping another process has written, and
 * whether reading anonymous memory allocates it (pagemap.h). In a
 * MAP_PRIVATE mapping of a file, a page the process wrote is its own
 * copy: /proc/PID/pagemap shows it present (bit 63) and not file-backed
 * (bit 61 clear), or swapped (bit 62). A page never written is absent or
 * file-backed. Exact at 4 KiB with transparent huge pages too
 * (docs/design.md, "Differential snapshots"). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/pagemap.h"

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define WINDOW 512 /* entries read at once: 4 KiB of pagemap, 2 MiB of memory */

struct vma {
	uint64_t start, end, pgoff; /* addresses; pgoff: file offset of start */
};

struct pagemap {
	pid_t pid;
	int fd, mem_fd;
	size_t page;
	struct vma *vmas;
	size_t n_vmas;
	/* The window of entries read since the last pagemap_forget. */
	bool have;
	uint64_t win_addr;
	uint64_t win[WINDOW];
	size_t win_n;
	uint64_t errors;
};

int pagemap_open(pid_t pid, int file_fd, struct pagemap **ret, qsnap_error *err)
{
	_cleanup_free_ char *mpath = xasprintf("/proc/%d/maps", (int)pid);
	_cleanup_free_ char *ppath = xasprintf("/proc/%d/pagemap", (int)pid);
	struct stat st;
	struct pagemap *pm;
	char line[4096];
	FILE *maps;

	*ret = NULL;
	if (fstat(file_fd, &st) < 0)
		return qerr(err, errno, "cannot stat the RAM file: %s", strerror(errno));
	maps = fopen(mpath, "re");
	if (!maps)
		return qerr(err, errno, "cannot read %s: %s", mpath, strerror(errno));
	pm = xcalloc(1, sizeof(*pm));
	pm->fd = pm->mem_fd = -1;
	pm->pid = pid;
	pm->page = (size_t)sysconf(_SC_PAGESIZE);
	while (fgets(line, sizeof(line), maps)) {
		uint64_t start, end, off, ino;
		unsigned maj, mnr;
		char perms[8];

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %" SCNu64, &start,
			   &end, perms, &off, &maj, &mnr, &ino) != 7)
			continue;
		if (ino != st.st_ino || maj != major(st.st_dev) || mnr != minor(st.st_dev))
			continue;
		pm->vmas = xrealloc(pm->vmas, (pm->n_vmas + 1) * sizeof(*pm->vmas));
		pm->vmas[pm->n_vmas++] = (struct vma){.start = start, .end = end, .pgoff = off};
	}
	fclose(maps);
	if (!pm->n_vmas) {
		free(pm);
		return qerr(err, ENOENT, "process %d has no mapping of the RAM file", (int)pid);
	}
	pm->fd = open(ppath, O_RDONLY | O_CLOEXEC);
	if (pm->fd < 0) {
		int e = errno;

		pagemap_close(pm);
		return qerr(err, e, "cannot open %s: %s", ppath, strerror(e));
	}
	*ret = pm;
	return 0;
}

void pagemap_close(struct pagemap *pm)
{
	if (!pm)
		return;
	if (pm->fd >= 0)
		close(pm->fd);
	if (pm->mem_fd >= 0)
		close(pm->mem_fd);
	free(pm->vmas);
	free(pm);
}

void pagemap_forget(struct pagemap *pm)
{
	pm->have = false;
}

uint64_t pagemap_errors(const struct pagemap *pm)
{
	return pm->errors;
}

/* The mapping of the file's offset: its address, and how many bytes of
 * the file are mapped on from there (0: not mapped). */
static uint64_t map_addr(const struct pagemap *pm, uint64_t offset, uint64_t *ret_len)
{
	for (size_t i = 0; i < pm->n_vmas; i++) {
		const struct vma *v = &pm->vmas[i];

		if (offset >= v->pgoff && offset - v->pgoff < v->end - v->start) {
			*ret_len = v->end - v->start - (offset - v->pgoff);
			return v->start + (offset - v->pgoff);
		}
	}
	*ret_len = 0;
	return 0;
}

bool pagemap_written(struct pagemap *pm, uint64_t offset)
{
	uint64_t len, addr = map_addr(pm, offset, &len), e;

	if (!len) {
		pm->errors++;
		return true; /* not mapped where we looked: keep it */
	}
	addr &= ~(uint64_t)(pm->page - 1);
	if (!pm->have || addr < pm->win_addr || addr >= pm->win_addr + pm->win_n * pm->page) {
		uint64_t first = addr & ~(uint64_t)(WINDOW * pm->page - 1);
		ssize_t n = pread(pm->fd, pm->win, sizeof(pm->win),
				  (off_t)(first / pm->page * sizeof(uint64_t)));

		if (n < (ssize_t)sizeof(uint64_t)) {
			pm->have = false;
			pm->errors++;
			return true;
		}
		pm->win_addr = first;
		pm->win_n = (size_t)n / sizeof(uint64_t);
		pm->have = true;
		if (addr >= pm->win_addr + pm->win_n * pm->page) {
			pm->errors++;
			return true;
		}
	}
	e = pm->win[(addr - pm->win_addr) / pm->page];
	return (e & PM_SWAPPED) || ((e & PM_PRESENT) && !(e & PM_FILE));
}

static int open_mem(pid_t pid)
{
	_cleanup_free_ char *path = xasprintf("/proc/%d/mem", (int)pid);

	return open(path, O_RDONLY | O_CLOEXEC);
}

bool pagemap_readable(pid_t pid)
{
	int fd = open_mem(pid);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

int pagemap_read(struct pagemap *pm, uint64_t offset, void *buf, size_t len, qsnap_error *err)
{
	uint8_t *p = buf;

	if (pm->mem_fd < 0)
		pm->mem_fd = open_mem(pm->pid);
	if (pm->mem_fd < 0)
		return qerr(err, errno, "cannot read the memory of process %d: %s", (int)pm->pid,
			    strerror(errno));
	while (len > 0) {
		uint64_t mapped, addr = map_addr(pm, offset, &mapped);
		size_t n = len < mapped ? len : (size_t)mapped;
		ssize_t got;

		if (!n)
			return qerr(err, EFAULT,
				    "process %d no longer maps offset %#llx of the RAM file",
				    (int)pm->pid, (unsigned long long)offset);
		got = pread(pm->mem_fd, p, n, (off_t)addr);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return qerr(err, got < 0 ? errno : EIO,
				    "cannot read the memory of process %d at %#llx: %s", (int)pm->pid,
				    (unsigned long long)addr, got < 0 ? strerror(errno) : "short read");
		p += got;
		offset += (uint64_t)got;
		len -= (size_t)got;
	}
	return 0;
}

/* Map 4 MiB of anonymous memory advised for huge pages as QEMU advises
 * guest RAM, read one byte of its aligned 2 MiB, and ask pagemap what
 * backs it: an allocated page is present, anonymous and mapped by us
 * alone (bit 56); the shared zero page is not exclusive, the huge zero
 * page not anonymous. Asked once per process. */
#define PM_EXCLUSIVE (1ULL << 56)
#define PROBE_HUGE (2UL << 20)

static bool probe_reads_allocate(void)
{
	size_t len = 2 * PROBE_HUGE, page = (size_t)sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	_cleanup_close_ int fd = -1;
	char *a, c;
	uint64_t e = 0;
	bool ret = false;

	if (p == MAP_FAILED)
		return false;
	a = (char *)(((uintptr_t)p + PROBE_HUGE - 1) & ~(uintptr_t)(PROBE_HUGE - 1));
	madvise(p, len, MADV_HUGEPAGE);
	/* The byte read is used, so that no one (valgrind's JIT) drops the read. */
	c = *(volatile char *)a;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (c == 0 && fd >= 0 &&
	    pread(fd, &e, sizeof(e), (off_t)((uintptr_t)a / page * sizeof(e))) == (ssize_t)sizeof(e))
		ret = (e & PM_PRESENT) && (e & PM_EXCLUSIVE) && !(e & PM_FILE);
	munmap(p, len);
	return ret;
}

bool pagemap_reads_allocate(void)
{
	static int known = -1;
	int k = __atomic_load_n(&known, __ATOMIC_RELAXED);

	if (k < 0) {
		k = probe_reads_allocate();
		__atomic_store_n(&known, k, __ATOMIC_RELAXED);
	}
	return k;
}
