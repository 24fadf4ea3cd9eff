/* SPDX-License-Identifier: MIT */
/* qsnap-console: the relay between a QEMU's serial port and the VM's
 * run/serial.sock and run/serial.log (qemu/console.c says why). The
 * library starts one for every QEMU (console_start), detached (a session
 * of its own, nobody's child), with default signal dispositions, an empty
 * signal mask, the environment LC_ALL=C and exactly these descriptors:
 *   0, 1, 2  /dev/null
 *   3        its end of the socket pair whose other end is QEMU's serial port
 *   4        run/serial.sock, listening
 *   5        run/serial.log, open for appending
 *   6        run/ (O_PATH), where serial.log becomes serial.log.1
 *   7        the ready pipe: "R" once it serves, then closed
 * It ignores SIGPIPE (a client that left is an EPIPE, not its end) and ends
 * when QEMU's end of the socket pair closes, i.e. with QEMU.
 * Usage: qsnap-console LOG-NAME LOG-MAX-BYTES */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu/qemu.h"

int main(int argc, char **argv)
{
	int fd;
	unsigned long long max;
	char *end;

	if (argc != 3 || !*argv[1] || strchr(argv[1], '/') ||
	    (errno = 0, max = strtoull(argv[2], &end, 10), errno || *end || end == argv[2])) {
		fprintf(stderr, "usage: qsnap-console LOG-NAME LOG-MAX-BYTES (started by libqsnap, "
				"with its descriptors 3-7 set up)\n");
		return 2;
	}
	if ((fd = helper_missing_fd(CONSOLE_FD_READY)) >= 0) {
		fprintf(stderr, "qsnap-console: descriptor %d is not open (it is started by libqsnap, "
				"with its descriptors 3-7 set up)\n", fd);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	helper_ready(CONSOLE_FD_READY);
	return console_relay(argv[1], max) < 0;
}
