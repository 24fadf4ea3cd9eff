/* SPDX-License-Identifier: MIT */
/* A program that embeds libqsnap, built against an installed copy with
 *   cc embed.c $(pkg-config --cflags --libs qsnap)
 * (tests/integration/test_embed.py). It creates a VM with the test guest,
 * starts it, saves it, changes the guest, restores it and checks that the
 * guest is back; then saves in the background and restores that too.
 * Usage: embed VMDIR BASE-IMAGE KERNEL INITRD ACCEL
 * Prints one line per step; exits 0 when every check held. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <qsnap.h>

static const char *vmdir;

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "embed: ");
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Phases seen by the progress callback, as the enum says them. */
static unsigned seen[QSNAP_PHASE_DOWNLOAD + 1];

static void progress(const qsnap_progress *p, void *userdata)
{
	qsnap_phase ph = qsnap_progress_phase(p);

	(void)userdata;
	if (ph > QSNAP_PHASE_DOWNLOAD)
		die("qsnap_progress_phase('%s') = %d, not a qsnap_phase", p->phase, (int)ph);
	seen[ph]++;
}

/* ---- The guest's shell on run/serial.sock ---- */

static int serial = -1;
static char buf[65536];
static size_t len;
static unsigned seq;

static void serial_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	double deadline = now() + 30;

	if (serial >= 0)
		close(serial);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/run/serial.sock", vmdir);
	for (;;) {
		serial = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (serial >= 0 && connect(serial, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(serial);
		if (now() > deadline)
			die("cannot connect to %s: %s", sa.sun_path, strerror(errno));
		usleep(50000);
	}
	len = 0;
}

/* Run cmd in the guest's shell; returns its output (static, without the
 * last newline). The markers are split by quotes so that the echo of the
 * typed line never matches, only the command's own output. */
static const char *guest(const char *cmd)
{
	static char out[4096];
	char line[1024], begin[32], end[32];
	double deadline = now() + 60;
	char *b, *e;

	seq++;
	snprintf(line, sizeof(line), "echo \"@@%u\"\"B\"; %s; echo \"@@%u\"\"E\"\n", seq, cmd, seq);
	snprintf(begin, sizeof(begin), "@@%uB\r\n", seq);
	snprintf(end, sizeof(end), "@@%uE\r\n", seq);
	if (write(serial, line, strlen(line)) != (ssize_t)strlen(line))
		die("cannot write to the guest's console: %s", strerror(errno));
	for (;;) {
		struct pollfd pfd = {.fd = serial, .events = POLLIN};
		ssize_t n;

		buf[len] = '\0';
		b = strstr(buf, begin);
		if (b && (e = strstr(b, end))) {
			b += strlen(begin);
			snprintf(out, sizeof(out), "%.*s", (int)(e - b), b);
			memmove(buf, e + strlen(end), len - (size_t)(e + strlen(end) - buf));
			len -= (size_t)(e + strlen(end) - buf);
			for (size_t l = strlen(out); l && (out[l - 1] == '\n' || out[l - 1] == '\r');)
				out[--l] = '\0';
			return out;
		}
		if (now() > deadline)
			die("the guest did not answer '%s' in 60 s", cmd);
		if (len == sizeof(buf) - 1) {
			memmove(buf, buf + len / 2, len - len / 2);
			len -= len / 2;
		}
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		n = read(serial, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			die("the guest's console closed");
		len += (size_t)n;
	}
}

/* Until the guest printed READY in run/serial.log. */
static void wait_ready(void)
{
	char path[4096], data[65536];
	double deadline = now() + 180;

	snprintf(path, sizeof(path), "%s/run/serial.log", vmdir);
	while (now() < deadline) {
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

static void expect(const char *cmd, const char *want)
{
	const char *got = guest(cmd);

	if (strcmp(got, want))
		die("guest '%s' says '%s', expected '%s'", cmd, got, want);
}

int main(int argc, char **argv)
{
	qsnap_error err = {0};
	qsnap_def *def;
	qsnap_vm *vm;
	qsnap_status *st;
	qsnap_background_save *bg;
	qsnap_snapshot_info **list;
	size_t n;
	char spec[4096];
	pid_t pid;

	if (argc != 6)
		die("usage: embed VMDIR BASE-IMAGE KERNEL INITRD ACCEL");
	vmdir = argv[1];

	printf("ok libqsnap %s\n", qsnap_version());
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
	ok(qsnap_vm_start(vm, &(qsnap_start_opts){.size = sizeof(qsnap_start_opts), .progress = progress},
			  &err),
	   "qsnap_vm_start", &err);
	wait_ready();
	serial_connect();
	guest("true");
	guest("X=saved-$RANDOM$RANDOM; echo disk > /mnt/file; sync");
	char x[64];
	snprintf(x, sizeof(x), "%s", guest("echo $X"));
	if (strncmp(x, "saved-", 6))
		die("the guest's shell variable is '%s'", x);

	qsnap_save_stats stats = QSNAP_SAVE_STATS_INIT;
	qsnap_save_opts so = QSNAP_SAVE_OPTS_INIT;
	so.progress = progress;
	so.stats = &stats;
	ok(qsnap_vm_save(vm, "one", &so, &err), "qsnap_vm_save", &err);
	if (!stats.bytes || stats.total <= 0)
		die("qsnap_vm_save filled no stats: %llu bytes, %.3f s",
		    (unsigned long long)stats.bytes, stats.total);
	if (!seen[QSNAP_PHASE_SAVE])
		die("no progress in phase QSNAP_PHASE_SAVE during qsnap_vm_save");
	guest("X=changed; rm /mnt/file; sync");

	ok(qsnap_vm_restore(vm, "one",
			    &(qsnap_restore_opts){.size = sizeof(qsnap_restore_opts), .progress = progress},
			    &err),
	   "qsnap_vm_restore", &err);
	if (!seen[QSNAP_PHASE_RESTORE])
		die("no progress in phase QSNAP_PHASE_RESTORE during qsnap_vm_restore");
	serial_connect();
	expect("echo $X", x);
	expect("cat /mnt/file", "disk");
	printf("ok restored guest: X=%s, /mnt/file back\n", x);

	/* A live save in the background; the VM handle goes with it. */
	guest("X=background");
	ok(qsnap_vm_save_background(&vm, "two",
				    &(qsnap_save_opts){.size = sizeof(qsnap_save_opts), .live = true},
				    &pid, &err),
	   "qsnap_vm_save_background", &err);
	if (vm)
		die("qsnap_vm_save_background left the handle to the caller");
	if (pid <= 0)
		die("qsnap_vm_save_background gave pid %d", (int)pid);
	/* Waits for the background save's lock. (The snapshot is the guest at
	 * the save's short pause, a moment after the call returned.) */
	ok(qsnap_vm_open(vmdir, 0, 600, &vm, &err), "qsnap_vm_open after the background save",
	   &err);
	guest("X=after-background");
	if (qsnap_vm_background_save(vm, &bg, &err) != 1)
		die("qsnap_vm_background_save shows no background save");
	if (bg->running || !bg->ok || strcmp(bg->name, "two"))
		die("background save: name %s, running %d, ok %d, error %s", bg->name, bg->running,
		    bg->ok, bg->error ? bg->error : "-");
	qsnap_background_save_free(bg);
	ok(qsnap_vm_list(vm, &list, &n, &err), "qsnap_vm_list", &err);
	if (n != 2 || strcmp(list[0]->name, "one") || strcmp(list[1]->name, "two"))
		die("snapshots: %zu, expected one and two", n);
	qsnap_snapshot_info_free(list, n);
	ok(qsnap_vm_restore(vm, "two", NULL, &err), "qsnap_vm_restore of the background save",
	   &err);
	serial_connect();
	expect("echo $X", "background");

	ok(qsnap_vm_status(vm, &st, &err), "qsnap_vm_status", &err);
	if (st->state != QSNAP_RUNNING || !st->current || strcmp(st->current, "two"))
		die("status: %s, current %s", qsnap_run_state_name(st->state),
		    st->current ? st->current : "(none)");
	qsnap_status_free(st);
	ok(qsnap_vm_stop(vm, 0, &err), "qsnap_vm_stop", &err);
	qsnap_vm_close(vm);
	printf("embed: all checks passed\n");
	return 0;
}
