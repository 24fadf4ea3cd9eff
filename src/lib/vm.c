/* SPDX-License-Identifier: MIT */
/* A VM directory: creating it, opening it under its lock, recovering from
 * an interrupted command, and the QEMU that runs it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "internal.h"
#include "qmp.h"

#define DEFAULT_START_TIMEOUT 60
#define DEFAULT_STOP_TIMEOUT 10
/* Starts the lines of each new QEMU in run/qemu.log. */
#define LOG_MARK "--- qsnap: starting QEMU"

char *vm_path(qsnap_vm *vm, const char *rel)
{
	return xasprintf("%s/%s", vm->dir, rel);
}

const qsnap_def *qsnap_vm_def(qsnap_vm *vm)
{
	return &vm->def;
}

const char *qsnap_vm_dir(qsnap_vm *vm)
{
	return vm->dir;
}

int vm_write_state(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = state_to_json(&vm->st, &text, err);
	if (r < 0)
		return r;
	r = write_file_atomic(vm->dirfd, "state.json", text, strlen(text), err);
	return r < 0 ? qerr_prefix(err, "saving the state of %s", vm->dir) : 0;
}

/* Find out the format of an image with qemu-img. */
static int image_format(const char *qemu, const char *path, char **ret_format, qsnap_error *err)
{
	_cleanup_free_ char *img = qemu_img_for(qemu);
	char *argv[] = {img, "info", "-U", "--output=json", (char *)path, NULL};
	_cleanup_free_ char *out = NULL;
	_cleanup_json_ json_object *o = NULL;
	const char *fmt;
	int r;

	r = run_program(NULL, argv, &out, err);
	if (r < 0)
		return r;
	o = json_tokener_parse(out);
	fmt = jstr(o, "format");
	if (!fmt)
		return qerr(err, EINVAL, "qemu-img info %s gave no format", path);
	*ret_format = xstrdup(fmt);
	return 0;
}

static int check_drive_formats(qsnap_def *def, qsnap_error *err)
{
	for (size_t i = 0; i < def->n_drives; i++) {
		qsnap_drive_def *d = &def->drives[i];
		_cleanup_free_ char *fmt = NULL;
		int r = image_format(def->qemu, d->path, &fmt, err);

		if (r == -ENOENT) /* qemu-img itself is missing: the message says so */
			return r;
		if (r < 0)
			return qerr_prefix(err, "drive '%s': %s is not a readable disk image", d->id,
					   d->path);
		if (strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))
			return qerr(err, EINVAL, "drive '%s': %s is a %s image; qsnap takes qcow2 or raw (convert it with qemu-img convert -O qcow2)",
				    d->id, d->path, fmt);
		if (d->format && strcmp(d->format, fmt))
			return qerr(err, EINVAL, "drive '%s': %s is %s, not %s as given: fix format= or leave it out",
				    d->id, d->path, fmt, d->format);
		if (!d->format)
			d->format = TAKE_PTR(fmt);
	}
	return 0;
}

/* QEMU runs in the VM directory: user paths must not be relative. */
static void make_absolute(char **path)
{
	char real[PATH_MAX];

	if (*path && (*path)[0] != '/' && realpath(*path, real)) {
		free(*path);
		*path = xstrdup(real);
	}
}

static int mkdir_vm(const char *dir, bool *ret_created, qsnap_error *err)
{
	DIR *d;
	struct dirent *de;

	if (mkdir(dir, 0755) == 0) {
		*ret_created = true;
		return 0;
	}
	if (errno != EEXIST)
		return qerr(err, errno, "cannot create %s: %s", dir, strerror(errno));
	d = opendir(dir);
	if (!d && errno == ENOTDIR)
		return qerr(err, EEXIST, "%s exists and is not a directory: choose a new directory", dir);
	if (!d)
		return qerr(err, errno, "cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			return qerr(err, EEXIST, "%s exists and is not empty: choose a new directory",
				    dir);
		}
	closedir(d);
	*ret_created = false;
	return 0;
}

