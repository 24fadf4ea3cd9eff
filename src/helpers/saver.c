/* SPDX-License-Identifier: MIT */
/* qsnap-saver: a background save (qsnap save --live --no-wait,
 * qsnap_vm_save_background), which goes on after the caller returned and
 * reports in the VM's run/save-progress.json and run/save-result.json
 * (ops/background.c). The library starts it detached (a session of its
 * own, nobody's child), with default signal dispositions, an empty signal
 * mask, an environment of PATH (the caller's: the save finds qemu-img as
 * the caller would), LC_ALL=C and, if the caller has them, the save's
 * knobs QSNAP_NO_PRECOPY, QSNAP_MULTIFD_CHANNELS and QSNAP_DIRECT_IO, and
 * exactly these descriptors:
 *   0, 1, 2  /dev/null
 *   3        the VM's lock: the caller's open file description, locked,
 *            so the lock passes to the saver without a gap
 *   4        the VM directory
 *   5        the ready pipe: "R" once run/ shows the save, or why it could
 *            not begin; then closed
 * It ignores SIGHUP (it has no terminal), connects to QEMU's QMP socket
 * itself, and exits 0 when the snapshot was saved.
 * Usage: qsnap-saver [--live] [--replace] [--compress=LEVEL] [--timeout=S] VMDIR NAME */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

static int usage(void)
{
	fprintf(stderr, "usage: qsnap-saver [--live] [--replace] [--compress=LEVEL] [--timeout=S] "
			"VMDIR NAME (started by libqsnap, with its descriptors 3-5 set up)\n");
	return 2;
}

static bool number(const char *arg, const char *opt, int *ret)
{
	size_t len = strlen(opt);
	char *end;
	long v;

	if (strncmp(arg, opt, len) || arg[len] != '=')
		return false;
	errno = 0;
	v = strtol(arg + len + 1, &end, 10);
	if (errno || *end || end == arg + len + 1 || v < -1 || v > 1 << 20)
		return false;
	*ret = (int)v;
	return true;
}

int main(int argc, char **argv)
{
	int fd;
	qsnap_save_opts opts = QSNAP_SAVE_OPTS_INIT;
	int i;

	for (i = 1; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--live"))
			opts.live = true;
		else if (!strcmp(argv[i], "--replace"))
			opts.replace = true;
		else if (!number(argv[i], "--compress", &opts.compress) &&
			 !number(argv[i], "--timeout", &opts.timeout))
			return usage();
	}
	if (argc - i != 2 || argv[i][0] != '/')
		return usage();
	if ((fd = helper_missing_fd(SAVER_FD_READY)) >= 0) {
		fprintf(stderr, "qsnap-saver: descriptor %d is not open (it is started by libqsnap, "
				"with its descriptors 3-5 set up)\n", fd);
		return 2;
	}
	signal(SIGHUP, SIG_IGN);
	return background_saver(argv[i], argv[i + 1], &opts);
}
