/* SPDX-License-Identifier: MIT */
/* qsnap_vm_cancel from another thread (tests/integration/test_embed.py):
 * a save and a restore cancelled while they work return -ECANCELED with
 * their work undone (no snapshot, nothing partial, the VM as before; a
 * restore leaves it stopped), a cancellation made before a call ends that
 * call at its first wait and only that one, and the same calls work
 * afterwards. Built against the installed library with -pthread.
 * Usage: embed_cancel VMDIR BASE-IMAGE KERNEL INITRD ACCEL
 * Prints one line per step; exits 0 when every check held. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <qsnap.h>

static const char *vmdir;

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "embed_cancel: ");
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
	double deadline = now() + 300;
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
			die("the guest did not answer '%s' in 300 s", cmd);
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

/* ---- The canceller: another thread, woken by the first progress report
 * of the call (so the call is under way) ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool armed, working, quit;
static double cancelled_at; /* when the canceller called qsnap_vm_cancel */
static qsnap_vm *target;

/* The first report of bytes done wakes the canceller, once per call, and
 * holds the call until the canceller has cancelled: else a call that ends
 * fast (a restore whose load takes less than one poll) can end before the
 * other thread gets to run, and nothing is left to cancel. */
static void progress(const qsnap_progress *p, void *userdata)
{
	(void)userdata;
	pthread_mutex_lock(&mu);
	if (armed && p->done > 0) {
		armed = false;
		working = true;
		pthread_cond_broadcast(&cv);
		while (working)
			pthread_cond_wait(&cv, &mu);
	}
	pthread_mutex_unlock(&mu);
}

