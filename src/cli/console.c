/* SPDX-License-Identifier: MIT */
/* qsnap console: the guest's serial console on this terminal (or on stdin
 * and stdout, for a script). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

#define DETACH_KEY 0x1d /* Ctrl-] */

static bool reconnect;

static const struct cli_opt opts[] = {
	{"reconnect", 0, CLI_FLAG, NULL,
	 "when the VM's QEMU ends (a restore, or stop and start),\n"
	 "wait for the next one's console and go on there",
	 .target = &reconnect},
	{0},
};

static struct termios saved_tty;
static bool tty_raw;

static void tty_restore(void)
{
	if (tty_raw)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
	tty_raw = false;
}

/* On a terminal, keys go to the guest as they are typed. */
static void tty_make_raw(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
		return;
	t = saved_tty;
	cfmakeraw(&t);
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
		tty_raw = true;
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

enum bridge_end { CONSOLE_CLOSED, INPUT_ENDED, DETACHED, OUTPUT_FAILED };

/* Copy stdin to the console and the console to stdout until one ends. */
static enum bridge_end bridge(int con)
{
	char buf[65536];
	bool input = true;

	for (;;) {
		struct pollfd p[2] = {{.fd = con, .events = POLLIN},
				      {.fd = input ? STDIN_FILENO : -1, .events = POLLIN}};
		ssize_t n;

		/* After the input ends, what the guest still prints is copied
		 * until it is quiet for a second. */
		int r = poll(p, 2, input ? -1 : 1000);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return OUTPUT_FAILED;
		if (r == 0)
			return INPUT_ENDED;
		if (p[0].revents) {
			n = read(con, buf, sizeof(buf));
			if (n <= 0)
				return CONSOLE_CLOSED;
			if (!write_all(STDOUT_FILENO, buf, (size_t)n))
				return OUTPUT_FAILED;
		}
		if (p[1].revents) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				input = false;
				continue;
			}
			if (tty_raw && memchr(buf, DETACH_KEY, (size_t)n))
				return DETACHED;
			if (!write_all(con, buf, (size_t)n))
				return CONSOLE_CLOSED;
		}
	}
}

static int run(struct cli *c)
{
	const char *dir = c->argv[0];
	int wait_ms = (c->timeout > 0 ? c->timeout : 30) * 1000;
	enum bridge_end end;
	int con;

	signal(SIGPIPE, SIG_IGN);
	con = qsnap_console_connect(dir, wait_ms, &c->err);
	if (con < 0)
		return CLI_FAILED;
	if (!c->quiet)
		fprintf(stderr, "qsnap: connected to %s's console%s\r\n", dir,
			isatty(STDIN_FILENO) ? " (Ctrl-] to leave)" : "");
	tty_make_raw();
	for (;;) {
		end = bridge(con);
		close(con);
		if (end != CONSOLE_CLOSED || !reconnect)
			break;
		if (!c->quiet)
			fprintf(stderr, "\r\nqsnap: the console closed (QEMU ended); waiting for the next one\r\n");
		con = qsnap_console_connect(dir, wait_ms, &c->err);
		if (con < 0) {
			tty_restore();
			return CLI_FAILED;
		}
		if (!c->quiet)
			fprintf(stderr, "qsnap: connected again\r\n");
	}
	tty_restore();
	if (end == CONSOLE_CLOSED && !c->quiet)
		fprintf(stderr, "\r\nqsnap: the console closed: the VM's QEMU ended\n");
	return end == OUTPUT_FAILED ? cli_fail(c, "cannot write the console's output: %s",
					       strerror(errno))
				    : 0;
}

const struct cli_cmd cli_cmd_console = {
	.name = "console",
	.summary = "the guest's serial console on this terminal",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Connect this terminal (or stdin and stdout) to the guest's serial console,\n"
		 "VMDIR/run/serial.sock, waiting for it to listen. On a terminal keys go to\n"
		 "the guest as typed; Ctrl-] leaves. Ends a second after stdin ends and the\n"
		 "guest is quiet, or when the VM's QEMU ends (a restore replaces it) unless\n"
		 "--reconnect. Takes no lock: other commands run on the VM meanwhile.\n"
		 "Everything the guest prints is also in VMDIR/run/serial.log.\n",
	.opts = opts,
	.common = CLI_TIMEOUT | CLI_QUIET,
	.timeout_help = "how long to wait for a console to listen (default 30)",
	.vm = CLI_VM_NONE,
	.run = run,
};
