/* SPDX-License-Identifier: MIT */
/* A program that embeds libqsnap with the signal state that breaks naive
 * libraries: SIGCHLD ignored (the kernel then reaps every ordinary child
 * itself, and waitpid answers ECHILD), SIGTERM and SIGINT blocked, SIGHUP
 * ignored (all inherited by children unless they reset them). Built like
 * embed.c (tests/integration/test_embed.py).
 *
 * It creates, starts, saves (plain and background), publishes, restores and
 * stops a VM: every call must work; a qemu-img that fails must be a failure
 * with qemu-img's own words; QEMU and the console relay must start without
 * the caller's blocked or ignored signals.
 * Usage: embed_signals VMDIR BASE-IMAGE KERNEL INITRD ACCEL OUTPUT BAD-IMAGE
 * Prints one line per step; exits 0 when every check held. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qsnap.h>

static const char *vmdir;

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "embed_signals: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void ok(int r, const char *what, const qsnap_error *err)
{
	if (r < 0)
		die("%s failed (%d): %s", what, r, err->msg);
	printf("ok %s\n", what);
	fflush(stdout);
}

/* SigBlk or SigIgn of /proc/PID/status, as a mask (bit N-1: signal N). */
static unsigned long long sigmask_of(pid_t pid, const char *field)
{
	char path[64], line[256];
	unsigned long long m = 0;
	size_t len = strlen(field);
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		die("cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) && line[len] == ':')
			m = strtoull(line + len + 1, NULL, 16);
	fclose(f);
	return m;
}

#define BIT(sig) (1ULL << ((sig)-1))

/* What the caller blocked or ignored must not reach a child. QEMU blocks
 * a few signals of its own (SIGBUS, SIGUSR1, SIGALRM, SIGIO: it takes them
 * through a signalfd) and ignores SIGPIPE; the relay ignores SIGPIPE, the
 * background save SIGHUP. */
static void check_clean_but(pid_t pid, const char *who, unsigned long long may_ignore)
{
	unsigned long long blk = sigmask_of(pid, "SigBlk"), ign = sigmask_of(pid, "SigIgn");

	if (blk & (BIT(SIGTERM) | BIT(SIGINT) | BIT(SIGCHLD) | BIT(SIGHUP)))
		die("%s (pid %d) starts with the caller's blocked signals: SigBlk %016llx", who,
		    (int)pid, blk);
	if (ign & ~may_ignore)
		die("%s (pid %d) ignores more than it should: SigIgn %016llx", who, (int)pid, ign);
	printf("ok %s: SigBlk %016llx SigIgn %016llx\n", who, blk, ign);
}

/* The program pid runs, for the test to check (the relay and the
 * background save are the installed helper programs). */
static void print_exe(pid_t pid, const char *who)
{
	char path[64], exe[4096];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		die("cannot read %s: %s", path, strerror(errno));
	exe[n] = '\0';
	printf("exe of %s: %s\n", who, exe);
}

static void check_clean(pid_t pid, const char *who)
{
	check_clean_but(pid, who, BIT(SIGPIPE));
}

/* The console relay of this VM: the process whose fd 5 is run/serial.log. */
static pid_t relay_pid(void)
{
	char want[4096], link[300], got[4096];
	struct dirent *de;
	pid_t found = 0;
	DIR *d = opendir("/proc");

	snprintf(want, sizeof(want), "%s/run/serial.log", vmdir);
	while (d && (de = readdir(d))) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/%s/fd/5", de->d_name);
		n = readlink(link, got, sizeof(got) - 1);
		if (n > 0 && (got[n] = '\0', !strcmp(got, want)))
			found = (pid_t)atoi(de->d_name);
	}
	if (d)
		closedir(d);
	if (!found)
		die("no console relay holds %s", want);
	return found;
}

