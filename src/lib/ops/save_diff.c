/* SPDX-License-Identifier: MIT */
/* A differential save (docs/design.md, "Differential snapshots"): the VM's
 * RAM is a copy-on-write mapping of a snapshot's RAM file (a lazy restore).
 * QEMU migrates as for a stream snapshot, into a pipe; a thread of ours
 * reads it, and leaves out every page record of the RAM block whose page
 * has not changed since the parent: the snapshot the VM was restored from
 * or last saved as differentially (vm->st.ram_parent). A page the
 * parent's chain of deltas writes is left out when its content hashes the
 * same as the chain's (ram_chain.c); any other page when QEMU's mapping
 * still has it from the file, i.e. the guest never wrote it. That is asked
 * of /proc/PID/pagemap after the record was read: a page still from the
 * file then held the file's content when QEMU read it, and one written
 * after QEMU read it is dirty and sent again. A page kept once is kept
 * every time QEMU sends it again, so the last record of every page that
 * changed is in the stream. The snapshot hard-links the RAM file and the
 * chain's deltas, so deleting any other snapshot keeps what it needs.
 *
 * Where QEMU's dirty log misses guest writes during precopy (TCG before
 * QEMU 9.0, docs/design.md), the save rereads instead (sv->reread): every
 * record of the block is left out of QEMU's stream, and when its last RAM
 * section ends, the guest stopped, the filter's tail reads each page that
 * pagemap says the guest wrote from QEMU's memory (/proc/PID/mem) and
 * adds it, unless the chain below has the same. Each changed page is in
 * the delta once, as it was at the cut, whatever QEMU sent. A plain
 * (full) save of such a VM rereads the same way (save_reread_start), but
 * keeps QEMU's records of the pages the guest had not written when they
 * passed: the file's content, which never changes. Only a page written
 * after its record passed is in the stream twice, and the loader keeps
 * the reread one, the last. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "base/pagemap.h"
#include "ops/save.h"
#include "qemu/stream.h"

#define REREAD_RUN (256 * 4096) /* read at once: consecutive written pages */

/* What the filter asks about each page of ram0. */
struct diff_keep {
	struct save *sv;
	struct pagemap *pm;
	const struct ram_index *ix; /* NULL: no chain below */
	uint64_t pages, *kept;	    /* a bit per page kept once */
};

static bool keep_changed(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct diff_keep *k = data;
	uint64_t pg = offset / 4096;
	bool keep, known = false, same = false;

	if (pg < k->pages && (k->kept[pg / 64] >> (pg % 64) & 1))
		return true;
	if (k->ix)
		same = ram_index_same(k->ix, offset, page, len, &known);
	keep = known ? !same : pagemap_written(k->pm, offset);
	if (keep && pg < k->pages)
		k->kept[pg / 64] |= 1ULL << (pg % 64);
	return keep;
}

/* Rereading: QEMU's records of the block are all left out. */
static bool keep_none(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	(void)data;
	(void)offset;
	(void)page;
	(void)len;
	return false;
}

/* The tail of a rereading save (the guest is stopped): every page the
 * guest wrote since the RAM file, as it is now, unless the chain below
 * (of a differential save) gives it the same. Runs of written pages are
 * read at once. */
static int diff_reread(void *data, struct stream_filter *f, qsnap_error *err)
{
	struct diff_keep *k = data;
	_cleanup_free_ uint8_t *buf = xmalloc(REREAD_RUN);

	k->sv->reread_start = now_wall();
	pagemap_forget(k->pm);
	for (uint64_t pg = 0; pg < k->pages;) {
		uint64_t n = 0;
		int r;

		while (pg + n < k->pages && n < REREAD_RUN / 4096 &&
		       pagemap_written(k->pm, (pg + n) * 4096))
			n++;
		if (!n) {
			pg++;
			continue;
		}
		r = pagemap_read(k->pm, pg * 4096, buf, n * 4096, err);
		if (r < 0)
			return qerr_prefix(err, "rereading the pages the guest wrote");
		for (uint64_t i = 0; i < n; i++) {
			const uint8_t *page = buf + i * 4096;
			bool known = false;

			if (k->ix && ram_index_same(k->ix, (pg + i) * 4096, page, 4096, &known))
				continue;
			r = stream_put_page(f, (pg + i) * 4096, page, err);
			if (r < 0)
				return r;
		}
		pg += n;
	}
	k->sv->reread_end = now_wall();
	return 0;
}

/* The pages' state now, after their records arrived. */
static void diff_before(void *data, const uint8_t *buf, size_t n)
{
	struct diff_keep *k = data;

	(void)buf;
	(void)n;
	pagemap_forget(k->pm);
}

static void diff_free(void *data)
{
	struct diff_keep *k = data;

	pagemap_close(k->pm);
	free(k->kept);
	free(k);
}

/* A plain save that rereads: QEMU's record of a page the guest had
 * written goes (the tail adds the page again: a page once written stays
 * the mapping's own); the others pass, holding the file's content. */
static bool keep_unwritten(void *data, uint64_t offset, const uint8_t *page, size_t len)
{
	struct diff_keep *k = data;

	(void)page;
	(void)len;
	return !pagemap_written(k->pm, offset);
}

/* The filter of a differential save (diff) or of a plain one that
 * rereads, over the VM's mapping of its RAM file. */
