/* SPDX-License-Identifier: MIT */
/* Folding a differential snapshot's chain into a RAM file of its own
 * (docs/design.md, "Differential snapshots"): a copy of the RAM file it
 * builds on with the older deltas' pages written in, so that its restore
 * maps that file and loads only its own delta, however long the chain
 * was. The snapshot's files are never written: the folded snapshot is
 * made in a new directory (its own stream hard-linked, the new RAM file,
 * meta.json) that one write of state.json puts in place of the old one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define PAGE 4096

struct fold_write {
	int fd;
	int err; /* the first write that failed */
};

static bool write_page(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct fold_write *w = data;
	uint8_t fill[PAGE];

	if (len != PAGE) {
		memset(fill, page[0], sizeof(fill));
		page = fill;
	}
	if (!w->err && pwrite(w->fd, page, PAGE, (off_t)offset) != PAGE)
		w->err = errno ? errno : EIO;
	return true;
}

/* newdir/ram: the RAM file s builds on, with s's chain written in. */
static int fold_ram(qsnap_vm *vm, const struct snapshot *s, const char *newdir, char **ret_sum,
		    qsnap_error *err)
{
	_cleanup_free_ char *src = layout_in(s->dir, SNAP_RAM), *dst = layout_in(newdir, SNAP_RAM);
	_cleanup_free_ char *copy_sum = NULL;
	struct fold_write w = {.fd = -1};
	int r;

	r = ramfile_copy(vm->dirfd, src, vm->dirfd, dst, vm->def.memory, "fold RAM", NULL, NULL,
			 &copy_sum, err);
	if (r < 0)
		return r;
	if (s->ram_checksum && strcmp(copy_sum, s->ram_checksum))
		return qerr(err, EIO, "%s/%s does not match the checksum it was saved with (%s, expected %s): the RAM file is damaged",
			    vm->dir, src, copy_sum, s->ram_checksum);
	w.fd = openat(vm->dirfd, dst, O_WRONLY | O_CLOEXEC);
	if (w.fd < 0)
		return qerr(err, errno, "cannot open %s/%s: %s", vm->dir, dst, strerror(errno));
	for (size_t k = 1; k <= s->n_ram_chain && r == 0; k++) {
		_cleanup_free_ char *delta = snapshot_delta(s, k);

		r = delta_read(vm->dirfd, delta, &s->ram_chain[k - 1], write_page, &w, -1, -1, err);
		if (r == 0 && w.err)
			r = qerr(err, w.err, "cannot write %s/%s: %s", vm->dir, dst, strerror(w.err));
	}
	if (r == 0 && fsync(w.fd) < 0)
		r = qerr(err, errno, "cannot sync %s/%s: %s", vm->dir, dst, strerror(errno));
	close(w.fd);
	return r < 0 ? r : checksum_file(vm->dirfd, dst, ret_sum, err);
}

bool ram_fold_possible(qsnap_vm *vm, const struct snapshot *s, const char **why)
{
	_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

	*why = NULL;
	if (!s->n_ram_chain)
		*why = "it has no older deltas to fold";
	else if (vm->st.ram_file && !strcmp(vm->st.ram_file, ram))
		*why = "the running VM maps its RAM file: restore another snapshot or stop the VM first";
	return !*why;
}

int qsnap_vm_fold(qsnap_vm *vm, const char *name, qsnap_error *err)
{
	struct snapshot *s = state_snapshot(&vm->st, name);
	_cleanup_free_ char *newdir = NULL, *sum = NULL, *old_dir = NULL, *old_base = NULL;
	_cleanup_free_ char *old_sum = NULL;
	_cleanup_free_ char *from = NULL, *to = NULL;
	struct ram_delta *chain;
	size_t n;
	const char *why;
	int r;

	if (!s)
		return qerr(err, ENOENT, "no snapshot '%s' in %s", name, vm->dir);
	if (!ram_fold_possible(vm, s, &why))
		return qerr(err, EINVAL, "cannot fold the chain of snapshot '%s': %s", name, why);
	newdir = xasprintf(VMDIR_SNAPSHOTS "/%s@%lu", name, ++vm->st.seq);
	rm_rf(vm->dirfd, newdir);
	if (mkdirat(vm->dirfd, newdir, 0755) < 0)
		return qerr(err, errno, "cannot create %s/%s: %s", vm->dir, newdir, strerror(errno));
	from = snapshot_vmstate(s);
	to = layout_in(newdir, strrchr(from, '/') + 1);
	if (linkat(vm->dirfd, from, vm->dirfd, to, 0) < 0) {
		r = qerr(err, errno, "cannot link %s to %s: %s", from, to, strerror(errno));
		goto fail;
	}
	r = fold_ram(vm, s, newdir, &sum, err);
	if (r < 0)
		goto fail;
	/* The snapshot as it is after the fold: its RAM file its own. */
	chain = TAKE_PTR(s->ram_chain);
	n = s->n_ram_chain;
	s->n_ram_chain = 0;
	old_dir = s->dir;
	s->dir = xstrdup(newdir);
	old_base = s->ram_base;
	s->ram_base = xstrdup(s->name);
	old_sum = s->ram_checksum;
	s->ram_checksum = xstrdup(sum);
	r = meta_write(vm->dirfd, newdir, s, err);
	if (r >= 0)
		r = fsync_dir(vm->dirfd, VMDIR_SNAPSHOTS, err);
	if (r >= 0)
		r = vm_write_state(vm, err);
	if (r < 0) {
		/* Back as it was: state.json still names the old directory. */
		free(s->dir);
		s->dir = TAKE_PTR(old_dir);
		free(s->ram_base);
		s->ram_base = TAKE_PTR(old_base);
		free(s->ram_checksum);
		s->ram_checksum = TAKE_PTR(old_sum);
		s->ram_chain = chain;
		s->n_ram_chain = n;
		goto fail;
	}
	ram_chain_free(chain, n);
	rm_rf_detached(vm->dirfd, old_dir);
	return 0;
fail:
	rm_rf(vm->dirfd, newdir);
	return qerr_prefix(err, "folding the chain of snapshot '%s'", name);
}
