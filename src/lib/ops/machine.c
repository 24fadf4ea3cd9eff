/* SPDX-License-Identifier: MIT */
/* The VM's QEMU, what every operation uses: launching it for this VM
 * directory, the QMP connection, its run state, letting it run, ending it
 * (its shared RAM file: machine_ram.c). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "ops/ops.h"

#define DEFAULT_START_TIMEOUT 60
#define DEFAULT_STOP_TIMEOUT 10
/* Starts the lines of each new QEMU in run/qemu.log. */
#define LOG_MARK "--- qsnap: starting QEMU"

const char *vm_machine(const qsnap_def *def, const struct state *st)
{
	const char *from = def->machine ? def->machine : "";

	if (st->machine && st->machine_for && !strcmp(st->machine_for, from))
		return st->machine;
	return def->machine;
}

int vm_argv(qsnap_vm *vm, const struct launch *l, char ***ret_argv, qsnap_error *err)
{
	size_t n = vm->def.n_drives;
	_cleanup_free_ struct qemu_chain *chains = xcalloc(n ? n : 1, sizeof(*chains));
	struct qemu_cmd c = {
		.def = &vm->def,
		.chains = chains,
		.machine = l->machine ? l->machine : vm_machine(&vm->def, &vm->st),
		.qmp_socket = VMDIR_QMP_SOCK,
		.pid_file = VMDIR_QEMU_PID,
		.incoming = l->incoming,
		.ram_file = l->ram_file,
		.ram_share = l->ram_share,
		.ram_readonly = l->ram_readonly,
		.ram_prealloc = l->ram_prealloc,
		.readonly_disks = l->readonly_disks,
	};
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++) {
		const qsnap_drive_def *d = &vm->def.drives[i];
		struct active *a = d->readonly ? NULL : state_active(&vm->st, d->id);

		if (!d->readonly && !a)
			r = qerr(err, EINVAL, "state.json has no active layer for drive '%s'", d->id);
		else if (a)
			chains[i].n = chain_layers(&vm->st, a->layer, &chains[i].layers);
	}
	if (r == 0)
		*ret_argv = qemu_argv(&c);
	for (size_t i = 0; i < n; i++)
		free(chains[i].layers);
	return r;
}

