/* SPDX-License-Identifier: MIT */
/* The RAM of a restored VM. A shared-RAM snapshot's RAM file is never
 * written after its save: a lazy restore maps it copy-on-write, opened
 * read-only where QEMU can (readonly=on,rom=off, QEMU 8.2+), because QEMU
 * punches holes into the file behind a private mapping when the guest
 * gives memory back through a balloon (fallocate(PUNCH_HOLE) in
 * ram_block_discard_range). Where it cannot, a VM with such a device is
 * restored eagerly. An eager restore copies the file and checks its
 * checksum on the way, before the running VM is touched where there is
 * room for the copy beside the running VM's RAM. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "base/pagemap.h"
#include "ops/restore.h"

/* The copy made beside the running VM's RAM file, renamed to it once that
 * VM's QEMU is gone. */
#define RAM_EARLY "ram.restore"

static int ram_mismatch(const struct restore *rs, const char *sum, qsnap_error *err)
{
	_cleanup_free_ char *path = layout_in(rs->s->dir, SNAP_RAM);

	return qerr(err, EIO, "snapshot '%s': %s/%s does not match the checksum it was saved with (%s, expected %s): the RAM file is damaged",
		    rs->s->name, rs->vm->dir, path, sum, rs->s->ram_checksum);
}

/* Copy the snapshot's RAM file to path, checking its checksum on the way. */
static int copy_checked(struct restore *rs, const char *path, qsnap_error *err)
{
	_cleanup_free_ char *snapram = layout_in(rs->s->dir, SNAP_RAM), *sum = NULL;
	int r = ramfile_copy(rs->vm->dirfd, snapram, AT_FDCWD, path, rs->vm->def.memory,
			     "restore RAM", rs->opts->progress, rs->opts->userdata, &sum, err);

	if (r < 0)
		return r;
	if (rs->s->ram_checksum && strcmp(sum, rs->s->ram_checksum)) {
		unlink(path);
		return ram_mismatch(rs, sum, err);
	}
	return 0;
}

struct check_progress {
	struct progress pr;
	uint64_t done;
};

static void on_read(uint64_t n, void *userdata)
{
	struct check_progress *c = userdata;

	c->done += n;
	progress_report(&c->pr, c->done, false);
}

/* Only the checksum, reading the file (no room for a second copy). */
static int check_only(struct restore *rs, qsnap_error *err)
{
	_cleanup_free_ char *snapram = layout_in(rs->s->dir, SNAP_RAM), *sum = NULL;
	_cleanup_close_ int fd = openat(rs->vm->dirfd, snapram, O_RDONLY | O_CLOEXEC);
	struct check_progress c = {0};
	int r;

	if (!rs->s->ram_checksum)
		return 0; /* saved before qsnap recorded RAM checksums */
	if (fd < 0)
		return qerr(err, errno, "snapshot '%s': cannot open %s/%s: %s", rs->s->name,
			    rs->vm->dir, snapram, strerror(errno));
	progress_begin(&c.pr, "restore RAM", rs->opts->progress, rs->opts->userdata,
		       rs->vm->def.memory);
	r = checksum_fd_ex(fd, snapram, on_read, &c, &sum, err);
	if (r < 0)
		return r;
	progress_report(&c.pr, c.done, true);
	return strcmp(sum, rs->s->ram_checksum) ? ram_mismatch(rs, sum, err) : 0;
}

/* Is the binary that will run the VM able to open the file read-only?
 * The running QEMU is asked when it is that binary (no process to start). */
static int readonly_possible(struct restore *rs, bool *ret, qsnap_error *err)
{
	struct qmp *q;

	if (restore_running_binary_is_defs(rs->vm) && vm_qmp(rs->vm, &q, err) == 0)
		return caps_backend_rom(q, ret, err);
	return qemu_backend_rom(rs->vm->def.qemu, ret, err);
}