static void *canceller(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (!working && !quit)
			pthread_cond_wait(&cv, &mu);
		if (quit)
			break;
		cancelled_at = now();
		qsnap_vm_cancel(target);
		working = false;
		pthread_cond_broadcast(&cv);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void arm(void)
{
	pthread_mutex_lock(&mu);
	armed = true;
	pthread_mutex_unlock(&mu);
}

/* After the call: no cancellation is on its way to a later call. */
static void disarm(void)
{
	pthread_mutex_lock(&mu);
	armed = false;
	while (working)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void expect_cancelled(int r, const char *what, const qsnap_error *err, double t0)
{
	if (r != -ECANCELED || err->code != ECANCELED || !strstr(err->msg, "cancelled"))
		die("%s: %d (%s), expected -ECANCELED", what, r, err->msg);
	printf("ok %s: -ECANCELED after %.1f s, %.1f s after the cancel: %s\n", what, now() - t0,
	       cancelled_at ? now() - cancelled_at : 0.0, err->msg);
	/* The undo's waits are bounded (10 s for QEMU to let go). */
	if (cancelled_at && now() - cancelled_at > 30)
		die("%s took %.1f s after the cancel", what, now() - cancelled_at);
	cancelled_at = 0;
	fflush(stdout);
}

static bool has_snapshot(qsnap_vm *vm, const char *name)
{
	qsnap_error err = {0};
	qsnap_snapshot_info **list;
	size_t n;
	bool found = false;

	ok(qsnap_vm_list(vm, &list, &n, &err), "qsnap_vm_list", &err);
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(list[i]->name, name);
	qsnap_snapshot_info_free(list, n);
	return found;
}

static void no_partial(void)
{
	char path[4200];
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "%s/snapshots", vmdir);
	d = opendir(path);
	if (!d)
		die("cannot open %s", path);
	while ((e = readdir(d)))
		if (strstr(e->d_name, "partial"))
			die("a partial snapshot is left: %s/%s", path, e->d_name);
	closedir(d);
}

static qsnap_run_state run_state(qsnap_vm *vm)
{
	qsnap_error err = {0};
	qsnap_status *st;
	qsnap_run_state s;

	ok(qsnap_vm_status(vm, &st, &err), "qsnap_vm_status", &err);
	s = st->state;
	qsnap_status_free(st);
	return s;
}

int main(int argc, char **argv)
{
	qsnap_error err = {0};
	qsnap_def *def;
	qsnap_vm *vm;
	pthread_t th;
	char spec[4096];
	double t0;
	int r;

	if (argc != 6)
		die("usage: embed_cancel VMDIR BASE-IMAGE KERNEL INITRD ACCEL");
	vmdir = argv[1];
	def = qsnap_def_new();
	if (!def)
		die("qsnap_def_new: out of memory");
	snprintf(spec, sizeof(spec), "vda=%s", argv[2]);
	ok(qsnap_def_set(def, "drive", spec, &err), "qsnap_def_set drive", &err);
	ok(qsnap_def_set(def, "memory", "512M", &err), "qsnap_def_set memory", &err);
	ok(qsnap_def_set(def, "kernel", argv[3], &err), "qsnap_def_set kernel", &err);
	ok(qsnap_def_set(def, "initrd", argv[4], &err), "qsnap_def_set initrd", &err);
	ok(qsnap_def_set(def, "append", "console=ttyS0 quiet", &err), "qsnap_def_set append", &err);
	ok(qsnap_def_set(def, "accel", argv[5], &err), "qsnap_def_set accel", &err);
	ok(qsnap_vm_create(vmdir, def, &err), "qsnap_vm_create", &err);
	qsnap_def_free(def);
	ok(qsnap_vm_open(vmdir, 0, 60, &vm, &err), "qsnap_vm_open", &err);
	target = vm;
	if (pthread_create(&th, NULL, canceller, NULL))
		die("cannot start a thread");

	/* A cancellation before the call: the next call ends at its first
	 * wait (here QEMU coming up), the VM stays stopped, and the one after
	 * it is not cancelled. */
	qsnap_vm_cancel(vm);
	t0 = now();
	expect_cancelled(qsnap_vm_start(vm, NULL, &err), "qsnap_vm_start cancelled before it began",
			 &err, t0);
	if (run_state(vm) != QSNAP_STOPPED)
		die("the VM runs after a cancelled start");
	ok(qsnap_vm_start(vm, NULL, &err), "qsnap_vm_start", &err);
	wait_ready();
	serial_connect();
	/* RAM worth saving, so that the save and the restore take a while. */
	guest("X=before-$RANDOM; dd if=/dev/urandom of=/tmp/big bs=1M count=200 2>/dev/null");
	char x[256];
	snprintf(x, sizeof(x), "%s", guest("echo $X"));
	ok(qsnap_vm_save(vm, "a", NULL, &err), "qsnap_vm_save a", &err);

	/* A save cancelled while QEMU writes it: no snapshot, nothing
	 * partial, the guest runs on as it was. */
	t0 = now();
	arm();
	r = qsnap_vm_save(vm, "b",
			  &(qsnap_save_opts){.size = sizeof(qsnap_save_opts), .compress = 19,
					     .progress = progress},
			  &err);
	disarm();
	expect_cancelled(r, "qsnap_vm_save b cancelled from another thread", &err, t0);
	if (has_snapshot(vm, "b"))
		die("the cancelled save left snapshot 'b'");
	no_partial();
	if (run_state(vm) != QSNAP_RUNNING)
		die("the guest does not run after the cancelled save");
	if (strcmp(guest("echo $X"), x))
		die("the guest changed in the cancelled save");
	printf("ok the cancelled save left no snapshot and the guest running as it was\n");

	/* The same save, not cancelled, works. */
	ok(qsnap_vm_save(vm, "b", &(qsnap_save_opts){.size = sizeof(qsnap_save_opts), .compress = 3},
			 &err),
	   "qsnap_vm_save b", &err);
	guest("X=after");

	/* A restore cancelled while QEMU loads the state: the VM is stopped,
	 * the snapshots are intact and restore. */
	t0 = now();
	arm();
	r = qsnap_vm_restore(vm, "a",
			     &(qsnap_restore_opts){.size = sizeof(qsnap_restore_opts),
						   .progress = progress},
			     &err);
	disarm();
	expect_cancelled(r, "qsnap_vm_restore a cancelled from another thread", &err, t0);
	if (run_state(vm) != QSNAP_STOPPED)
		die("the VM is not stopped after the cancelled restore");
	if (!has_snapshot(vm, "a") || !has_snapshot(vm, "b"))
		die("a snapshot went missing in the cancelled restore");
	ok(qsnap_vm_restore(vm, "a", NULL, &err), "qsnap_vm_restore a", &err);
	serial_connect();
	if (strcmp(guest("echo $X"), x))
		die("snapshot 'a' restored to '%s', saved '%s'", guest("echo $X"), x);
	printf("ok snapshot a restores after the cancelled restore\n");

	pthread_mutex_lock(&mu);
	quit = true;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(th, NULL);
	ok(qsnap_vm_stop(vm, 30, &err), "qsnap_vm_stop", &err);
	qsnap_vm_close(vm);
	printf("embed_cancel: all checks passed\n");
	return 0;
}
