/* SPDX-License-Identifier: MIT */
/* A save that writes guest RAM into a file of its own where QEMU cannot
 * (QEMU before 9.0 has no mapped-ram; docs/design.md, "The RAM-file
 * save"). QEMU migrates as for a stream snapshot, into a pipe; our filter
 * (save_filter.c) takes every record of the RAM block out of the stream
 * and writes its page into the snapshot's RAM file at its offset
 * (qemu/stream_ram.c). The snapshot then has a RAM file of its own
 * (ram_base: itself), as a folded chain has: a restore maps the file
 * copy-on-write and loads only the device state. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "ops/save.h"
#include "qemu/stream.h"

static void ram_before(void *data, const uint8_t *buf, size_t n)
{
	ram_writer_piece(data, buf, n);
}

static int ram_after(void *data, qsnap_error *err)
{
	return ram_writer_flush(data, err);
}

int save_ramfile_start(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_free_ char *path = layout_in(vm->st.pending, SNAP_RAM);
	struct ram_writer *w;
	int fd = openat(vm->dirfd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0)
		return qerr(err, errno, "cannot create %s/%s: %s", vm->dir, path, strerror(errno));
	if (ftruncate(fd, (off_t)vm->def.memory) < 0) {
		int e = errno;

		close(fd);
		return qerr(err, e, "cannot size %s/%s: %s", vm->dir, path, strerror(e));
	}
	sv->ram_fd = fd;
	w = sv->ram_writer = ram_writer_new(fd, vm->def.memory);
	return save_filter_start(sv, ram_writer_filter(w, "ram0"),
				 &(struct filter_hooks){.before = ram_before, .after = ram_after,
							.data = w},
				 err);
}

void save_ramfile_free(struct save *sv)
{
	ram_writer_free(TAKE_PTR(sv->ram_writer));
	closep(&sv->ram_fd);
}