static int filter_start(struct save *sv, bool diff, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	_cleanup_close_ int ram = openat(vm->dirfd, vm->st.ram_file, O_RDONLY | O_CLOEXEC);
	struct stream_filter *f;
	struct diff_keep *k;
	int r;

	if (ram < 0)
		return qerr(err, errno, "cannot open the RAM file %s/%s: %s", vm->dir,
			    vm->st.ram_file, strerror(errno));
	k = xcalloc(1, sizeof(*k));
	r = pagemap_open(vm->st.qemu_pid, ram, &k->pm, err);
	if (r < 0) {
		free(k);
		return qerr_prefix(err, diff ? "differential save"
					     : "rereading the pages the guest wrote");
	}
	k->sv = sv;
	k->ix = diff ? sv->diff_index : NULL;
	k->pages = vm->def.memory / 4096;
	if (diff && !sv->reread)
		k->kept = xcalloc(k->pages / 64 + 1, sizeof(*k->kept));
	f = stream_filter_new("ram0", !diff ? keep_unwritten : sv->reread ? keep_none : keep_changed,
			      k);
	if (diff && sv->reread)
		stream_filter_take(f);
	if (sv->reread)
		stream_filter_tail(f, diff_reread, k);
	return save_filter_start(sv, f,
				 &(struct filter_hooks){.before = diff && sv->reread ? NULL : diff_before,
							.free = diff_free,
							.data = k},
				 err);
}

int save_diff_start(struct save *sv, qsnap_error *err)
{
	return filter_start(sv, true, err);
}

int save_reread_start(struct save *sv, qsnap_error *err)
{
	return filter_start(sv, false, err);
}

/* The snapshot whose RAM file the VM maps: the base the new one records. */
static const struct snapshot *mapped_snapshot(qsnap_vm *vm)
{
	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];
		_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);

		if (s->mode == QSNAP_RAM_SHARED && !strcmp(ram, vm->st.ram_file))
			return s;
	}
	return NULL;
}

int save_diff_check(qsnap_vm *vm, qsnap_error *err)
{
	if (!vm->st.ram_file || vm->st.ram_shared)
		return qerr(
		    err, EINVAL,
		    "a differential save needs the VM's RAM mapped copy-on-write from a snapshot's "
		    "RAM file: restore a shared-RAM snapshot with --lazy first (the VM in %s %s)",
		    vm->dir, vm->st.ram_file ? "has its own shared RAM file" : "has anonymous RAM");
	if (!mapped_snapshot(vm))
		return qerr(err, ENOENT,
			    "the RAM file the VM maps (%s/%s) belongs to no snapshot any more: "
			    "save without --diff",
			    vm->dir, vm->st.ram_file);
	return 0;
}

/* Which chain the new delta builds on: the parent's (ram_chain_of_child)
 * when the VM's pages are known since it and the chain stays within
 * RAM_CHAIN_MAX; else none, and the delta holds every page written since
 * the RAM file. A chain that cannot be read is not built on either.
 * Returns the chain's files (NULL: none). */
static char **diff_choose_chain(struct save *sv)
{
	qsnap_vm *vm = sv->vm;
	const struct snapshot *p = ram_chain_parent(vm);
	char **paths = NULL;
	qsnap_error e;

	if (!p) {
		sv->flat_why = "the snapshot the VM's RAM was last restored from or saved as is gone";
		return NULL;
	}
	sv->n_ram_chain = ram_chain_of_child(p, &sv->ram_chain, &paths);
	if (sv->n_ram_chain + 1 > RAM_CHAIN_MAX)
		sv->flat_why = "its chain of deltas is as long as a chain may be";
	else if (sv->n_ram_chain &&
		 ram_index_build(vm, sv->ram_chain, paths, sv->n_ram_chain, &sv->diff_index, &e) < 0)
		sv->flat_why = "the chain it would build on cannot be read";
	if (!sv->flat_why)
		return paths;
	ram_chain_free(TAKE_PTR(sv->ram_chain), sv->n_ram_chain);
	sv->n_ram_chain = 0;
	strv_free(paths);
	return NULL;
}

int save_diff_link(struct save *sv, qsnap_error *err)
{
	qsnap_vm *vm = sv->vm;
	const struct snapshot *base = mapped_snapshot(vm);
	_cleanup_free_ char *to = layout_in(vm->st.pending, SNAP_RAM);
	_cleanup_strv_ char **paths = NULL;

	if (!base)
		return qerr(err, ENOENT,
			    "the RAM file the VM maps belongs to no snapshot any more");
	if (linkat(vm->dirfd, vm->st.ram_file, vm->dirfd, to, 0) < 0)
		return qerr(err, errno, "cannot link %s to %s: %s", vm->st.ram_file, to,
			    strerror(errno));
	sv->ram_base = xstrdup(base->ram_base ? base->ram_base : base->name);
	sv->ram_checksum = xstrdup_or_null(base->ram_checksum);
	paths = diff_choose_chain(sv);
	/* The chain's files, beside the RAM file. */
	for (size_t k = 1; k <= sv->n_ram_chain; k++) {
		_cleanup_free_ char *dst = xasprintf("%s/" SNAP_DELTA ".%zu", vm->st.pending, k);

		if (linkat(vm->dirfd, paths[k - 1], vm->dirfd, dst, 0) < 0)
			return qerr(err, errno, "cannot link %s to %s: %s", paths[k - 1], dst,
				    strerror(errno));
	}
	return 0;
}
