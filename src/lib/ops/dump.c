/* SPDX-License-Identifier: MIT */
/* Memory dumps for post-mortem debugging: the machine state of a VM that
 * goes on running, zstd-compressed by qsnap; and loading such a dump into
 * a paused QEMU with read-only disks for inspection. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define DUMP_FD_NAME "qsnap-dump"
#define DEFAULT_DUMP_TIMEOUT 600

/* An ELF core through dump-guest-memory, in the background of QEMU's main
 * loop (detach), so that its progress can be asked for. */
static int dump_elf(struct qmp *q, int timeout_s, const qsnap_dump_opts *opts, qsnap_error *err)
{
	int64_t t0 = now_ms();
	int r;

	r = qmp_execute_expect(q, "dump-guest-memory",
			       jbuild("paging", json_object_new_boolean(false), "protocol",
				      json_object_new_string("fd:" DUMP_FD_NAME), "detach",
				      json_object_new_boolean(true), NULL),
			       (const char *const[]){"DUMP_COMPLETED", NULL}, NULL, 0, err);
	if (r < 0)
		return r;
	for (;;) {
		_cleanup_json_ json_object *ev = NULL, *info = NULL;
		const char *e;

		r = qmp_wait_event(q, "DUMP_COMPLETED", &ev, 200, err);
		if (r == 0) {
			e = jstr(jobj(ev, "data"), "error");
			return e ? qerr(err, EIO, "QEMU's dump-guest-memory failed: %s", e) : 0;
		}
		if (r != -ETIMEDOUT)
			return r;
		if (now_ms() - t0 > (int64_t)timeout_s * 1000)
			return qerr(err, ETIMEDOUT, "the dump did not finish within %d s", timeout_s);
		if (opts->progress && qmp_execute(q, "query-dump", NULL, &info, 0, err) == 0) {
			struct progress p = {.phase = "dump", .fn = opts->progress,
					     .userdata = opts->userdata,
					     .total = (uint64_t)jint(info, "total", 0), .t0 = t0};

			progress_report(&p, (uint64_t)jint(info, "completed", 0), false);
		}
	}
}

int qsnap_vm_dump_memory(qsnap_vm *vm, const char *output, const qsnap_dump_opts *opts,
			 qsnap_error *err)
{
	qsnap_dump_opts o;
	_cleanup_free_ char *status = NULL, *tmp = NULL;
	_cleanup_close_ int fd = -1, qemu_fd = -1;
	struct pump *pump = NULL;
	struct mig_target tgt = {.fdset = -1};
	bool running, live, paused_here = false, fd_passed = false;
	int timeout, r;
	struct qmp *q;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_dump_opts", err)) < 0)
		return r;
	opts = &o;
	if (o.compress < QSNAP_COMPRESS_OFF || o.compress > 19)
		return qerr(err, EINVAL, "compression level %d: use 1 to 19, 0 for the default, or QSNAP_COMPRESS_OFF",
			    o.compress);
	timeout = opts->timeout > 0 ? opts->timeout : DEFAULT_DUMP_TIMEOUT;
	r = vm_query_status(vm, &status, &running, err);
	if (r < 0)
		return r;
	if (!strcmp(status, "postmigrate") || !strcmp(status, "inmigrate"))
		return qerr(err, EBUSY, "the VM in %s is paused after a migration and QEMU refuses another: continue it first, or dump a snapshot's files instead",
			    vm->dir);
	q = vm->qmp;
	tmp = xasprintf("%s.partial", output);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return qerr(err, errno, "cannot create %s: %s", tmp, strerror(errno));
	if (opts->compress >= 0) {
		r = pump_start(PUMP_COMPRESS, fd, opts->compress, output, &pump, &qemu_fd, err);
		if (r < 0)
			goto fail;
	}
	if (opts->format == QSNAP_DUMP_ELF) {
		r = migrate_pass_fd(q, DUMP_FD_NAME, pump ? qemu_fd : fd, err);
		if (r < 0)
			goto fail;
		tgt = (struct mig_target){.fdset = -1};
		snprintf(tgt.name, sizeof(tgt.name), "%s", DUMP_FD_NAME);
		fd_passed = true;
		closep(&qemu_fd);
		r = dump_elf(q, timeout, opts, err);
	} else {
		/* A running guest is dumped live (background-snapshot: paused for
		 * milliseconds); RAM always goes in the stream. RAM mapped
		 * copy-on-write from a snapshot (after a lazy restore) cannot be
		 * write-protected ("Background-snapshot is not compatible with
		 * guest memory configuration", QEMU 7.2 and 10.0): then the
		 * guest is paused for the dump, as a save does. */
		live = running && !(vm->st.ram_file && !vm->st.ram_shared);
		r = migrate_setup(q, &(struct mig_setup){.background = live}, err);
		if (r < 0)
			goto fail;
		r = migrate_pass(q, DUMP_FD_NAME, pump ? qemu_fd : fd, !pump, &tgt, err);
		if (r < 0)
			goto fail;
		fd_passed = true;
		closep(&qemu_fd);
		if (running && !live) {
			r = qmp_execute(q, "stop", NULL, NULL, 0, err);
			if (r < 0)
				goto fail;
			paused_here = true;
		}
		r = migrate_run(q, &tgt,
				 &(struct mig_wait){.timeout_s = timeout,
						    .phase = "dump",
						    .progress = opts->progress,
						    .userdata = opts->userdata,
						    .fd = fd,
						    .pump = pump},
				 err);
		if (r == 0 && paused_here) {
			paused_here = false;
			r = vm_cont(vm, err);
		}
	}
	if (r < 0)
		goto fail;
	migrate_release(q, &tgt);
	fd_passed = false;
	r = pump_finish(TAKE_PTR(pump), now_ms() + PUMP_END_MS, -1, err);
	if (r < 0)
		goto fail;
	if (fsync(fd) < 0 || rename(tmp, output) < 0) {
		r = qerr(err, errno, "cannot write %s: %s", output, strerror(errno));
		goto fail;
	}
	return 0;
fail:
	{
		qsnap_error e2;

		closep(&qemu_fd);
		if (fd_passed && vm_qemu_alive(vm))
			migrate_release(q, &tgt);
		if (paused_here && vm_qemu_alive(vm))
			vm_cont(vm, &e2);
		/* Our side of the pipe knows best why it broke (a full disk). */
		if (pump_discard(TAKE_PTR(pump), now_ms() + UNDO_GRACE_MS, &e2) < 0)
			qerr(err, e2.code, "%s", e2.msg);
		unlink(tmp);
		if (!vm_qemu_alive(vm))
			vm_err_qemu_log(vm, err);
		return qerr_prefix(err, "dumping the memory of %s to %s failed", vm->dir, output);
	}
}