int restore_ram_plan(struct restore *rs, qsnap_error *err)
{
	qsnap_vm *vm = rs->vm;
	_cleanup_free_ char *dir = NULL, *early = NULL, *snapram = NULL;
	qsnap_error e2;
	int r;

	if (rs->s->mode != QSNAP_RAM_SHARED) {
		rs->ram_how = vm->def.ram_mode == QSNAP_RAM_SHARED ? RAM_FRESH : RAM_ANON;
		return 0;
	}
	if (rs->opts->lazy || vm->def.ram_mode != QSNAP_RAM_SHARED) {
		rs->ram_how = RAM_MAP;
		return readonly_possible(rs, &rs->ram_readonly, err);
	}
	rs->ram_how = RAM_COPY;
	r = vm_ram_dir(vm, &dir, err);
	if (r < 0)
		return r;
	early = xasprintf("%s/" RAM_EARLY, dir);
	unlink(early); /* left by a restore that was killed */
	snapram = layout_in(rs->s->dir, SNAP_RAM);
	if (ramfile_check_space(AT_FDCWD, dir, ramfile_allocated(vm->dirfd, snapram),
				"restoring the guest's RAM", &e2) < 0)
		return check_only(rs, err);
	r = copy_checked(rs, early, err);
	if (r < 0)
		return r;
	rs->ram_early = TAKE_PTR(early);
	return 0;
}

int restore_ram_prepare(struct restore *rs, qsnap_error *err)
{
	qsnap_vm *vm = rs->vm;
	_cleanup_free_ char *file = NULL;
	int r;

	free(TAKE_PTR(rs->ram));
	rs->l.ram_file = NULL;
	rs->l.ram_share = rs->l.ram_readonly = false;
	rs->l.ram_prealloc = 0;
	switch (rs->ram_how) {
	case RAM_ANON:
		if (rs->s->format != VMSTATE_MAPPED_RAM && pagemap_reads_allocate()) {
			/* A sequential stream holds every page, and QEMU reads each
			 * zero page to see whether it must clear it: on a host
			 * where reads allocate, the load would make all RAM
			 * resident one fault at a time. Allocated up front by a
			 * thread per core it ends the same, sooner (docs/design.md,
			 * "Where a QEMU 10 save's time goes"); the minute QMP may
			 * take to come up grows with the allocation (a second per
			 * GiB). */
			rs->l.ram_prealloc = host_cores(16);
			rs->l.timeout = RESTORE_QMP_TIMEOUT + (int)(vm->def.memory >> 30);
		}
		return 0;
	case RAM_MAP:
		rs->ram = layout_in(rs->s->dir, SNAP_RAM);
		rs->l.ram_readonly = rs->ram_readonly;
		break;
	case RAM_FRESH:
	case RAM_COPY:
		if (rs->ram_early) {
			file = xstrdup(rs->ram_early);
			strcpy(strrchr(file, '/') + 1, "ram");
			if (rename(rs->ram_early, file) < 0)
				return qerr(err, errno, "cannot rename %s to %s: %s", rs->ram_early,
					    file, strerror(errno));
			free(TAKE_PTR(rs->ram_early));
		} else {
			r = vm_new_ram_file(vm, &file, err);
			if (r >= 0 && rs->ram_how == RAM_COPY)
				r = copy_checked(rs, file, err);
			if (r < 0) {
				if (file)
					unlink(file);
				return r;
			}
		}
		rs->ram = TAKE_PTR(file);
		rs->l.ram_share = true;
		break;
	}
	rs->l.ram_file = rs->ram;
	return 0;
}

int restore_ram_guard(struct restore *rs, bool *ret_eager, qsnap_error *err)
{
	qsnap_vm *vm = rs->vm;
	const char *what = NULL;
	struct qmp *q;
	int r;

	*ret_eager = false;
	if (rs->ram_how != RAM_MAP || rs->ram_readonly)
		return 0;
	/* Asked before the guest ran: nothing was discarded yet. */
	r = vm_qmp(vm, &q, err);
	if (r >= 0)
		r = caps_ram_discarder(q, &what, err);
	if (r < 0 || !what)
		return r;
	vm_set_notice(vm, "restored '%s' eagerly: the VM has %s, through which QEMU %s would punch holes into the snapshot's RAM file, and it cannot open the file read-only (QEMU >= 8.2 can)",
		      rs->name, what, caps_version(q));
	rs->ram_how = RAM_COPY;
	*ret_eager = true;
	return 0;
}

void restore_ram_drop(struct restore *rs)
{
	if (rs->ram_early)
		unlink(rs->ram_early);
	free(TAKE_PTR(rs->ram_early));
	if (rs->l.ram_share && rs->ram)
		unlink(rs->ram);
}
