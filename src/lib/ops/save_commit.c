/* SPDX-License-Identifier: MIT */
/* A save's commit: only a committed snapshot exists. Its meta.json is
 * written, its partial directory takes its final name, and one atomic
 * write of state.json names it. And the save of a VM that stayed paused
 * since its last save, which shares that one's files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "ops/save.h"

/* Where the committed snapshot's files go: snapshots/<name>, or, while a
 * snapshot being replaced still holds that, a unique name beside it. */
static char *final_dir(qsnap_vm *vm, const char *name)
{
	char *dir = layout_snapshot(name);

	for (size_t i = 0; i < vm->st.n_snapshots; i++)
		if (!strcmp(vm->st.snapshots[i].dir, dir)) {
			free(dir);
			return xasprintf(VMDIR_SNAPSHOTS "/%s@%lu", name, ++vm->st.seq);
		}
	/* A stray directory of that name is what a crash left: not a snapshot. */
	rm_rf(vm->dirfd, dir);
	return dir;
}

/* Make the snapshot whose files are in the partial directory real: its
 * meta.json, its final directory, and one atomic write of state.json.
 * s (name, mode, run state, machine state and drives filled in) is taken. */
int save_commit(qsnap_vm *vm, struct snapshot s, qsnap_error *err)
{
	_cleanup_free_ char *old_dir = NULL, *name = xstrdup(s.name);
	struct snapshot *old = state_snapshot(&vm->st, name);
	int r;

	/* Replacing the current snapshot: the new one takes its place in the tree. */
	s.parent = xstrdup_or_null(old && vm->st.current && !strcmp(vm->st.current, name)
					   ? old->parent
					   : vm->st.current);
	s.created = (int64_t)time(NULL);
	s.memory = vm->def.memory;
	r = meta_write(vm->dirfd, vm->st.pending, &s, err);
	if (r < 0)
		goto fail;
	s.dir = final_dir(vm, name);
	if (renameat(vm->dirfd, vm->st.pending, vm->dirfd, s.dir) < 0) {
		r = qerr(err, errno, "cannot rename %s to %s: %s", vm->st.pending, s.dir,
			 strerror(errno));
		goto fail;
	}
	r = fsync_dir(vm->dirfd, VMDIR_SNAPSHOTS, err);
	if (r < 0)
		goto fail;
	if (old) {
		old_dir = TAKE_PTR(old->dir);
		/* Children of the replaced snapshot keep their own state. */
		state_remove_snapshot(&vm->st, name);
	}
	free(TAKE_PTR(vm->st.pending));
	vm->st.snapshots =
		xrealloc(vm->st.snapshots, (vm->st.n_snapshots + 1) * sizeof(*vm->st.snapshots));
	vm->st.snapshots[vm->st.n_snapshots++] = s;
	free(vm->st.current);
	vm->st.current = xstrdup(name);
	/* A paused VM is left in QEMU's postmigrate state, which refuses
	 * another migration; its next save reuses this one's files. */
	free(vm->st.postmigrate);
	vm->st.postmigrate = s.was_running ? NULL : xstrdup(name);
	r = vm_write_state(vm, err);
	if (r < 0)
		return r;
	if (old_dir)
		rm_rf_detached(vm->dirfd, old_dir);
	return chain_gc(vm, err);
fail:
	snapshot_free(&s);
	return r;
}

/* A save of a VM that has stayed paused since its last save, which QEMU
 * (in postmigrate state) would refuse: nothing in it changed, so the new
 * snapshot shares that one's frozen layers and machine state files. */
int save_again(qsnap_vm *vm, const char *name, const qsnap_save_opts *opts,
		      qsnap_error *err)
{
	struct snapshot *src = vm->st.postmigrate ? state_snapshot(&vm->st, vm->st.postmigrate) : NULL;
	_cleanup_free_ char *vmstate = NULL;
	struct snapshot s = {0};
	int64_t t0 = now_ms();
	int r;

	if (!src)
		return qerr(err, EBUSY, "the VM in %s is paused after a migration, and QEMU refuses another until the guest runs: continue it (qsnap qmp %s cont) or restore a snapshot first",
			    vm->dir, vm->dir);
	vmstate = snapshot_vmstate(src);
	vm->st.pending = layout_partial(++vm->st.seq);
	vm->st.pending_resume = false;
	if (mkdirat(vm->dirfd, vm->st.pending, 0755) < 0) {
		r = qerr(err, errno, "cannot create %s/%s: %s", vm->dir, vm->st.pending, strerror(errno));
		goto fail;
	}
	r = vm_write_state(vm, err);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < 2 + src->n_ram_chain; i++) {
		_cleanup_free_ char *file =
		    i == 0   ? xstrdup(strrchr(vmstate, '/') + 1)
		    : i == 1 ? xstrdup(src->mode == QSNAP_RAM_SHARED ? SNAP_RAM : "")
			     : xasprintf(SNAP_DELTA ".%zu", i - 1);
		_cleanup_free_ char *from = layout_in(src->dir, file);
		_cleanup_free_ char *to = layout_in(vm->st.pending, file);

		if (!*file)
			continue;
		if (linkat(vm->dirfd, from, vm->dirfd, to, 0) < 0) {
			r = qerr(err, errno, "cannot link %s to %s: %s", from, to, strerror(errno));
			goto fail;
		}
	}
	s = (struct snapshot){
		.name = xstrdup(name),
		.mode = src->mode,
		.was_running = false,
		.vmstate_size = src->vmstate_size,
		.compressed = src->compressed,
		.vmstate_checksum = xstrdup_or_null(src->vmstate_checksum),
		.ram_checksum = xstrdup_or_null(src->ram_checksum),
		.ram_base = xstrdup_or_null(src->ram_base),
		.ram_chain = xcalloc(src->n_ram_chain + 1, sizeof(struct ram_delta)),
		.n_ram_chain = src->n_ram_chain,
		.qemu_version = xstrdup_or_null(src->qemu_version),
		.machine = xstrdup_or_null(src->machine),
		.format = src->format,
		.drives = xcalloc(src->n_drives, sizeof(struct snap_drive)),
	};
	for (size_t i = 0; i < src->n_ram_chain; i++)
		s.ram_chain[i] = ram_delta_dup(&src->ram_chain[i]);
	for (size_t i = 0; i < src->n_drives; i++) {
		s.drives[s.n_drives].drive = xstrdup(src->drives[i].drive);
		s.drives[s.n_drives++].layer = xstrdup(src->drives[i].layer);
	}
	r = save_commit(vm, s, err);
	if (r < 0)
		goto fail;
	sized_out(opts->stats, &(qsnap_save_stats){
			.size = sizeof(qsnap_save_stats),
			.total = (double)(now_ms() - t0) / 1000.0,
			.mode = state_snapshot(&vm->st, name)->mode,
		}, sizeof(qsnap_save_stats));
	return 0;
fail:
	{
		qsnap_error e2;

		rm_rf(vm->dirfd, vm->st.pending);
		free(TAKE_PTR(vm->st.pending));
		vm_write_state(vm, &e2);
	}
	return qerr_prefix(err, "saving snapshot '%s' of %s failed; nothing was saved", name, vm->dir);
}