int qsnap_vm_start_from_dump(qsnap_vm *vm, const char *dump, int timeout, qsnap_error *err)
{
	_cleanup_close_ int fd = -1, qemu_fd = -1;
	struct pump *pump = NULL;
	struct mig_target tgt;
	unsigned char magic[4];
	struct stat st;
	struct qmp *q;
	int r;

	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is running: stop it before loading a dump into it",
			    vm->dir);
	fd = open(dump, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return qerr(err, errno, "cannot open the dump %s: %s", dump, strerror(errno));
	if (pread(fd, magic, 4, 0) != 4 ||
	    (memcmp(magic, "QEVM", 4) && memcmp(magic, "\x28\xb5\x2f\xfd", 4)))
		return qerr(err, EINVAL, "%s is not a qsnap memory dump in stream format (ELF dumps are for crash or gdb)",
			    dump);
	vm_forget_qemu(vm);
	r = vm_launch(vm, &(struct launch){.incoming = true, .timeout = 60, .readonly_disks = true},
		      err);
	if (r < 0)
		return r;
	q = vm->qmp;
	r = migrate_setup(q, &(struct mig_setup){.incoming = true}, err);
	if (r < 0)
		goto fail;
	if (!memcmp(magic, "\x28\xb5\x2f\xfd", 4)) {
		r = pump_start(PUMP_DECOMPRESS, fd, 0, dump, &pump, &qemu_fd, err);
		if (r < 0)
			goto fail;
	}
	r = migrate_pass(q, DUMP_FD_NAME, pump ? qemu_fd : fd, !pump, &tgt, err);
	closep(&qemu_fd);
	if (r < 0)
		goto fail;
	r = migrate_run(q, &tgt,
			 &(struct mig_wait){.incoming = true,
					    .timeout_s = timeout > 0 ? timeout : DEFAULT_DUMP_TIMEOUT,
					    .phase = "load dump",
					    .fd = fd,
					    .pump = pump},
			 err);
	if (r < 0)
		goto fail;
	migrate_release(q, &tgt);
	return pump_finish(TAKE_PTR(pump), now_ms() + PUMP_END_MS, -1, err);
fail:
	{
		qsnap_error e2;
		bool died = !vm_qemu_alive(vm);

		vm_kill_qemu(vm, 1, &e2);
		closep(&qemu_fd);
		if (pump && pump_discard(TAKE_PTR(pump), now_ms() + UNDO_GRACE_MS, &e2) < 0)
			qerr(err, e2.code, "%s", e2.msg);
		else if (died)
			vm_err_qemu_log(vm, err);
		return qerr_prefix(err, "loading the dump %s failed", dump);
	}
}
