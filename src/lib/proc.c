/* SPDX-License-Identifier: MIT */
/* The QEMU process: its command line, starting it detached, and telling
 * whether it still runs. A process is known by pid and start time, never by
 * a bare pid that may have been reused. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "internal.h"

static const char *const iface_device[] = {
	[QSNAP_IF_VIRTIO] = "virtio-blk-pci",
	[QSNAP_IF_SCSI] = "scsi-hd",
	[QSNAP_IF_IDE] = "ide-hd",
};

/* A value inside a QEMU option list: commas are doubled. */
static char *opt_escape(const char *s)
{
	char *out = xmalloc(strlen(s) * 2 + 1), *o = out;

	for (; *s; s++) {
		*o++ = *s;
		if (*s == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

/* -blockdev for every image of a drive's chain, each with a node name we
 * know (chain_node_name, chain_base_node), so that block jobs can name any
 * of them: the base image and all layers but the top read-only. */
static void push_blockdev(char ***argv, size_t *n, const struct state *st, size_t idx,
			  const qsnap_drive_def *d, const char *top, bool readonly)
{
	_cleanup_free_ char *base = opt_escape(d->path), *below = chain_base_node(idx);
	const char **layers = NULL;
	size_t n_layers = chain_layers((struct state *)st, top, &layers);

	strv_push(argv, n, "-blockdev");
	strv_pushf(argv, n, "driver=%s,node-name=%s,read-only=on,file.driver=file,file.filename=%s",
		   d->format, below, base);
	for (size_t i = 0; i < n_layers; i++) {
		char *node = chain_node_name(layers[i]);
		bool ro = readonly || i + 1 < n_layers;

		strv_push(argv, n, "-blockdev");
		strv_pushf(argv, n, "driver=qcow2,node-name=%s,%sfile.driver=file,file.filename=%s,backing=%s",
			   node, ro ? "read-only=on," : "", layers[i], below);
		free(below);
		below = node;
	}
	free(layers);
}

const char *vm_machine(const qsnap_def *def, const struct state *st)
{
	const char *from = def->machine ? def->machine : "";

	if (st->machine && st->machine_for && !strcmp(st->machine_for, from))
		return st->machine;
	return def->machine;
}

int proc_build_argv(const qsnap_def *def, const struct state *st, const struct launch *l,
		    char ***ret_argv, qsnap_error *err)
{
	char **argv = NULL;
	size_t n = 0, n_pflash = 0;
	bool scsi = false;
	_cleanup_free_ char *accel = xstrdup(def->accel);
	char *save = NULL;
	_cleanup_free_ char *machine = NULL;

	strv_push(&argv, &n, def->qemu ? def->qemu : "qemu-system-x86_64");
	/* Only what we ask for: no default NIC, VGA, monitor or config file. */
	strv_push(&argv, &n, "-nodefaults");
	strv_push(&argv, &n, "-no-user-config");
	strv_push(&argv, &n, "-display");
	strv_push(&argv, &n, "none");
	/* Every accelerator in the list, tried by QEMU in order. */
	for (char *a = strtok_r(accel, ":", &save); a; a = strtok_r(NULL, ":", &save)) {
		strv_push(&argv, &n, "-accel");
		strv_push(&argv, &n, a);
	}
	/* Guest RAM is always the backend "ram0", so that its RAM block has the
	 * same name in every mode and a snapshot loads into either. */
	{
		const char *type = l->machine ? l->machine : vm_machine(def, st);

		machine = type ? xasprintf("%s,memory-backend=ram0", type)
			       : xstrdup("memory-backend=ram0");
	}
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		struct active *a = d->readonly ? NULL : state_active((struct state *)st, d->id);

		if (d->iface != QSNAP_IF_PFLASH)
			continue;
		_cleanup_free_ char *node = a ? chain_node_name(a->layer) : chain_base_node(i);
		char *m = xasprintf("%s%spflash%zu=%s", machine ? machine : "", machine ? "," : "",
				    n_pflash++, node);
		free(machine);
		machine = m;
	}
	strv_push(&argv, &n, "-machine");
	strv_push(&argv, &n, machine);
	if (def->cpu) {
		strv_push(&argv, &n, "-cpu");
		strv_push(&argv, &n, def->cpu);
	}
	strv_push(&argv, &n, "-smp");
	strv_pushf(&argv, &n, "%u", def->smp);
	strv_push(&argv, &n, "-m");
	strv_pushf(&argv, &n, "%lluM", (unsigned long long)(def->memory >> 20));
	strv_push(&argv, &n, "-object");
	if (l->ram_file) {
		_cleanup_free_ char *path = opt_escape(l->ram_file);

		strv_pushf(&argv, &n, "memory-backend-file,id=ram0,size=%lluM,mem-path=%s,share=%s",
			   (unsigned long long)(def->memory >> 20), path, l->ram_share ? "on" : "off");
	} else {
		strv_pushf(&argv, &n, "memory-backend-ram,id=ram0,size=%lluM",
			   (unsigned long long)(def->memory >> 20));
	}
	strv_push(&argv, &n, "-qmp");
	strv_push(&argv, &n, "unix:run/qmp.sock,server=on,wait=off");
	strv_push(&argv, &n, "-pidfile");
	strv_push(&argv, &n, "run/qemu.pid");
	if (def->serial) {
		/* The console relay's socket pair, passed as fd 3 (console.c). */
		strv_push(&argv, &n, "-chardev");
		strv_push(&argv, &n, "socket,id=serial0,fd=" PROC_CONSOLE_FD_STR);
		strv_push(&argv, &n, "-serial");
		strv_push(&argv, &n, "chardev:serial0");
	}
	if (def->kernel) {
		strv_push(&argv, &n, "-kernel");
		strv_push(&argv, &n, def->kernel);
	}
	if (def->initrd) {
		strv_push(&argv, &n, "-initrd");
		strv_push(&argv, &n, def->initrd);
	}
	if (def->append) {
		strv_push(&argv, &n, "-append");
		strv_push(&argv, &n, def->append);
	}
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		struct active *a = NULL;

		if (!d->readonly) {
			a = state_active((struct state *)st, d->id);
			if (!a) {
				strv_free(argv);
				return qerr(err, EINVAL, "state.json has no active layer for drive '%s'",
					    d->id);
			}
		}
		push_blockdev(&argv, &n, st, i, d, a ? a->layer : NULL, l->readonly_disks);
		if (d->iface == QSNAP_IF_PFLASH)
			continue;
		_cleanup_free_ char *node = a ? chain_node_name(a->layer) : chain_base_node(i);
		if (d->iface == QSNAP_IF_SCSI && !scsi) {
			strv_push(&argv, &n, "-device");
			strv_push(&argv, &n, "virtio-scsi-pci,id=scsi0");
			scsi = true;
		}
		strv_push(&argv, &n, "-device");
		strv_pushf(&argv, &n, "%s,drive=%s,id=%s", iface_device[d->iface], node, d->id);
	}
	/* The vCPUs start only when qsnap says so (cont), after it is connected. */
	strv_push(&argv, &n, "-S");
	if (l->incoming) {
		strv_push(&argv, &n, "-incoming");
		strv_push(&argv, &n, "defer");
	}
	for (size_t i = 0; i < def->n_extra; i++)
		strv_push(&argv, &n, def->extra[i]);
	*ret_argv = argv;
	return 0;
}

unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	_cleanup_close_ int fd = -1;
	ssize_t len;
	char *p, state;
	unsigned long long start = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	len = read(fd, buf, sizeof(buf) - 1);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c", &state) != 1 || state == 'Z' || state == 'X')
		return 0;
	/* Field 22 (starttime); field 3 (state) is the first after ')'. */
	p += 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu", &start) != 1)
		return 0;
	return start;
}

