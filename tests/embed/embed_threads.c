/* SPDX-License-Identifier: MIT */
/* A threaded program that embeds libqsnap (built like embed.c,
 * tests/integration/test_embed.py): four threads, each with its own VM,
 * start, save, restore, save again and stop at the same time; one of them
 * saves in the background (the helper program qsnap-saver, started while
 * the other threads work). Every call must work, and every QEMU, qemu-img,
 * console relay and saver started while the other threads allocate, lock
 * and start processes must come up.
 * Usage: embed_threads DIR BASE-IMAGE KERNEL INITRD ACCEL
 * (VMs in DIR/vm0 .. DIR/vm3, each on its own copy-on-write overlay of
 * BASE-IMAGE made by qsnap). Exits 0 when every thread's checks held. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qsnap.h>

#define THREADS 4

static char **args;

struct job {
	int n;
	char dir[4096];
	char failed[1200]; /* empty when every step worked */
};

static int step(struct job *j, int r, const char *what, const qsnap_error *err)
{
	if (r < 0 && !j->failed[0])
		snprintf(j->failed, sizeof(j->failed), "vm%d: %s failed (%d): %s", j->n, what, r,
			 err->msg);
	return r;
}

static int wait_ready(const char *dir)
{
	char path[4200], data[65536];
	time_t deadline = time(NULL) + 300;

	snprintf(path, sizeof(path), "%s/run/serial.log", dir);
	while (time(NULL) < deadline) {
		FILE *f = fopen(path, "re");

		if (f) {
			size_t n = fread(data, 1, sizeof(data) - 1, f);

			fclose(f);
			data[n] = '\0';
			if (strstr(data, "READY"))
				return 0;
		}
		usleep(100000);
	}
	return -1;
}

static void *run(void *p)
{
	struct job *j = p;
	qsnap_error err = {0};
	qsnap_background_save *bg = NULL;
	qsnap_def *def;
	qsnap_vm *vm = NULL;
	char spec[4200];
	pid_t pid;

	def = qsnap_def_new();
	if (!def) {
		snprintf(j->failed, sizeof(j->failed), "vm%d: qsnap_def_new: out of memory", j->n);
		goto out;
	}
	snprintf(spec, sizeof(spec), "vda=%s", args[2]);
	if (step(j, qsnap_def_set(def, "drive", spec, &err), "qsnap_def_set drive", &err) < 0 ||
	    step(j, qsnap_def_set(def, "memory", "256M", &err), "qsnap_def_set memory", &err) < 0 ||
	    step(j, qsnap_def_set(def, "kernel", args[3], &err), "qsnap_def_set kernel", &err) < 0 ||
	    step(j, qsnap_def_set(def, "initrd", args[4], &err), "qsnap_def_set initrd", &err) < 0 ||
	    step(j, qsnap_def_set(def, "append", "console=ttyS0 quiet", &err), "qsnap_def_set append",
		 &err) < 0 ||
	    step(j, qsnap_def_set(def, "accel", args[5], &err), "qsnap_def_set accel", &err) < 0)
		goto out;
	if (step(j, qsnap_vm_create(j->dir, def, &err), "qsnap_vm_create", &err) < 0 ||
	    step(j, qsnap_vm_open(j->dir, 0, 60, &vm, &err), "qsnap_vm_open", &err) < 0 ||
	    step(j, qsnap_vm_start(vm, NULL, &err), "qsnap_vm_start", &err) < 0)
		goto out;
	if (wait_ready(j->dir) < 0) {
		snprintf(j->failed, sizeof(j->failed), "vm%d: the guest printed no READY", j->n);
		goto out;
	}
	if (step(j, qsnap_vm_save(vm, "a", NULL, &err), "qsnap_vm_save a", &err) < 0 ||
	    step(j, qsnap_vm_restore(vm, "a", NULL, &err), "qsnap_vm_restore a", &err) < 0)
		goto out;
	if (j->n == 0) {
		/* The background save takes the handle: vm is NULL afterwards,
		 * whether it worked or not. */
		if (step(j,
			 qsnap_vm_save_background(
				 &vm, "b",
				 &(qsnap_save_opts){.size = sizeof(qsnap_save_opts), .live = true},
				 &pid, &err),
			 "qsnap_vm_save_background b", &err) < 0)
			goto out;
		if (step(j, qsnap_vm_open(j->dir, 0, 600, &vm, &err), "qsnap_vm_open after it",
			 &err) < 0)
			goto out;
		if (qsnap_vm_background_save(vm, &bg, &err) != 1 || !bg || bg->running || !bg->ok) {
			snprintf(j->failed, sizeof(j->failed), "vm0: the background save: %s",
				 bg && bg->error ? bg->error : "no result");
			goto out;
		}
		qsnap_background_save_free(bg);
	} else if (step(j, qsnap_vm_save(vm, "b", NULL, &err), "qsnap_vm_save b", &err) < 0)
		goto out;
	if (step(j, qsnap_vm_restore(vm, "b", NULL, &err), "qsnap_vm_restore b", &err) < 0 ||
	    step(j, qsnap_vm_restore(vm, "a", NULL, &err), "qsnap_vm_restore a again", &err) < 0)
		goto out;
	step(j, qsnap_vm_stop(vm, 30, &err), "qsnap_vm_stop", &err);
out:
	qsnap_def_free(def);
	if (vm)
		qsnap_vm_close(vm);
	return NULL;
}

int main(int argc, char **argv)
{
	static struct job jobs[THREADS];
	pthread_t t[THREADS];
	int failed = 0;

	if (argc != 6) {
		fprintf(stderr, "usage: embed_threads DIR BASE-IMAGE KERNEL INITRD ACCEL\n");
		return 2;
	}
	args = argv;
	for (int i = 0; i < THREADS; i++) {
		jobs[i].n = i;
		snprintf(jobs[i].dir, sizeof(jobs[i].dir), "%s/vm%d", argv[1], i);
		if (pthread_create(&t[i], NULL, run, &jobs[i])) {
			fprintf(stderr, "embed_threads: cannot start thread %d\n", i);
			return 1;
		}
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		if (jobs[i].failed[0]) {
			fprintf(stderr, "embed_threads: %s\n", jobs[i].failed);
			failed = 1;
		} else
			printf("ok vm%d: start, save, restore, %s, restore, stop\n", i,
			       i == 0 ? "background save" : "save");
	}
	if (!failed)
		printf("embed_threads: all checks passed\n");
	return failed;
}
