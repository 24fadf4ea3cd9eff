/* SPDX-License-Identifier: MIT */
/* Files: atomic writes, whole reads, fsync, removal, sizes on disk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int fsync_dir(int dirfd, const char *path, qsnap_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return qerr(err, errno, "cannot open directory %s: %s", path, strerror(errno));
	if (fsync(fd) < 0)
		return qerr(err, errno, "cannot sync directory %s: %s", path, strerror(errno));
	return 0;
}

int fsync_file(int dirfd, const char *path, qsnap_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		return qerr(err, errno, "cannot sync %s: %s", path, strerror(errno));
	return 0;
}

int write_file_atomic(int dirfd, const char *path, const char *data, size_t len,
		      qsnap_error *err)
{
	_cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
	_cleanup_free_ char *dir = xstrdup(path);
	_cleanup_close_ int fd = -1;
	char *slash;
	int r;

	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return qerr(err, errno, "cannot create %s: %s", tmp, strerror(errno));
	r = write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return qerr(err, -r, "cannot write %s: %s", tmp, strerror(-r));
	}
	if (renameat(dirfd, tmp, dirfd, path) < 0) {
		r = errno;
		unlinkat(dirfd, tmp, 0);
		return qerr(err, r, "cannot rename %s to %s: %s", tmp, path, strerror(r));
	}
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	return fsync_dir(dirfd, slash ? dir : ".", err);
}

int read_file(int dirfd, const char *path, char **ret_data, size_t *ret_len, qsnap_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 0;

	if (fd < 0)
		return qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = xrealloc(buf, cap);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (!buf)
		buf = xcalloc(1, 1);
	buf[len] = '\0';
	*ret_data = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

/* Big files whose space a short-lived child frees (rm_rf_detached). */
#define HAND_OFF_MIN ((blkcnt_t)(64 << 20) / 512)
struct held {
	int fds[CHILD_MAX_FDS];
	unsigned n;
};

/* The files behind h's descriptors have no name left: the last close of
 * each frees its space, which for a big file is the filesystem's slow part
 * (measured here, ext4: 0.7-1.0 s for 2 GiB, in close(), not in unlink()).
 * true(1), started detached with them as its descriptors, closes them as it
 * exits, so that work happens there; ours close at once. */
static void hand_off(struct held *h)
{
	_cleanup_free_ char *prog = h->n ? find_program("true") : NULL;
	char *const argv[] = {"true", NULL}, *const envp[] = {NULL};
	struct child_exec x = {
	    .prog = prog, .argv = argv, .envp = envp, .fds = h->fds, .n_fds = h->n, .umask = -1};
	qsnap_error e;
	pid_t pid;

	if (prog)
		(void)child_exec_detached(&x, &pid, &e);
	for (unsigned i = 0; i < h->n; i++)
		close(h->fds[i]);
	h->n = 0;
}

static int remove_tree(int dirfd, const char *path, struct held *h)
{
	struct stat st;
	DIR *d;
	int fd;
	struct dirent *de;

	if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode)) {
		/* Opened before its name goes: its space goes with our close. */
		fd = h && S_ISREG(st.st_mode) && st.st_blocks >= HAND_OFF_MIN
			 ? openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
			 : -1;
		if (unlinkat(dirfd, path, 0) < 0 && errno != ENOENT) {
			int e = errno;

			if (fd >= 0)
				close(fd);
			return -e;
		}
		if (fd >= 0) {
			h->fds[h->n++] = fd;
			if (h->n == CHILD_MAX_FDS)
				hand_off(h);
		}
		return 0;
	}
	fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		remove_tree(fd, de->d_name, h);
	}
	closedir(d);
	return unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && errno != ENOENT ? -errno : 0;
}

int rm_rf(int dirfd, const char *path)
{
	return remove_tree(dirfd, path, NULL);
}

int rm_rf_detached(int dirfd, const char *path)
{
	struct held h = {.n = 0};
	int r = remove_tree(dirfd, path, &h);

	hand_off(&h);
	return r;
}

uint64_t disk_usage(int dirfd, const char *path)
{
	struct stat st;
	uint64_t total;
	DIR *d;
	int fd;
	struct dirent *de;

	if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	total = (uint64_t)st.st_blocks * 512;
	if (!S_ISDIR(st.st_mode))
		return total;
	fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return total;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return total;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		total += disk_usage(fd, de->d_name);
	}
	closedir(d);
	return total;
}

char *file_tail(int dirfd, const char *path, size_t max)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf, *start, *end;
	off_t off;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	off = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	buf = xmalloc(max + 1);
	n = pread(fd, buf, max, off);
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	start = buf;
	/* Start at a line boundary when the tail was cut. */
	if (off > 0 && (end = strchr(buf, '\n')))
		start = end + 1;
	end = buf + strlen(buf);
	while (end > start && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	memmove(buf, start, strlen(start) + 1);
	if (!*buf) {
		free(buf);
		return NULL;
	}
	return buf;
}

void sweep_stale(int dirfd, const char *prefix, const char *mark)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	size_t plen = strlen(prefix), mlen = strlen(mark);
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		const char *m = NULL;
		char *end;
		long pid;

		if (strncmp(de->d_name, prefix, plen))
			continue;
		/* The last occurrence of mark, followed by digits only. */
		for (const char *f = strstr(de->d_name, mark); f; f = strstr(f + 1, mark))
			m = f;
		if (!m || !m[mlen])
			continue;
		pid = strtol(m + mlen, &end, 10);
		if (*end || pid <= 0 || pid == getpid())
			continue;
		/* A reused pid keeps its entry: the safe side. */
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			rm_rf(dirfd, de->d_name);
	}
	closedir(d);
}

int output_beside(const char *output, const char *what, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *c1 = xstrdup(output), *c2 = xstrdup(output);
	_cleanup_free_ char *prefix = NULL, *mark = NULL;
	const char *dir = dirname(c1), *base = basename(c2);
	_cleanup_close_ int dirfd = -1;

	if (access(dir, W_OK) < 0)
		return qerr(err, errno, "cannot write to %s (for %s): %s", dir, output,
			    strerror(errno));
	/* What a killed run for the same output left. */
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	prefix = xasprintf(".%s.", base);
	mark = xasprintf(".qsnap-%s-", what);
	if (dirfd >= 0)
		sweep_stale(dirfd, prefix, mark);
	*ret = xasprintf("%s/.%s.qsnap-%s-%d", dir, base, what, (int)getpid());
	return 0;
}

int output_take(const char *tmp, const char *output, bool replace, qsnap_error *err)
{
	int r;

	/* --replace: whatever is there now goes, as asked (a rename never
	 * follows a symlink at output, and fails on a directory). */
	if (replace)
		r = rename(tmp, output);
	else {
		/* Not over a file that appeared while tmp was written. */
		r = renameat2(AT_FDCWD, tmp, AT_FDCWD, output, RENAME_NOREPLACE);
		/* A file system without it: link(2) does not replace either. */
		if (r < 0 && (errno == EINVAL || errno == ENOSYS) && (r = link(tmp, output)) == 0)
			unlink(tmp);
	}
	if (r == 0)
		return 0;
	if (errno == EEXIST)
		return qerr(err, EEXIST, "%s appeared while it was being written: it is left as it is; choose another name, or pass --replace",
			    output);
	return qerr(err, errno, "cannot rename %s to %s: %s", tmp, output, strerror(errno));
}

bool dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	bool empty = true;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			empty = false;
	closedir(d);
	return empty;
}