/* Alive and not a zombie waiting for its reaper (whoever adopted it). */
static int running(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void wait_ready(void)
{
	char path[4096], data[65536];
	time_t deadline = time(NULL) + 180;

	snprintf(path, sizeof(path), "%s/run/serial.log", vmdir);
	while (time(NULL) < deadline) {
		FILE *f = fopen(path, "re");

		if (f) {
			size_t n = fread(data, 1, sizeof(data) - 1, f);

			fclose(f);
			data[n] = '\0';
			if (strstr(data, "READY"))
				return;
		}
		usleep(100000);
	}
	die("the guest printed no READY in 180 s");
}

static void expect_state(qsnap_vm *vm, qsnap_run_state want, const char *current,
			 pid_t *ret_pid)
{
	qsnap_error err = {0};
	qsnap_status *st;

	ok(qsnap_vm_status(vm, &st, &err), "qsnap_vm_status", &err);
	if (st->state != want || (current && (!st->current || strcmp(st->current, current))))
		die("status: %s, current %s; expected %s, %s", qsnap_run_state_name(st->state),
		    st->current ? st->current : "(none)", qsnap_run_state_name(want),
		    current ? current : "-");
	if (ret_pid)
		*ret_pid = st->pid;
	qsnap_status_free(st);
}

int main(int argc, char **argv)
{
	qsnap_error err = {0};
	qsnap_background_save *bg = NULL;
	qsnap_def *def;
	qsnap_vm *vm;
	char spec[4096], bad_dir[4096];
	sigset_t block;
	pid_t pid, qemu;
	int r;

	if (argc != 8)
		die("usage: embed_signals VMDIR BASE-IMAGE KERNEL INITRD ACCEL OUTPUT BAD-IMAGE");
	vmdir = argv[1];

	signal(SIGCHLD, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);

	/* qemu-img fails on an image it cannot open: that is an error, with
	 * what qemu-img said, not a success or a made-up exit status. */
	def = qsnap_def_new();
	if (!def)
		die("qsnap_def_new: out of memory");
	snprintf(spec, sizeof(spec), "vda=%s", argv[7]);
	ok(qsnap_def_set(def, "drive", spec, &err), "qsnap_def_set drive (a damaged image)", &err);
	snprintf(bad_dir, sizeof(bad_dir), "%s-bad", vmdir);
	r = qsnap_vm_create(bad_dir, def, &err);
	if (r >= 0 || !strstr(err.msg, "qcow2"))
		die("qsnap_vm_create on a damaged image: %d, '%s'", r, r < 0 ? err.msg : "");
	printf("ok qemu-img's failure is an error: %s\n", err.msg);
	qsnap_def_free(def);

	def = qsnap_def_new();
	if (!def)
		die("qsnap_def_new: out of memory");
	snprintf(spec, sizeof(spec), "vda=%s", argv[2]);
	ok(qsnap_def_set(def, "drive", spec, &err), "qsnap_def_set drive", &err);
	ok(qsnap_def_set(def, "memory", "256M", &err), "qsnap_def_set memory", &err);
	ok(qsnap_def_set(def, "kernel", argv[3], &err), "qsnap_def_set kernel", &err);
	ok(qsnap_def_set(def, "initrd", argv[4], &err), "qsnap_def_set initrd", &err);
	ok(qsnap_def_set(def, "append", "console=ttyS0 quiet", &err), "qsnap_def_set append", &err);
	ok(qsnap_def_set(def, "accel", argv[5], &err), "qsnap_def_set accel", &err);
	ok(qsnap_vm_create(vmdir, def, &err), "qsnap_vm_create", &err);
	qsnap_def_free(def);

	ok(qsnap_vm_open(vmdir, 0, 60, &vm, &err), "qsnap_vm_open", &err);
	ok(qsnap_vm_start(vm, NULL, &err), "qsnap_vm_start", &err);
	wait_ready();
	expect_state(vm, QSNAP_RUNNING, NULL, &qemu);
	check_clean(qemu, "QEMU");
	check_clean(relay_pid(), "the console relay");
	print_exe(relay_pid(), "the console relay");

	ok(qsnap_vm_save(vm, "one", NULL, &err), "qsnap_vm_save", &err);
	/* It takes the handle: vm is closed here and set to NULL. */
	ok(qsnap_vm_save_background(&vm, "two",
				    &(qsnap_save_opts){.size = sizeof(qsnap_save_opts), .live = true},
				    &pid, &err),
	   "qsnap_vm_save_background", &err);
	/* It runs for a while yet (the live save of the guest's RAM); one
	 * that ended already cannot be looked at. */
	if (running(pid)) {
		check_clean_but(pid, "the background save", BIT(SIGHUP));
		print_exe(pid, "the background save");
	} else
		printf("the background save ended before its signal state was read\n");
	ok(qsnap_vm_open(vmdir, 0, 600, &vm, &err), "qsnap_vm_open after the background save",
	   &err);
	if (qsnap_vm_background_save(vm, &bg, &err) != 1 || !bg || bg->running || !bg->ok)
		die("background save: running %d, ok %d, error %s", bg ? bg->running : 0,
		    bg ? bg->ok : 0, bg && bg->error ? bg->error : "-");
	qsnap_background_save_free(bg);
	printf("ok the background save ended well\n");

	ok(qsnap_vm_publish(vm, "vda", argv[6],
			    &(qsnap_publish_opts){.size = sizeof(qsnap_publish_opts), .at = "one"},
			    &err),
	   "qsnap_vm_publish", &err);
	ok(qsnap_vm_restore(vm, "one", NULL, &err), "qsnap_vm_restore", &err);
	expect_state(vm, QSNAP_RUNNING, "one", &qemu);
	check_clean(qemu, "the restored QEMU");
	/* QEMU ends on quit, within the timeout, SIGTERM blocked here or not. */
	ok(qsnap_vm_stop(vm, 30, &err), "qsnap_vm_stop", &err);
	expect_state(vm, QSNAP_STOPPED, NULL, NULL);
	if (running(qemu))
		die("QEMU (pid %d) still runs after qsnap_vm_stop", (int)qemu);
	qsnap_vm_close(vm);
	printf("embed_signals: all checks passed\n");
	return 0;
}