int qsnap_vm_create(const char *dir, const qsnap_def *def_in, qsnap_error *err)
{
	qsnap_vm vm = {.dirfd = -1, .lockfd = -1};
	_cleanup_free_ char *text = NULL;
	bool created = false;
	char real[PATH_MAX];
	int r;

	/* Work on a copy: drive formats get filled in, paths made absolute. */
	def_copy(&vm.def, def_in);
	make_absolute(&vm.def.kernel);
	make_absolute(&vm.def.initrd);

	r = vmdef_check(&vm.def, err);
	if (r < 0)
		goto out;
	r = check_drive_formats(&vm.def, err);
	if (r < 0)
		goto out;
	r = mkdir_vm(dir, &created, err);
	if (r < 0)
		goto out;
	if (!realpath(dir, real)) {
		r = qerr(err, errno, "cannot resolve %s: %s", dir, strerror(errno));
		goto out;
	}
	vm.dir = xstrdup(real);
	vm.dirfd = open(vm.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (vm.dirfd < 0 || mkdirat(vm.dirfd, "layers", 0755) < 0 ||
	    mkdirat(vm.dirfd, "snapshots", 0755) < 0 || mkdirat(vm.dirfd, "run", 0700) < 0) {
		r = qerr(err, errno, "cannot create the layout of %s: %s", dir, strerror(errno));
		goto undo;
	}
	r = vmdef_to_json(&vm.def, &text, err);
	if (r < 0)
		goto undo;
	r = write_file_atomic(vm.dirfd, "vm.json", text, strlen(text), err);
	if (r < 0)
		goto undo;
	for (size_t i = 0; i < vm.def.n_drives; i++) {
		_cleanup_free_ char *layer = NULL;

		if (vm.def.drives[i].readonly)
			continue;
		r = chain_new_layer(&vm, &vm.def.drives[i], NULL, &layer, err);
		if (r < 0)
			goto undo;
		state_set_active(&vm.st, vm.def.drives[i].id, layer);
	}
	r = vm_write_state(&vm, err);
	if (r < 0)
		goto undo;
	r = 0;
	goto out;
undo:
	/* Leave nothing behind: the directory as it was before. */
	if (vm.dirfd >= 0) {
		for (const char *const *p = (const char *const[]){"layers", "snapshots", "run",
								    "vm.json", "state.json",
								    "vm.json.tmp", "state.json.tmp", NULL};
		     *p; p++)
			rm_rf(vm.dirfd, *p);
	}
	if (created)
		rmdir(dir);
out:
	if (vm.dirfd >= 0)
		close(vm.dirfd);
	free(vm.dir);
	qsnap_def_free(&vm.def);
	state_free(&vm.st);
	return r;
}

static int take_lock(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	int64_t deadline = now_ms() + (int64_t)timeout * 1000;

	vm->lockfd = openat(vm->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (vm->lockfd < 0)
		return qerr(err, errno, "cannot open %s/lock: %s", vm->dir, strerror(errno));
	while (flock(vm->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return qerr(err, errno, "cannot lock %s: %s", vm->dir, strerror(errno));
		if (now_ms() >= deadline)
			return qerr(err, EBUSY, "%s is busy: another qsnap command is working on it (waited %d s; try again, or raise --lock-timeout)",
				    vm->dir, timeout);
		sleep_ms(50);
	}
	return 0;
}

/* The QEMU that run/qemu.pid names, if it is one that qsnap started for
 * this VM and state.json does not know: a command was interrupted between
 * starting it and recording it. It holds the VM's layers and sockets, so it
 * ends. A QEMU of ours runs in the VM directory with -qmp on run/qmp.sock;
 * that check also guards against a reused pid. */
static void end_orphan_qemu(qsnap_vm *vm)
{
	_cleanup_free_ char *text = NULL, *cmdline = NULL;
	char link[64], cwd[PATH_MAX];
	unsigned long long start;
	qsnap_error e2;
	size_t len;
	ssize_t n;
	long pid;

	if (read_file(vm->dirfd, "run/qemu.pid", &text, NULL, &e2) < 0)
		return;
	pid = strtol(text, NULL, 10);
	if (pid <= 0 || pid > INT_MAX || pid == vm->st.qemu_pid)
		return;
	start = proc_start_time((pid_t)pid);
	snprintf(link, sizeof(link), "/proc/%ld/cwd", pid);
	n = readlink(link, cwd, sizeof(cwd) - 1);
	if (!start || n < 0)
		return;
	cwd[n] = '\0';
	snprintf(link, sizeof(link), "/proc/%ld/cmdline", pid);
	if (strcmp(cwd, vm->dir) || read_file(AT_FDCWD, link, &cmdline, &len, &e2) < 0)
		return;
	for (const char *a = cmdline; a < cmdline + len; a += strlen(a) + 1)
		if (!strncmp(a, "unix:run/qmp.sock,", 18)) {
			kill((pid_t)pid, SIGKILL);
			proc_wait_gone((pid_t)pid, start, 10000);
			return;
		}
}

/* Files that an interrupted command made before state.json named them:
 * layers that qemu-img created for a save or a restore, a snapshot
 * directory renamed into place just before the state naming it was
 * written. Under the lock state.json is the whole truth, so a *.qcow2 in
 * layers/ or an entry of snapshots/ that it does not name is garbage (new
 * kinds of files in those two directories must be named in state.json). */
static void sweep_strays(qsnap_vm *vm)
{
	static const char *const dirs[] = {"layers", "snapshots"};

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int fd = openat(vm->dirfd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;

		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while ((de = readdir(d))) {
			_cleanup_free_ char *rel = xasprintf("%s/%s", dirs[i], de->d_name);
			const char *dot = strrchr(de->d_name, '.');
			bool known = false;

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (i == 0) {
				if (!dot || strcmp(dot, ".qcow2") || state_layer(&vm->st, rel))
					continue;
			} else {
				for (size_t j = 0; j < vm->st.n_snapshots; j++)
					known = known || !strcmp(vm->st.snapshots[j].dir, rel);
				if (known || (vm->st.pending && !strcmp(vm->st.pending, rel)))
					continue;
			}
			rm_rf(fd, de->d_name);
		}
		closedir(d);
	}
}

/* The interrupted command itself: a save, a start or a restore. */
static int recover_command(qsnap_vm *vm, qsnap_error *err)
{
	bool dirty = false;

	end_orphan_qemu(vm);
	if (vm->st.pending)
		/* A save that never committed: its files go, the snapshot never was. */
		return save_recover(vm, err);
	if (vm->st.qemu_pid && !vm_qemu_alive(vm)) {
		vm_forget_qemu(vm);
		dirty = true;
	} else if (vm->st.qemu_pid) {
		/* A QEMU still waiting for a restore's incoming state never got
		 * it: that restore was interrupted, so end it. */
		_cleanup_free_ char *status = NULL;
		bool running;
		qsnap_error e2;

		if (vm_query_status(vm, &status, &running, &e2) == 0 &&
		    !strcmp(status, "inmigrate")) {
			int r = vm_kill_qemu(vm, 2, err);
			if (r < 0)
				return r;
		}
	}
	return dirty ? vm_write_state(vm, err) : 0;
}

/* Finish or undo what an interrupted command left behind. */
static int recover(qsnap_vm *vm, qsnap_error *err)
{
	int r = recover_command(vm, err);

	if (r >= 0)
		sweep_strays(vm);
	return r;
}

int qsnap_vm_open(const char *dir, unsigned flags, int lock_timeout, qsnap_vm **ret_vm,
		  qsnap_error *err)
{
	qsnap_vm *vm = xcalloc(1, sizeof(*vm));
	_cleanup_free_ char *text = NULL, *what = NULL;
	char real[PATH_MAX];
	struct stat st;
	int r;

	vm->dirfd = vm->lockfd = -1;
	vm->readonly = flags & QSNAP_OPEN_READONLY;
	if (!realpath(dir, real)) {
		r = qerr(err, errno, "VM directory %s: %s", dir, strerror(errno));
		goto fail;
	}
	vm->dir = xstrdup(real);
	vm->dirfd = open(vm->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (vm->dirfd < 0) {
		r = qerr(err, errno, "VM directory %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (fstat(vm->dirfd, &st) == 0 && st.st_uid != geteuid()) {
		r = qerr(err, EPERM, "VM directory %s belongs to another user (uid %u): run qsnap as that user",
			 vm->dir, (unsigned)st.st_uid);
		goto fail;
	}
	if (faccessat(vm->dirfd, "vm.json", F_OK, 0) < 0) {
		r = qerr(err, ENOENT, "%s is not a qsnap VM directory (no vm.json): create one with qsnap init",
			 vm->dir);
		goto fail;
	}
	if (!vm->readonly) {
		r = take_lock(vm, lock_timeout, err);
		if (r < 0)
			goto fail;
	}
	what = vm_path(vm, "vm.json");
	r = read_file(vm->dirfd, "vm.json", &text, NULL, err);
	if (r < 0 || (r = vmdef_from_json(text, what, &vm->def, err)) < 0)
		goto fail;
	free(TAKE_PTR(text));
	free(what);
	what = vm_path(vm, "state.json");
	r = read_file(vm->dirfd, "state.json", &text, NULL, err);
	if (r < 0 || (r = state_from_json(text, what, &vm->st, err)) < 0)
		goto fail;
	if (!vm->readonly) {
		r = recover(vm, err);
		if (r < 0)
			goto fail;
	}
	*ret_vm = vm;
	return 0;
fail:
	qsnap_vm_close(vm);
	return r;
}

void vm_qmp_close(qsnap_vm *vm)
{
	qmp_free(vm->qmp);
	vm->qmp = NULL;
}

void qsnap_vm_close(qsnap_vm *vm)
{
	if (!vm)
		return;
	vm_qmp_close(vm);
	qsnap_def_free(&vm->def);
	state_free(&vm->st);
	if (vm->lockfd >= 0)
		close(vm->lockfd);
	if (vm->dirfd >= 0)
		close(vm->dirfd);
	free(vm->dir);
	free(vm);
}

bool vm_qemu_alive(qsnap_vm *vm)
{
	return vm->st.qemu_pid > 0 && proc_alive(vm->st.qemu_pid, vm->st.qemu_start);
}

void vm_forget_qemu(qsnap_vm *vm)
{
	vm_qmp_close(vm);
	vm->st.qemu_pid = 0;
	vm->st.qemu_start = 0;
	free(TAKE_PTR(vm->st.postmigrate));
	free(TAKE_PTR(vm->st.qemu_machine));
	vm->st.inspect = false;
	vm_drop_ram(vm);
}

void vm_drop_ram(qsnap_vm *vm)
{
	/* A shared RAM file is ours and dies with its QEMU (it holds the
	 * guest's whole memory in /dev/shm); a copy-on-write one is a
	 * snapshot's and stays. */
	if (vm->st.ram_file && vm->st.ram_shared) {
		unlinkat(vm->dirfd, vm->st.ram_file, 0);
		/* The default folder under /dev/shm is ours too (a --ram-dir is
		 * the user's): gone when empty, so none pile up. */
		if (!vm->def.ram_dir && vm->st.ram_file[0] == '/') {
			_cleanup_free_ char *dir = xstrdup(vm->st.ram_file);
			*strrchr(dir, '/') = '\0';
			rmdir(dir);
		}
	}
	free(TAKE_PTR(vm->st.ram_file));
	vm->st.ram_shared = false;
}

int vm_ram_dir(qsnap_vm *vm, char **ret, qsnap_error *err)
{
	_cleanup_free_ char *dir = NULL;
	struct stat st;

	if (vm->def.ram_dir) {
		dir = xstrdup(vm->def.ram_dir);
	} else {
		/* One private folder per VM directory (device and inode tell
		 * two apart even when they share a name). */
		_cleanup_free_ char *top = xasprintf("/dev/shm/qsnap-%u", (unsigned)geteuid());
		const char *base = strrchr(vm->dir, '/');

		if (mkdir(top, 0700) < 0 && errno != EEXIST)
			return qerr(err, errno, "cannot create %s: %s", top, strerror(errno));
		if (fstat(vm->dirfd, &st) < 0)
			return qerr(err, errno, "cannot stat %s: %s", vm->dir, strerror(errno));
		dir = xasprintf("%s/%s.%lx.%lx", top, base ? base + 1 : "vm", (unsigned long)st.st_dev,
				(unsigned long)st.st_ino);
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return qerr(err, errno, "cannot create the RAM directory %s: %s", dir, strerror(errno));
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return qerr(err, EPERM, "the RAM directory %s is not a directory of this user", dir);
	*ret = TAKE_PTR(dir);
	return 0;
}

int vm_new_ram_file(qsnap_vm *vm, char **ret_path, qsnap_error *err)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	r = vm_ram_dir(vm, &dir, err);
	if (r < 0)
		return r;
	path = xasprintf("%s/ram", dir);
	unlink(path);
	/* A guest that touches a page the RAM directory has no room for gets
	 * QEMU killed by SIGBUS: make sure all of it fits before starting. */
	r = ramfile_check_space(AT_FDCWD, dir, vm->def.memory, "the guest's RAM", err);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return qerr(err, errno, "cannot create %s: %s", path, strerror(errno));
	if (ftruncate(fd, (off_t)vm->def.memory) < 0) {
		r = qerr(err, errno, "cannot size %s: %s", path, strerror(errno));
		unlink(path);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}

/* The QMP socket path; through /proc/self/fd when the directory's path is
 * too long for a unix socket address. */
static char *qmp_socket_path(qsnap_vm *vm)
{
	char *p = vm_path(vm, "run/qmp.sock");

	if (strlen(p) < sizeof(((struct sockaddr_un *)0)->sun_path))
		return p;
	free(p);
	return xasprintf("/proc/self/fd/%d/run/qmp.sock", vm->dirfd);
}

static int vm_qmp_connect(qsnap_vm *vm, int timeout_ms, qsnap_error *err)
{
	_cleanup_free_ char *path = qmp_socket_path(vm);

	int r = qmp_connect(path, timeout_ms, vm->st.qemu_pid, vm->st.qemu_start, &vm->qmp, err);

	if (r < 0)
		return r;
	r = caps_learn(vm->qmp, err);
	if (r < 0)
		vm_qmp_close(vm);
	return r;
}

int vm_qmp(qsnap_vm *vm, struct qmp **ret, qsnap_error *err)
{
	int r;

	if (!vm->qmp) {
		if (!vm_qemu_alive(vm))
			return qerr(err, ESRCH, "the VM in %s is not running: start it with qsnap start",
				    vm->dir);
		r = vm_qmp_connect(vm, 10000, err);
		if (r < 0)
			return qerr_prefix(err, "connecting to QEMU of %s", vm->dir);
	}
	*ret = vm->qmp;
	return 0;
}

int vm_err_qemu_log(qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *tail = file_tail(vm->dirfd, "run/qemu.log", 1000);
	_cleanup_free_ char *msg = xstrdup(err->msg);
	const char *from = tail, *mark;

	if (!tail)
		return -err->code;
	/* Only what the last QEMU said. */
	while ((mark = strstr(from, LOG_MARK)))
		from = strchr(mark, '\n') ? strchr(mark, '\n') + 1 : mark + strlen(mark);
	if (!*from)
		return -err->code;
	return qerr(err, err->code, "%s; the end of %s/run/qemu.log says:\n%s", msg, vm->dir, from);
}

int vm_query_status(qsnap_vm *vm, char **ret_status, bool *ret_running, qsnap_error *err)
{
	_cleanup_json_ json_object *reply = NULL;
	struct qmp *q;
	const char *s;
	int r;

	r = vm_qmp(vm, &q, err);
	if (r < 0)
		return r;
	r = qmp_execute(q, "query-status", NULL, &reply, 0, err);
	if (r < 0)
		return r;
	s = jstr(reply, "status");
	*ret_status = xstrdup(s ? s : "unknown");
	*ret_running = jbool(reply, "running", false);
	return 0;
}

/* The first start records the versioned machine type vm.json's machine
 * resolves to (pc -> pc-i440fx-7.2 on QEMU 7.2), and the running QEMU's
 * type; a snapshot saved now then loads on a later QEMU too (QEMU 10.0
 * still has pc-i440fx-7.2). */
static int record_machine(qsnap_vm *vm, const struct launch *l, qsnap_error *err)
{
	const char *from = vm->def.machine ? vm->def.machine : "";
	const char *type = l->machine ? l->machine : vm_machine(&vm->def, &vm->st);
	_cleanup_free_ char *resolved = NULL;
	int r;

	r = caps_resolve_machine(vm->qmp, type, &resolved, err);
	if (r < 0)
		return r;
	free(vm->st.qemu_machine);
	vm->st.qemu_machine = xstrdup(resolved);
	if (!vm->st.machine || !vm->st.machine_for || strcmp(vm->st.machine_for, from)) {
		free(vm->st.machine);
		free(vm->st.machine_for);
		vm->st.machine = TAKE_PTR(resolved);
		vm->st.machine_for = xstrdup(from);
	}
	return vm_write_state(vm, err);
}

int vm_launch(qsnap_vm *vm, const struct launch *l, qsnap_error *err)
{
	_cleanup_close_ int console = -1;
	char **argv = NULL;
	pid_t pid;
	unsigned long long start;
	int r;

	/* run/ holds the QMP socket: the owner's alone, also in a directory
	 * that was copied or unpacked with looser modes. */
	mkdirat(vm->dirfd, "run", 0700);
	fchmodat(vm->dirfd, "run", 0700, 0);
	r = proc_build_argv(&vm->def, &vm->st, l, &argv, err);
	if (r < 0)
		return r;
	/* A line in the log marks where this QEMU's messages begin. */
	{
		_cleanup_close_ int log = openat(vm->dirfd, "run/qemu.log",
						 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (log >= 0)
			dprintf(log, LOG_MARK "%s\n", l->incoming ? " -incoming defer" : "");
	}
	if (vm->def.serial) {
		r = console_start(vm->dir, &console, err);
		if (r < 0) {
			strv_free(argv);
			return r;
		}
	}
	r = proc_spawn(vm->dir, argv, "run/qemu.log", console, &pid, &start, err);
	strv_free(argv);
	if (r < 0)
		return r;
	vm->st.qemu_pid = pid;
	vm->st.qemu_start = start;
	free(vm->st.ram_file);
	vm->st.ram_file = xstrdup_or_null(l->ram_file);
	vm->st.ram_shared = l->ram_file && l->ram_share;
	vm->st.inspect = l->readonly_disks;
	if (start == 0) {
		vm_forget_qemu(vm);
		r = qerr(err, ECHILD, "QEMU exited at once");
		return vm_err_qemu_log(vm, err);
	}
	r = vm_write_state(vm, err);
	if (r < 0) {
		kill(pid, SIGKILL);
		vm_forget_qemu(vm);
		return r;
	}
	r = vm_qmp_connect(vm, (l->timeout > 0 ? l->timeout : DEFAULT_START_TIMEOUT) * 1000, err);
	if (r < 0) {
		qsnap_error e2;

		if (!proc_alive(pid, start))
			qerr(err, ECHILD, "QEMU exited while starting");
		vm_kill_qemu(vm, 1, &e2);
		return vm_err_qemu_log(vm, err);
	}
	return record_machine(vm, l, err);
}

int vm_kill_qemu(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	pid_t pid = vm->st.qemu_pid;
	unsigned long long start = vm->st.qemu_start;

	if (pid > 0 && proc_alive(pid, start)) {
		struct qmp *q;
		qsnap_error e2;

		if (vm->qmp || vm_qmp_connect(vm, 2000, &e2) == 0) {
			q = vm->qmp;
			qmp_execute(q, "quit", NULL, NULL, 2000, &e2);
		}
		vm_qmp_close(vm);
		if (proc_wait_gone(pid, start, (timeout > 0 ? timeout : DEFAULT_STOP_TIMEOUT) * 1000) < 0) {
			kill(pid, SIGKILL);
			if (proc_wait_gone(pid, start, 10000) < 0)
				return qerr(err, EBUSY, "QEMU (pid %d) does not end even after SIGKILL",
					    (int)pid);
		}
	}
	vm_forget_qemu(vm);
	return vm_write_state(vm, err);
}

int qsnap_vm_stop(qsnap_vm *vm, int timeout, qsnap_error *err)
{
	return vm_kill_qemu(vm, timeout, err);
}

int vm_cont(qsnap_vm *vm, qsnap_error *err)
{
	struct qmp *q;
	int r = vm_qmp(vm, &q, err);

	return r < 0 ? r : qmp_execute(q, "cont", NULL, NULL, 0, err);
}

int qsnap_vm_start(qsnap_vm *vm, const qsnap_start_opts *opts, qsnap_error *err)
{
	static const qsnap_start_opts dflt = {0};
	_cleanup_free_ char *ram = NULL;
	struct launch l = {0};
	int r;

	if (!opts)
		opts = &dflt;
	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is already running (pid %d): stop it first, or use qsnap restore",
			    vm->dir, (int)vm->st.qemu_pid);
	if (opts->from) {
		qsnap_restore_opts ro = {.timeout = opts->timeout,
					 .lazy = opts->lazy,
					 .progress = opts->progress,
					 .userdata = opts->userdata};
		return restore_into(vm, opts->from, &ro, opts->paused, err);
	}
	vm_forget_qemu(vm);
	l.timeout = opts->timeout;
	if (vm->def.ram_mode == QSNAP_RAM_SHARED) {
		r = vm_new_ram_file(vm, &ram, err);
		if (r < 0)
			return r;
		l.ram_file = ram;
		l.ram_share = true;
	}
	r = vm_launch(vm, &l, err);
	if (r < 0) {
		if (ram)
			unlink(ram);
		return r;
	}
	if (!opts->paused) {
		r = vm_cont(vm, err);
		if (r < 0)
			return r;
	}
	return 0;
}

const char *qsnap_run_state_name(qsnap_run_state s)
{
	switch (s) {
	case QSNAP_RUNNING:
		return "running";
	case QSNAP_PAUSED:
		return "paused";
	case QSNAP_CRASHED:
		return "crashed";
	default:
		return "stopped";
	}
}

int qsnap_vm_status(qsnap_vm *vm, qsnap_status *ret, qsnap_error *err)
{
	qsnap_status st = {0};

	if (vm->st.qemu_pid) {
		if (!vm_qemu_alive(vm)) {
			st.state = QSNAP_CRASHED;
		} else {
			bool running = false;
			qsnap_error e2;
			int lockfd = -1;

			st.pid = vm->st.qemu_pid;
			/* QEMU serves one QMP client at a time: while another qsnap
			 * command holds the VM, do not wait behind it. */
			if (vm->readonly) {
				lockfd = openat(vm->dirfd, "lock", O_RDONLY | O_CLOEXEC);
				if (lockfd >= 0 && flock(lockfd, LOCK_SH | LOCK_NB) < 0) {
					st.qemu_status = xstrdup("busy");
					st.state = QSNAP_RUNNING;
				}
			}
			if (!st.qemu_status) {
				if (vm_query_status(vm, &st.qemu_status, &running, &e2) < 0)
					st.qemu_status = xstrdup("unreachable");
				st.state = running ? QSNAP_RUNNING : QSNAP_PAUSED;
			}
			if (lockfd >= 0)
				close(lockfd);
		}
	}
	st.current = xstrdup_or_null(vm->st.current);
	st.n_snapshots = vm->st.n_snapshots;
	st.ram_mode = vm->def.ram_mode;
	if (st.pid && vm->st.ram_file) {
		st.ram_file = xstrdup(vm->st.ram_file);
		st.ram_lazy = !vm->st.ram_shared;
	}
	st.drives = xcalloc(vm->def.n_drives, sizeof(*st.drives));
	for (size_t i = 0; i < vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		qsnap_drive_status *ds = &st.drives[st.n_drives++];
		struct active *a = d->readonly ? NULL : state_active(&vm->st, d->id);
		const char **layers = NULL;
		size_t n = chain_layers(&vm->st, a ? a->layer : NULL, &layers);

		ds->id = xstrdup(d->id);
		ds->readonly = d->readonly;
		ds->chain = xcalloc(n + 1, sizeof(char *));
		ds->chain[ds->n_chain++] = xstrdup(d->path);
		for (size_t j = 0; j < n; j++)
			ds->chain[ds->n_chain++] = xstrdup(layers[j]);
		free(layers);
	}
	(void)err;
	*ret = st;
	return 0;
}

void qsnap_status_free(qsnap_status *st)
{
	free(st->qemu_status);
	free(st->current);
	free(st->ram_file);
	for (size_t i = 0; i < st->n_drives; i++) {
		free(st->drives[i].id);
		for (size_t j = 0; j < st->drives[i].n_chain; j++)
			free(st->drives[i].chain[j]);
		free(st->drives[i].chain);
	}
	free(st->drives);
	memset(st, 0, sizeof(*st));
}

int qsnap_vm_qmp(qsnap_vm *vm, const char *command, const char *args_json, char **ret_json,
		 qsnap_error *err)
{
	_cleanup_json_ json_object *reply = NULL;
	json_object *args = NULL;
	struct qmp *q;
	int r;

	if (args_json) {
		args = json_tokener_parse(args_json);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			return qerr(err, EINVAL, "the arguments of '%s' must be a JSON object, e.g. '{\"device\": \"x\"}'",
				    command);
		}
	}
	r = vm_qmp(vm, &q, err);
	if (r < 0) {
		json_object_put(args);
		return r;
	}
	r = qmp_execute(q, command, args, &reply, 0, err);
	if (r < 0)
		return r;
	*ret_json = xstrdup(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY |
								     JSON_C_TO_STRING_NOSLASHESCAPE));
	return 0;
}

/* Check a changed definition and write it to vm.json; def is taken. */
static int replace_def(qsnap_vm *vm, qsnap_def def, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = vmdef_check(&def, err);
	if (r >= 0)
		r = vmdef_to_json(&def, &text, err);
	if (r >= 0)
		r = write_file_atomic(vm->dirfd, "vm.json", text, strlen(text), err);
	if (r < 0) {
		qsnap_def_free(&def);
		return r;
	}
	qsnap_def_free(&vm->def);
	vm->def = def;
	return 0;
}

int qsnap_vm_set_ram(qsnap_vm *vm, qsnap_ram_mode mode, const char *ram_dir, qsnap_error *err)
{
	qsnap_def def;

	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is running: stop it (or save it) before changing its RAM mode",
			    vm->dir);
	def_copy(&def, &vm->def);
	def.ram_mode = mode;
	free(def.ram_dir);
	def.ram_dir = xstrdup_or_null(ram_dir);
	return replace_def(vm, def, err);
}

int qsnap_vm_set_max_chain(qsnap_vm *vm, unsigned max_chain, qsnap_error *err)
{
	qsnap_def def;

	if (max_chain == 1 || max_chain > 1000)
		return qerr(err, EINVAL, "the chain limit must be 0 (default) or between 2 and 1000");
	def_copy(&def, &vm->def);
	def.max_chain = max_chain;
	return replace_def(vm, def, err);
}
