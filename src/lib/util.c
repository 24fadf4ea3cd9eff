/* SPDX-License-Identifier: MIT */
/* Small helpers: memory, strings, time, files, helper programs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "internal.h"

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		abort();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

char *xstrdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

void strv_push(char ***v, size_t *n, const char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = xstrdup(s);
	(*v)[*n] = NULL;
}

void strv_pushf(char ***v, size_t *n, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

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

int rm_rf(int dirfd, const char *path)
{
	struct stat st;
	DIR *d;
	int fd;
	struct dirent *de;

	if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dirfd, path, 0) < 0 && errno != ENOENT ? -errno : 0;
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
		rm_rf(fd, de->d_name);
	}
	closedir(d);
	return unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && errno != ENOENT ? -errno : 0;
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

char *find_program(const char *name)
{
	const char *path = getenv("PATH");
	_cleanup_free_ char *copy = NULL;
	char *save = NULL;

	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
	copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *p = xasprintf("%s/%s", dir, name);

		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

char *qemu_img_for(const char *qemu)
{
	_cleanup_free_ char *bin = find_program(qemu ? qemu : "qemu-system-x86_64");
	char *slash = bin ? strrchr(bin, '/') : NULL;

	/* The qemu-img of the VM's QEMU (its own directory, e.g. a QEMU
	 * unpacked beside the system's), else the one on PATH. */
	if (slash) {
		char *img = xasprintf("%.*s/qemu-img", (int)(slash - bin), bin);

		if (access(img, X_OK) == 0)
			return img;
		free(img);
	}
	return xstrdup("qemu-img");
}

int run_program(const char *cwd, char *const argv[], char **ret_out, qsnap_error *err)
{
	return run_program_ex(cwd, argv, NULL, ret_out, err);
}

int run_program_ex(const char *cwd, char *const argv[], const struct run_opts *o, char **ret_out,
		   qsnap_error *err)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
				     "LC_ALL=C", NULL};
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_free_ char *out = NULL, *errout = NULL;
	int outp[2] = {-1, -1}, errp[2] = {-1, -1};
	size_t outlen = 0, errlen = 0;
	struct pollfd pfd[2];
	pid_t pid;
	int status;

	if (!prog)
		return qerr(err, ENOENT, "%s not found: install the Debian package %s", argv[0],
			    strstr(argv[0], "qemu-img") ? "qemu-utils" : argv[0]);
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		int e = errno;
		closep(&outp[0]), closep(&outp[1]), closep(&errp[0]), closep(&errp[1]);
		return qerr(err, e, "cannot create a pipe: %s", strerror(e));
	}
	pid = fork();
	if (pid < 0) {
		int e = errno;
		closep(&outp[0]), closep(&outp[1]), closep(&errp[0]), closep(&errp[1]);
		return qerr(err, e, "cannot fork: %s", strerror(e));
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		close_range(3, ~0U, 0);
		if (cwd && chdir(cwd) < 0)
			_exit(126);
		execve(prog, argv, envp);
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	/* Read both pipes until both are closed, so a chatty child never blocks. */
	pfd[0] = (struct pollfd){.fd = outp[0], .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = errp[0], .events = POLLIN};
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			char chunk[4096];
			ssize_t n = read(pfd[i].fd, chunk, sizeof(chunk));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				continue;
			}
			if (i == 0 && o && o->on_stdout)
				o->on_stdout(chunk, (size_t)n, o->userdata);
			char **b = i == 0 ? &out : &errout;
			size_t *l = i == 0 ? &outlen : &errlen;
			*b = xrealloc(*b, *l + (size_t)n + 1);
			memcpy(*b + *l, chunk, (size_t)n);
			*l += (size_t)n;
			(*b)[*l] = '\0';
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (o && o->ret_status && WIFEXITED(status)) {
		/* The caller reads the exit code itself (qemu-img check). */
		*o->ret_status = WEXITSTATUS(status);
		if (o->ret_stderr)
			*o->ret_stderr = errout ? TAKE_PTR(errout) : xstrdup("");
		if (ret_out)
			*ret_out = out ? TAKE_PTR(out) : xstrdup("");
		return 0;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *e = errout ? errout : out ? out : "";
		size_t l = strlen(e);

		while (l > 0 && (e[l - 1] == '\n' || e[l - 1] == '\r'))
			e[--l] = '\0';
		if (WIFSIGNALED(status))
			return qerr(err, EIO, "%s was killed by signal %d%s%s", argv[0],
				    WTERMSIG(status), *e ? ": " : "", e);
		return qerr(err, EIO, "%s failed (exit %d)%s%s", argv[0], WEXITSTATUS(status),
			    *e ? ": " : "", e);
	}
	if (ret_out)
		*ret_out = out ? TAKE_PTR(out) : xstrdup("");
	return 0;
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
