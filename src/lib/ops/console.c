/* SPDX-License-Identifier: MIT */
/* Connecting to a VM's serial console (the relay of qemu/console.c). */
#include <errno.h>

#include "ops/ops.h"

int qsnap_console_connect(const char *dir, int timeout_ms, qsnap_error *err)
{
	_cleanup_free_ char *sock = xasprintf("%s/" VMDIR_SERIAL_SOCK, dir);
	int r = console_connect(sock, timeout_ms, err);

	if (r == -ENOTCONN)
		return qerr(err, ENOTCONN,
			    "%s: no console is listening: the VM is not running, or %s is no VM "
			    "directory (see qsnap status %s)",
			    sock, dir, dir);
	return r;
}
