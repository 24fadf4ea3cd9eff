/* SPDX-License-Identifier: MIT */
/* The guest's serial console. QEMU's serial port is one end of a socketpair;
 * a small relay process of qsnap's holds the other end for as long as that
 * QEMU runs. The relay always reads what the guest prints, appends it to
 * run/serial.log and passes it on to every client of run/serial.sock, and
 * passes what clients type to the guest in order.
 *
 * Why not QEMU's own socket server: QEMU's 16550 sends every character in a
 * write(2) of its own, and a unix socket's send buffer (212992 bytes by
 * default) holds only about 280 such writes. A client that types but does
 * not read (it watches serial.log instead) fills it within a few lines; then
 * the UART's transmitter waits for the socket, the guest's tty blocks, and
 * the console stops mid-line (seen on QEMU 7.2 and 10.0). The relay reads
 * everything at once, keeps a bounded backlog per client and drops the
 * oldest output of a client that does not read: the guest never waits for a
 * console client. serial.log is kept to a size: past it, it becomes
 * serial.log.1 (replacing the one before) and a new one begins, so a guest
 * that prints without end cannot fill the host's disk. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "qemu/qemu.h"

#define CONSOLE_MAX_CLIENTS 8
/* What one client may have unread before its oldest output is dropped, and
 * what clients may have typed before the guest took it (then clients wait). */
#define CONSOLE_BACKLOG (1u << 20)

struct buf {
	char *data;
	size_t len;
};

struct client {
	int fd;
	struct buf out;
};