bool proc_alive(pid_t pid, unsigned long long start)
{
	unsigned long long now;

	if (pid <= 0)
		return false;
	now = proc_start_time(pid);
	return now != 0 && (start == 0 || now == start);
}

int proc_wait_gone(pid_t pid, unsigned long long start, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (proc_alive(pid, start)) {
		/* Reap it if it happens to be our child. */
		waitpid(pid, NULL, WNOHANG);
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
	return 0;
}

int proc_spawn(const char *cwd, char *const argv[], const char *logpath, int console_fd,
	       pid_t *ret_pid, unsigned long long *ret_start, qsnap_error *err)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
	_cleanup_free_ char *prog = find_program(argv[0]);
	_cleanup_close_ int rd = -1, wr = -1;
	int p[2], status;
	pid_t child, qemu = 0;
	int child_err = 0;
	ssize_t n;

	if (!prog)
		return qerr(err, ENOENT, "%s not found: install the Debian package qemu-system-x86 (or set \"qemu\" in vm.json)",
			    argv[0]);
	if (pipe2(p, O_CLOEXEC) < 0)
		return qerr(err, errno, "cannot create a pipe: %s", strerror(errno));
	rd = p[0];
	wr = p[1];
	/* Fork twice so that QEMU is nobody's child here: it outlives this
	 * command, and no zombie is left when it exits. The intermediate child
	 * reports QEMU's pid, or the errno of a failed exec, over the pipe. */
	child = fork();
	if (child < 0)
		return qerr(err, errno, "cannot fork: %s", strerror(errno));
	if (child == 0) {
		pid_t gc;

		setsid();
		gc = fork();
		if (gc < 0) {
			int e = -errno;
			(void)!write(wr, &e, sizeof(e));
			_exit(1);
		}
		if (gc == 0) {
			int log, devnull;
			unsigned first = console_fd >= 0 ? PROC_CONSOLE_FD + 1 : 3;

			if (chdir(cwd) < 0)
				goto fail;
			log = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (log < 0 || devnull < 0)
				goto fail;
			if (dup2(devnull, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
				goto fail;
			/* The console's end as fd 3; the pipe is moved above it. */
			if (console_fd >= 0) {
				if (wr == PROC_CONSOLE_FD &&
				    (wr = fcntl(wr, F_DUPFD_CLOEXEC, PROC_CONSOLE_FD + 1)) < 0)
					goto fail;
				if (console_fd == PROC_CONSOLE_FD ? fcntl(console_fd, F_SETFD, 0) < 0
								  : dup2(console_fd, PROC_CONSOLE_FD) < 0)
					goto fail;
			}
			/* No other fd of ours leaks into QEMU; the pipe closes on exec. */
			if ((unsigned)wr > first)
				close_range(first, (unsigned)wr - 1, 0);
			close_range((unsigned)wr + 1 > first ? (unsigned)wr + 1 : first, ~0U, 0);
			signal(SIGPIPE, SIG_DFL);
			/* QEMU creates run/qmp.sock, the serial socket and its log
			 * with its umask: only the VM's owner may reach them. */
			umask(077);
			execve(prog, argv, envp);
		fail:;
			int e = errno;
			(void)!write(wr, &e, sizeof(e));
			_exit(127);
		}
		(void)!write(wr, &gc, sizeof(gc));
		_exit(0);
	}
	closep(&wr);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	n = read(rd, &qemu, sizeof(qemu));
	if (n != sizeof(qemu) || qemu <= 0)
		return qerr(err, n == sizeof(qemu) && qemu < 0 ? -qemu : EIO,
			    "cannot start %s", argv[0]);
	/* A second message means exec failed. */
	n = read(rd, &child_err, sizeof(child_err));
	if (n == sizeof(child_err))
		return qerr(err, child_err, "cannot run %s: %s", prog, strerror(child_err));
	*ret_pid = qemu;
	*ret_start = proc_start_time(qemu);
	return 0;
}
