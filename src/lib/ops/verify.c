/* SPDX-License-Identifier: MIT */
/* Verifying snapshots: every file a snapshot needs is there, intact, and
 * chained as state.json says. What is wrong goes into a report, one entry
 * per problem; only a check that cannot run at all is an error. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

/* The result of qemu-img check for one layer, kept because many snapshots
 * share layers. */
struct layer_result {
	char *path;
	char *problem; /* NULL: passed */
};

struct verify {
	qsnap_vm *vm;
	qsnap_verify_report rep;
	const qsnap_verify_opts *opts;
	struct layer_result *checked;
	size_t n_checked;
	/* progress over the machine state files */
	uint64_t done;
	struct progress progress; /* its total grows as files are found */
};

static void problem(struct verify *v, const char *snap, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void problem(struct verify *v, const char *snap, const char *file, const char *fmt, ...)
{
	qsnap_verify_problem *p;
	va_list ap;

	v->rep.problems =
		xrealloc(v->rep.problems, (v->rep.n_problems + 1) * sizeof(*v->rep.problems));
	p = v->rep.problems[v->rep.n_problems++] = xcalloc(1, sizeof(*p));
	p->snapshot = xstrdup(snap);
	/* Paths inside the VM directory are shown whole, so they can be opened. */
	p->file = file[0] == '/' ? xstrdup(file) : vm_path(v->vm, file);
	va_start(ap, fmt);
	if (vasprintf(&p->what, fmt, ap) < 0)
		abort();
	va_end(ap);
}

/* Not damage, but something verify could not check. */
static void note(struct verify *v, const char *snap, const char *file, const char *what)
{
	qsnap_verify_problem *p;

	v->rep.notes = xrealloc(v->rep.notes, (v->rep.n_notes + 1) * sizeof(*v->rep.notes));
	p = v->rep.notes[v->rep.n_notes++] = xcalloc(1, sizeof(*p));
	p->snapshot = xstrdup(snap);
	p->file = vm_path(v->vm, file);
	p->what = xstrdup(what);
}

static void report_progress(struct verify *x, bool finished)
{
	progress_report(&x->progress, x->done, finished);
}

static void on_read(uint64_t n, void *userdata)
{
	struct verify *v = userdata;

	v->done += n;
	report_progress(v, false);
}

/* A shared-RAM snapshot's RAM file: there, the guest's RAM size, and the
 * checksum recorded at save time (holes hashed as zeros, not read). */
static void check_ram(struct verify *v, const struct snapshot *s)
{
	_cleanup_free_ char *path = layout_in(s->dir, SNAP_RAM), *sum = NULL;
	_cleanup_close_ int fd = openat(v->vm->dirfd, path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	qsnap_error e2;

	v->rep.n_files++;
	if (fd < 0 || fstat(fd, &st) < 0) {
		problem(v, s->name, path, "%s", errno == ENOENT ? "missing" : strerror(errno));
		return;
	}
	if (s->memory && (uint64_t)st.st_size != s->memory) {
		problem(v, s->name, path, "has %lld bytes, but the guest had %llu: the file is damaged",
			(long long)st.st_size, (unsigned long long)s->memory);
		return;
	}
	if (!s->ram_checksum) {
		note(v, s->name, path, "RAM not checksummed (saved before qsnap recorded RAM checksums): only its size was checked");
		return;
	}
	if (checksum_fd_ex(fd, path, on_read, v, &sum, &e2) < 0) {
		problem(v, s->name, path, "%s", e2.msg);
		return;
	}
	if (strcmp(sum, s->ram_checksum))
		problem(v, s->name, path, "checksum %s differs from %s recorded at save time: the RAM file is damaged",
			sum, s->ram_checksum);
}

/* A machine state file (path): size and magic ("QEVM", or zstd's), then
 * the checksum (NULL: none recorded). */
static void check_stream(struct verify *v, const struct snapshot *s, const char *path,
			 uint64_t size, const char *checksum, bool compressed)
{
	_cleanup_free_ char *sum = NULL;
	_cleanup_close_ int fd = -1;
	char magic[4];
	struct stat st;
	qsnap_error e2;

	v->rep.n_files++;
	fd = openat(v->vm->dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		problem(v, s->name, path, "%s", errno == ENOENT ? "missing" : strerror(errno));
		return;
	}
	if (size && (uint64_t)st.st_size != size) {
		problem(v, s->name, path, "has %lld bytes, but %llu were saved: the file is damaged",
			(long long)st.st_size, (unsigned long long)size);
		v->done += (uint64_t)st.st_size;
		return;
	}
	if (pread(fd, magic, sizeof(magic), 0) != sizeof(magic) ||
	    memcmp(magic, compressed ? "\x28\xb5\x2f\xfd" : "QEVM", 4)) {
		problem(v, s->name, path, "is not a QEMU machine state (no %s header)",
			compressed ? "zstd" : "QEVM");
		return;
	}
	if (!checksum)
		return; /* saved before qsnap recorded checksums */
	if (checksum_fd_ex(fd, path, on_read, v, &sum, &e2) < 0) {
		problem(v, s->name, path, "%s", e2.msg);
		return;
	}
	if (strcmp(sum, checksum))
		problem(v, s->name, path, "checksum %s differs from %s recorded at save time: the file is damaged",
			sum, checksum);
}

/* Its own machine state, and a differential snapshot's older deltas. */
static void check_vmstate(struct verify *v, const struct snapshot *s)
{
	_cleanup_free_ char *path = snapshot_vmstate(s);

	check_stream(v, s, path, s->vmstate_size, s->vmstate_checksum, s->compressed);
	for (size_t k = 1; k <= s->n_ram_chain; k++) {
		_cleanup_free_ char *delta = snapshot_delta(s, k);

		check_stream(v, s, delta, s->ram_chain[k - 1].size, s->ram_chain[k - 1].checksum,
			     false);
	}
}

static void check_meta(struct verify *v, const struct snapshot *s)
{
	_cleanup_free_ char *path = xasprintf("%s/meta.json", s->dir);
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ json_object *o = NULL;
	const char *sum;
	qsnap_error e2;

	v->rep.n_files++;
	if (read_file(v->vm->dirfd, path, &text, NULL, &e2) < 0) {
		problem(v, s->name, path, "%s", e2.code == ENOENT ? "missing" : e2.msg);
		return;
	}
	o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		problem(v, s->name, path, "is not valid JSON");
		return;
	}
	if (!jstr(o, "name") || strcmp(jstr(o, "name"), s->name))
		problem(v, s->name, path, "names snapshot '%s', not '%s'",
			jstr(o, "name") ? jstr(o, "name") : "(none)", s->name);
	sum = jstr(o, "vmstate_checksum");
	if (s->vmstate_checksum && (!sum || strcmp(sum, s->vmstate_checksum)))
		problem(v, s->name, path, "records checksum %s, state.json %s",
			sum ? sum : "(none)", s->vmstate_checksum);
	sum = jstr(o, "ram_checksum");
	if (s->ram_checksum && (!sum || strcmp(sum, s->ram_checksum)))
		problem(v, s->name, path, "records RAM checksum %s, state.json %s",
			sum ? sum : "(none)", s->ram_checksum);
}

/* qemu-img check of one layer on its own: its backing file is not opened
 * (backing= is empty), so a damaged layer below shows up once, at itself. */
static const char *check_layer(struct verify *v, const char *layer)
{
	_cleanup_free_ char *img = qemu_img_for(v->vm->def.qemu);
	struct layer_result *lr;
	qsnap_error e2;

	for (size_t i = 0; i < v->n_checked; i++)
		if (!strcmp(v->checked[i].path, layer))
			return v->checked[i].problem;
	v->rep.n_files++;
	v->checked = xrealloc(v->checked, (v->n_checked + 1) * sizeof(*v->checked));
	lr = &v->checked[v->n_checked++];
	lr->path = xstrdup(layer);
	lr->problem = NULL;
	if (img_check_layer(img, v->vm->dir, layer, &lr->problem, &e2) < 0)
		lr->problem = xstrdup(e2.msg);
	return lr->problem;
}

static char *real_path(qsnap_vm *vm, const char *p)
{
	_cleanup_free_ char *abs = p[0] == '/' ? xstrdup(p) : vm_path(vm, p);
	char real[PATH_MAX];

	return realpath(abs, real) ? xstrdup(real) : xstrdup(abs);
}

/* The chain the qcow2 headers name, from the top layer down, against the
 * one state.json records: chain[0..n-1] layers, chain[n] the base image. */
static void check_backing(struct verify *v, const struct snapshot *s, const qsnap_drive_def *d,
			  char **chain, size_t n)
{
	_cleanup_free_ char *qemu_img = qemu_img_for(v->vm->def.qemu);
	struct img_info *imgs = NULL;
	qsnap_error e2;
	size_t len;

	if (img_info_chain(qemu_img, v->vm->dir, chain[0], "qcow2", true, &imgs, &len, &e2) < 0) {
		problem(v, s->name, chain[0], "its backing chain cannot be opened: %s", e2.msg);
		return;
	}
	for (size_t i = 0; i <= n; i++) {
		const struct img_info *img = i < len ? &imgs[i] : NULL;
		const char *file = img ? img->filename : NULL, *fmt = img ? img->format : NULL;
		const char *want_fmt = i < n ? "qcow2" : d->format;
		_cleanup_free_ char *want = real_path(v->vm, chain[i]);
		_cleanup_free_ char *got = file ? real_path(v->vm, file) : NULL;

		if (!img) {
			problem(v, s->name, chain[i - 1], "has no backing file, but state.json records %s",
				want);
			break;
		}
		if (strcmp(got, want)) {
			if (i == 0)
				problem(v, s->name, chain[0], "qemu-img opened %s instead", got);
			else
				problem(v, s->name, chain[i - 1], "its backing file is %s, but state.json records %s",
					got, want);
			break;
		}
		if (!fmt || strcmp(fmt, want_fmt)) {
			problem(v, s->name, chain[i], "is %s, not %s", fmt ? fmt : "of unknown format",
				want_fmt);
			break;
		}
	}
	img_info_chain_free(imgs, len);
}

static void check_drive(struct verify *v, const struct snapshot *s, const qsnap_drive_def *d)
{
	const char *top = NULL;
	char **chain = NULL;
	size_t n = 0;
	bool complete = true, intact = true;

	for (size_t j = 0; j < s->n_drives; j++)
		if (!strcmp(s->drives[j].drive, d->id))
			top = s->drives[j].layer;
	if (!top) {
		problem(v, s->name, "state.json", "snapshot '%s' has no layer for drive '%s'", s->name,
			d->id);
		return;
	}
	for (const char *l = top; l;) {
		struct layer *ly = state_layer(&v->vm->st, l);
		const char *bad;

		strv_push(&chain, &n, l);
		if (faccessat(v->vm->dirfd, l, R_OK, 0) < 0) {
			problem(v, s->name, l, "%s (a layer of drive '%s')",
				errno == ENOENT ? "missing" : strerror(errno), d->id);
			complete = false;
		} else if ((bad = check_layer(v, l))) {
			problem(v, s->name, l, "%s", bad);
			intact = false;
		}
		l = ly ? ly->backing : NULL;
	}
	v->rep.n_files++;
	strv_push(&chain, &n, d->path);
	if (access(d->path, R_OK) < 0) {
		problem(v, s->name, d->path, "%s (the base image of drive '%s')",
			errno == ENOENT ? "missing" : strerror(errno), d->id);
		complete = false;
	}
	/* Missing or damaged files are reported above; the chain through them
	 * would only repeat that. */
	if (complete && intact)
		check_backing(v, s, d, chain, n - 1);
	strv_free(chain);
}

static void check_readable(struct verify *v, const struct snapshot *s, const char *path,
			   const char *what)
{
	v->rep.n_files++;
	if (access(path, R_OK) < 0)
		problem(v, s->name, path, "%s (%s)", errno == ENOENT ? "missing" : strerror(errno),
			what);
}

static void verify_snapshot(struct verify *v, const struct snapshot *s)
{
	struct stat st;

	v->rep.n_snapshots++;
	if (fstatat(v->vm->dirfd, s->dir, &st, 0) < 0 || !S_ISDIR(st.st_mode)) {
		problem(v, s->name, s->dir, "the snapshot's directory is missing");
	} else {
		check_vmstate(v, s);
		if (s->mode == QSNAP_RAM_SHARED)
			check_ram(v, s);
		check_meta(v, s);
	}
	for (size_t i = 0; i < v->vm->def.n_drives; i++) {
		const qsnap_drive_def *d = &v->vm->def.drives[i];

		if (d->readonly)
			check_readable(v, s, d->path, "the image of a read-only drive");
		else
			check_drive(v, s, d);
	}
	/* QEMU does not start without them, so no restore either. */
	if (v->vm->def.kernel)
		check_readable(v, s, v->vm->def.kernel, "the kernel vm.json boots");
	if (v->vm->def.initrd)
		check_readable(v, s, v->vm->def.initrd, "the initrd vm.json boots");
}

int qsnap_vm_verify(qsnap_vm *vm, const char *name, const qsnap_verify_opts *opts,
		    qsnap_verify_report **ret, qsnap_error *err)
{
	qsnap_verify_opts o;
	struct verify v = {.vm = vm, .opts = &o};
	struct snapshot *only = NULL;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_verify_opts", err)) < 0)
		return r;
	progress_begin(&v.progress, "verify", v.opts->progress, v.opts->userdata, 0);

	if (name) {
		r = find_snapshot(vm, name, &only, err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < vm->st.n_snapshots; i++) {
		const struct snapshot *s = &vm->st.snapshots[i];

		if (only && only != s)
			continue;
		v.progress.total += s->vmstate_size + (s->ram_checksum ? s->memory : 0);
		for (size_t k = 0; k < s->n_ram_chain; k++)
			v.progress.total += s->ram_chain[k].size;
	}
	for (size_t i = 0; i < vm->st.n_snapshots; i++)
		if (!only || only == &vm->st.snapshots[i])
			verify_snapshot(&v, &vm->st.snapshots[i]);
	report_progress(&v, true);
	for (size_t i = 0; i < v.n_checked; i++) {
		free(v.checked[i].path);
		free(v.checked[i].problem);
	}
	free(v.checked);
	*ret = xmalloc(sizeof(v.rep));
	**ret = v.rep;
	return 0;
}

static void free_problems(qsnap_verify_problem **p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i]->snapshot);
		free(p[i]->file);
		free(p[i]->what);
		free(p[i]);
	}
	free(p);
}

void qsnap_verify_report_free(qsnap_verify_report *rep)
{
	if (!rep)
		return;
	free_problems(rep->problems, rep->n_problems);
	free_problems(rep->notes, rep->n_notes);
	free(rep);
}