static void buf_append(struct buf *b, const char *p, size_t n, size_t limit)
{
	if (n >= limit) {
		p += n - limit;
		n = limit;
	}
	if (b->len + n > limit) {
		size_t drop = b->len + n - limit;

		memmove(b->data, b->data + drop, b->len - drop);
		b->len -= drop;
	}
	if (!b->data)
		b->data = xmalloc(limit);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_consume(struct buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Send what fits without blocking; false when the peer is gone. */
static bool buf_flush(struct buf *b, int fd)
{
	while (b->len > 0) {
		ssize_t w = send(fd, b->data, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0)
			return errno == EAGAIN || errno == EINTR;
		buf_consume(b, (size_t)w);
	}
	return true;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* serial.log, in the run directory dirfd, rotated at max bytes. */
struct log {
	int fd, dirfd;
	const char *name, *old; /* "serial.log", "serial.log.1" */
	uint64_t size, max;
};

static void log_write(struct log *l, const char *p, size_t n)
{
	if (l->size && l->size + n > l->max) {
		int fd = -1;

		if (renameat(l->dirfd, l->name, l->dirfd, l->old) == 0)
			fd = openat(l->dirfd, l->name,
				    O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(l->fd);
			l->fd = fd;
		} else if (ftruncate(l->fd, 0) < 0) {
			return; /* the bound holds: nothing more is written */
		}
		l->size = 0;
	}
	write_all(l->fd, p, n);
	l->size += n;
}

static void client_drop(struct client *c, size_t *n, size_t i)
{
	close(c[i].fd);
	free(c[i].out.data);
	c[i] = c[--*n];
}

/* The relay's loop; returns when QEMU's end of the console closes. */
static void relay(int guest, int listener, struct log *log)
{
	struct client clients[CONSOLE_MAX_CLIENTS];
	struct buf typed = {0};
	size_t n_clients = 0;
	char chunk[65536];

	for (;;) {
		struct pollfd p[2 + CONSOLE_MAX_CLIENTS];
		size_t np = 2;

		p[0] = (struct pollfd){.fd = guest, .events = POLLIN | (typed.len ? POLLOUT : 0)};
		p[1] = (struct pollfd){.fd = n_clients < CONSOLE_MAX_CLIENTS ? listener : -1,
				       .events = POLLIN};
		for (size_t i = 0; i < n_clients; i++)
			p[np++] = (struct pollfd){
				.fd = clients[i].fd,
				.events = (typed.len < CONSOLE_BACKLOG ? POLLIN : 0) |
					  (clients[i].out.len ? POLLOUT : 0)};
		if (poll(p, np, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(guest, chunk, sizeof(chunk));

			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (r > 0) {
				log_write(log, chunk, (size_t)r);
				for (size_t i = 0; i < n_clients; i++)
					buf_append(&clients[i].out, chunk, (size_t)r, CONSOLE_BACKLOG);
			}
		}
		/* Clients in reverse, so that dropping one (the last moves into
		 * its place) leaves the pollfd indexes of the others right. */
		for (size_t i = n_clients; i-- > 0;) {
			short ev = p[2 + i].revents;
			size_t room = CONSOLE_BACKLOG - typed.len;
			bool gone = false;

			if ((ev & (POLLIN | POLLHUP | POLLERR)) && room > 0) {
				ssize_t r = read(clients[i].fd, chunk,
						 room < sizeof(chunk) ? room : sizeof(chunk));

				if (r > 0)
					buf_append(&typed, chunk, (size_t)r, CONSOLE_BACKLOG);
				else if (r == 0 || (errno != EAGAIN && errno != EINTR))
					gone = true;
			} else if (ev & (POLLHUP | POLLERR)) {
				gone = true;
			}
			if (!gone)
				gone = !buf_flush(&clients[i].out, clients[i].fd);
			if (gone)
				client_drop(clients, &n_clients, i);
		}
		if ((p[1].revents & POLLIN) && n_clients < CONSOLE_MAX_CLIENTS) {
			int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

			if (fd >= 0)
				clients[n_clients++] = (struct client){.fd = fd};
		}
		if (typed.len && !buf_flush(&typed, guest))
			break;
	}
	/* No new client first, then the clients read end-of-file: one that
	 * connects again reaches the next QEMU's relay, never this one. The
	 * socket's name stays: the next relay binds it anew. */
	close(listener);
	for (size_t i = 0; i < n_clients; i++)
		close(clients[i].fd);
}

static int console_addr(const char *path, struct sockaddr_un *sa, qsnap_error *err)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	if ((size_t)snprintf(sa->sun_path, sizeof(sa->sun_path), "%s", path) >= sizeof(sa->sun_path))
		return qerr(err, ENAMETOOLONG,
			    "%s: the path is too long for a socket (%zu bytes at most): "
			    "move the VM directory to a shorter path",
			    path, sizeof(sa->sun_path) - 1);
	return 0;
}

/* The console's socket, listening, reachable by the VM's owner only. */
static int console_listen(const char *path, qsnap_error *err)
{
	struct sockaddr_un sa;
	_cleanup_close_ int fd = -1;
	int r;

	r = console_addr(path, &sa, err);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return qerr(err, errno, "cannot create a socket: %s", strerror(errno));
	/* A socket left by an earlier QEMU's relay is replaced; that relay
	 * ends with its QEMU. */
	unlink(sa.sun_path);
	/* Owner only. Not through umask, which is the whole process's (the
	 * caller's threads create files too): run/ is 0700, so no one else
	 * reaches the socket before the chmod. */
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 || chmod(sa.sun_path, 0600) < 0 || listen(fd, CONSOLE_MAX_CLIENTS) < 0)
		return qerr(err, errno, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
	return TAKE_FD(fd);
}

int console_relay(const char *log_name, uint64_t log_max)
{
	_cleanup_free_ char *old = xasprintf("%s.1", log_name);
	struct log lo = {.fd = CONSOLE_FD_LOG, .dirfd = CONSOLE_FD_RUNDIR, .name = log_name,
			 .old = old, .max = log_max};
	struct stat st;

	if (fstat(lo.fd, &st) < 0)
		return -errno;
	lo.size = (uint64_t)st.st_size;
	relay(CONSOLE_FD_GUEST, CONSOLE_FD_LISTENER, &lo);
	return 0;
}

int console_start(const char *sock_path, const char *logpath, uint64_t log_max, int *ret_qemu_fd,
		  qsnap_error *err)
{
	static char *const envp[] = {"LC_ALL=C", NULL};
	_cleanup_close_ int listener = -1, log = -1, ours = -1, theirs = -1, rundir = -1,
			    devnull = -1;
	_cleanup_free_ char *dir = xstrdup(logpath), *name = NULL, *max = NULL;
	int sp[2], r;
	pid_t pid;

	listener = console_listen(sock_path, err);
	if (listener < 0)
		return listener;
	/* Appended to across QEMU restarts. */
	log = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (log < 0)
		return qerr(err, errno, "cannot open %s: %s", logpath, strerror(errno));
	/* Its folder, where the relay rotates it. */
	if (strrchr(dir, '/')) {
		name = xstrdup(strrchr(dir, '/') + 1);
		*strrchr(dir, '/') = '\0';
	} else {
		name = TAKE_PTR(dir);
		dir = xstrdup(".");
	}
	rundir = open(*dir ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rundir < 0)
		return qerr(err, errno, "cannot open %s: %s", dir, strerror(errno));
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return qerr(err, errno, "cannot open /dev/null: %s", strerror(errno));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return qerr(err, errno, "cannot create a socket pair: %s", strerror(errno));
	ours = sp[0];
	theirs = sp[1];
	max = xasprintf("%llu", (unsigned long long)log_max);
	/* The relay is a program of its own (qsnap-console), nobody's child
	 * here: it outlives this command, holds only what it is given (not
	 * the VM's lock), and ends when QEMU's end of the socket pair closes,
	 * i.e. when QEMU exits. */
	r = helper_start((char *[]){"qsnap-console", name, max, NULL}, envp,
			 (int[]){devnull, devnull, devnull, ours, listener, log, rundir},
			 CONSOLE_FD_READY, &pid, err);
	if (r < 0)
		return qerr_prefix(err, "cannot start the console relay");
	*ret_qemu_fd = TAKE_FD(theirs);
	return 0;
}

int console_connect(const char *sock_path, int timeout_ms, qsnap_error *err)
{
	struct sockaddr_un sa;
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	int r;

	r = console_addr(sock_path, &sa, err);
	if (r < 0)
		return r;
	for (;;) {
		_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return qerr(err, errno, "cannot create a socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return TAKE_FD(fd);
		/* No console yet (QEMU not started, or being replaced by a
		 * restore): wait for the next one. */
		if (errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN)
			return qerr(err, errno, "cannot connect to %s: %s", sa.sun_path,
				    strerror(errno));
		if (now_ms() >= deadline)
			return qerr(err, ENOTCONN, "%s: no console is listening", sa.sun_path);
		sleep_ms(20);
	}
}