void vm_qmp_close(qsnap_vm *vm)
{
	qmp_free(vm->qmp);
	vm->qmp = NULL;
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

/* The QMP socket path; through /proc/self/fd when the directory's path is
 * too long for a unix socket address. */
static char *qmp_socket_path(qsnap_vm *vm)
{
	char *p = vm_path(vm, VMDIR_QMP_SOCK);

	if (strlen(p) < sizeof(((struct sockaddr_un *)0)->sun_path))
		return p;
	free(p);
	return xasprintf("/proc/self/fd/%d/" VMDIR_QMP_SOCK, vm->dirfd);
}

static int vm_qmp_connect(qsnap_vm *vm, int timeout_ms, qsnap_error *err)
{
	_cleanup_free_ char *path = qmp_socket_path(vm);

	int r = qemu_connect(path, timeout_ms, vm->st.qemu_pid, vm->st.qemu_start,
			     vm->qmp_bounds.cancel_fd, &vm->qmp, err);

	if (r < 0)
		return r;
	qmp_bound(vm->qmp, vm->qmp_bounds);
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
	_cleanup_free_ char *tail = file_tail(vm->dirfd, VMDIR_QEMU_LOG, 1000);
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
	mkdirat(vm->dirfd, VMDIR_RUN, 0700);
	fchmodat(vm->dirfd, VMDIR_RUN, 0700, 0);
	r = vm_argv(vm, l, &argv, err);
	if (r < 0)
		return r;
	/* A line in the log marks where this QEMU's messages begin. */
	{
		_cleanup_close_ int log = openat(vm->dirfd, VMDIR_QEMU_LOG,
						 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (log >= 0)
			dprintf(log, LOG_MARK "%s\n", l->incoming ? " -incoming defer" : "");
	}
	if (vm->def.serial) {
		_cleanup_free_ char *sock = vm_path(vm, VMDIR_SERIAL_SOCK);
		_cleanup_free_ char *log = vm_path(vm, VMDIR_SERIAL_LOG);

		r = console_start(sock, log,
				  vm->def.serial_log_max ? vm->def.serial_log_max
							 : QSNAP_DEFAULT_SERIAL_LOG_MAX,
				  &console, err);
		if (r < 0) {
			strv_free(argv);
			return r;
		}
	}
	r = qemu_spawn(vm->dir, argv, VMDIR_QEMU_LOG, console, &pid, &start, err);
	strv_free(argv);
	if (r < 0)
		return r;
	vm->st.qemu_pid = pid;
	vm->st.qemu_start = start;
	free(vm->st.ram_file);
	vm->st.ram_file = xstrdup_or_null(l->ram_file);
	vm->st.ram_shared = l->ram_file && l->ram_share;
	free(TAKE_PTR(vm->st.ram_parent)); /* a restore sets it once loaded */
	vm->st.inspect = l->readonly_disks;
	if (start == 0) {
		vm_forget_qemu(vm);
		r = qerr(err, ECHILD, "QEMU exited at once");
		return vm_err_qemu_log(vm, err);
	}
	r = vm_write_state(vm, err);
	if (r < 0) {
		proc_signal(pid, start, SIGKILL);
		vm_forget_qemu(vm);
		return r;
	}
	r = vm_qmp_connect(vm, (l->timeout > 0 ? l->timeout : DEFAULT_START_TIMEOUT) * 1000, err);
	if (r < 0) {
		qsnap_error e2;

		if (r == -ECANCELED) {
			vm_kill_qemu(vm, 1, &e2);
			return qerr_prefix(err, "starting QEMU");
		}
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
	int r;

	if (pid > 0 && proc_alive(pid, start)) {
		struct qmp *q;
		qsnap_error e2;

		if (vm->qmp || vm_qmp_connect(vm, 2000, &e2) == 0) {
			q = vm->qmp;
			qmp_execute(q, "quit", NULL, NULL, 2000, &e2);
		}
		vm_qmp_close(vm);
		/* A cancelled wait kills QEMU at once: a stop always ends
		 * with the VM stopped. */
		r = proc_wait_gone(pid, start, (timeout > 0 ? timeout : DEFAULT_STOP_TIMEOUT) * 1000,
				   vm_cancel_fd(vm));
		if (r < 0) {
			proc_signal(pid, start, SIGKILL);
			if (proc_wait_gone(pid, start, 10000, -1) < 0)
				return qerr(err, EBUSY, "QEMU (pid %d) does not end even after SIGKILL",
					    (int)pid);
		}
	}
	vm_forget_qemu(vm);
	return vm_write_state(vm, err);
}

int vm_cont(qsnap_vm *vm, qsnap_error *err)
{
	struct qmp *q;
	int r = vm_qmp(vm, &q, err);

	return r < 0 ? r : qmp_execute(q, "cont", NULL, NULL, 0, err);
}

/* The QEMU that run/qemu.pid names, if it is one that qsnap started for
 * this VM and state.json does not know: a command was interrupted between
 * starting it and recording it. It holds the VM's layers and sockets, so it
 * ends. A QEMU of ours runs in the VM directory with -qmp on run/qmp.sock;
 * that check also guards against a reused pid. */
void machine_end_orphan(qsnap_vm *vm)
{
	_cleanup_free_ char *text = NULL, *cmdline = NULL;
	char link[64], cwd[PATH_MAX];
	unsigned long long start;
	qsnap_error e2;
	size_t len;
	ssize_t n;
	long pid;

	if (read_file(vm->dirfd, VMDIR_QEMU_PID, &text, NULL, &e2) < 0)
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
		if (!strncmp(a, "unix:" VMDIR_QMP_SOCK ",", strlen("unix:" VMDIR_QMP_SOCK ","))) {
			proc_signal((pid_t)pid, start, SIGKILL);
			proc_wait_gone((pid_t)pid, start, 10000, -1);
			return;
		}
}

int machine_recover(qsnap_vm *vm, qsnap_error *err)
{
	/* The QEMU that state.json names is gone (it crashed, or was killed). */
	if (!vm->st.qemu_pid || vm_qemu_alive(vm))
		return 0;
	vm_forget_qemu(vm);
	return vm_write_state(vm, err);
}
