/* SPDX-License-Identifier: MIT */
/* Pulling a snapshot from an OCI registry: every blob is checked against
 * its sha256 as it downloads, into a staging directory (beside a new VM
 * directory, or inside an existing one); the layers are then re-pointed at
 * their local backing files (qemu-img rebase -u: header only) and the VM
 * directory, or the added snapshot, appears only when all is there. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define THREADS 4
#define SINK_BUF (1 << 20)
#define BLOCK 4096

struct dst {
	char *rel; /* in the staging directory */
	int fd;
	uint64_t size;
};

struct job {
	struct oci_item item;
	size_t dst;
	uint64_t off;
	char *title; /* "layer 2 of drive 'vda'" */
	char *local; /* copied from this file of the VM (an earlier pull's chunk) */
	uint64_t local_off;
};

struct pull {
	const qsnap_pull_opts *opts;
	const char *ref;
	struct registry *reg;
	struct oci_snapshot snap;
	char digest[DIGEST_LEN + 1];
	int stagefd;
	char *stage; /* absolute */
	struct dst *dsts;
	size_t n_dsts;
	struct job *jobs;
	size_t n_jobs;
	uint64_t total, got;
	int64_t t0;
	qsnap_pull_stats st;
	json_object *record; /* registry.json: digests of pulled files */
	int vmdirfd;	     /* pulling into an existing VM: its directory, else -1 */
};

/* ---- downloads ---- */

/* A pulled machine state or RAM file: the digest of each of its chunks. */
static void record_chunks(json_object *rec, int dirfd, const char *path,
			  const struct oci_pchunks *ch)
{
	const char **d = xcalloc(ch->n, sizeof(char *));

	for (size_t i = 0; i < ch->n; i++)
		d[i] = ch->chunks[i].digest[0] ? ch->chunks[i].digest : NULL;
	oci_record_set_chunks(rec, dirfd, path, ch->chunk_size, d, ch->n);
	free(d);
}


static size_t add_dst(struct pull *p, const char *rel, uint64_t size)
{
	p->dsts = xrealloc(p->dsts, (p->n_dsts + 1) * sizeof(*p->dsts));
	p->dsts[p->n_dsts] = (struct dst){.rel = xstrdup(rel), .fd = -1, .size = size};
	return p->n_dsts++;
}

static void add_job(struct pull *p, const struct oci_item *it, size_t dst, uint64_t off,
		    const char *title)
{
	p->jobs = xrealloc(p->jobs, (p->n_jobs + 1) * sizeof(*p->jobs));
	p->jobs[p->n_jobs++] = (struct job){.item = *it, .dst = dst, .off = off,
					    .title = xstrdup(title)};
	p->total += it->size;
}

static void add_chunk_jobs(struct pull *p, const struct oci_pchunks *ch, const char *rel,
			   const char *what)
{
	size_t d = add_dst(p, rel, ch->size);

	for (size_t i = 0; i < ch->n; i++) {
		_cleanup_free_ char *title = xasprintf("%s chunk %zu", what, i);

		const char *local = NULL;
		uint64_t loff = 0;

		if (!ch->chunks[i].digest[0])
			continue;
		if (p->vmdirfd >= 0)
			local = oci_record_find_chunk(p->record, p->vmdirfd, ch->chunks[i].digest, &loff);
		add_job(p, &ch->chunks[i], d, (uint64_t)i * ch->chunk_size, title);
		if (local) {
			p->jobs[p->n_jobs - 1].local = xstrdup(local);
			p->jobs[p->n_jobs - 1].local_off = loff;
			p->total -= ch->chunks[i].size;
		}
	}
}

struct sinkctx {
	struct pull *p;
	int fd;
	uint64_t pos;
	char *buf;
	size_t fill;
};

static bool zero_block(const char *b, size_t n)
{
	return b[0] == 0 && !memcmp(b, b + 1, n - 1);
}

/* Write what is buffered; all-zero blocks stay holes. */
static int sink_flush(struct sinkctx *k, qsnap_error *err)
{
	for (size_t o = 0; o < k->fill; o += BLOCK) {
		size_t n = k->fill - o < BLOCK ? k->fill - o : BLOCK;

		if (zero_block(k->buf + o, n))
			continue;
		for (size_t w = 0; w < n;) {
			ssize_t r = pwrite(k->fd, k->buf + o + w, n - w, (off_t)(k->pos + o + w));

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return qerr(err, errno, "cannot write the download: %s", strerror(errno));
			w += (size_t)r;
		}
	}
	k->pos += k->fill;
	k->fill = 0;
	return 0;
}

static int sink(const void *data, size_t len, void *ud, qsnap_error *err)
{
	struct sinkctx *k = ud;
	const char *d = data;

	__atomic_fetch_add(&k->p->got, len, __ATOMIC_RELAXED);
	while (len) {
		size_t n = SINK_BUF - k->fill < len ? SINK_BUF - k->fill : len;

		memcpy(k->buf + k->fill, d, n);
		k->fill += n;
		d += n;
		len -= n;
		if (k->fill == SINK_BUF && sink_flush(k, err) < 0)
			return -err->code;
	}
	return 0;
}

/* A chunk the VM has in an earlier pulled snapshot's file, copied and
 * checked against its digest; -1 when that copy cannot be used. */
static int copy_local(struct pull *p, struct job *j, struct sinkctx *k)
{
	_cleanup_close_ int fd = openat(p->vmdirfd, j->local, O_RDONLY | O_CLOEXEC);
	char got[DIGEST_LEN + 1];
	struct sha256 h;
	uint64_t pos = 0;
	qsnap_error e;

	if (fd < 0)
		return -1;
	sha256_init(&h);
	while (pos < j->item.size) {
		size_t want = j->item.size - pos < SINK_BUF - k->fill ? (size_t)(j->item.size - pos)
								   : SINK_BUF - k->fill;
		ssize_t n = pread(fd, k->buf + k->fill, want, (off_t)(j->local_off + pos));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sha256_free(&h);
			return -1;
		}
		sha256_update(&h, k->buf + k->fill, (size_t)n);
		k->fill += (size_t)n;
		pos += (uint64_t)n;
		if (k->fill == SINK_BUF && sink_flush(k, &e) < 0) {
			sha256_free(&h);
			return -1;
		}
	}
	sha256_final(&h, got);
	if (strcmp(got, j->item.digest) || sink_flush(k, &e) < 0)
		return -1;
	return 0;
}

static int download_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct pull *p = ud;
	struct job *j = &p->jobs[i];
	struct sinkctx k = {.p = p, .fd = p->dsts[j->dst].fd, .pos = j->off,
			    .buf = xmalloc(SINK_BUF)};
	int ret;

	if (j->local && copy_local(p, j, &k) == 0) {
		free(k.buf);
		return 0;
	}
	/* Nothing of a failed local copy may stay where zero blocks are not
	 * written. */
	if (j->local && fallocate(k.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)j->off,
				  (off_t)j->item.size) < 0) {
		free(k.buf);
		return qerr(err, errno, "cannot clear %s/%s: %s", p->stage, p->dsts[j->dst].rel,
			    strerror(errno));
	}
	k.pos = j->off;
	k.fill = 0;
	ret = reg_blob_get(r, c, j->item.digest, j->item.size, sink, &k, err);
	if (ret >= 0)
		ret = sink_flush(&k, err);
	/* Downloaded after all: the local copy did not match. */
	free(TAKE_PTR(j->local));
	free(k.buf);
	if (ret < 0)
		return qerr_prefix(err, "%s of snapshot '%s'", j->title, p->snap.name);
	return 0;
}

static void report(struct pull *p, const char *phase, bool finished)
{
	struct progress pr = {.phase = phase, .fn = p->opts->progress,
			      .userdata = p->opts->userdata, .total = p->total, .t0 = p->t0};

	progress_report(&pr, __atomic_load_n(&p->got, __ATOMIC_RELAXED), finished);
}

static void tick(void *ud)
{
	report(ud, "download", false);
}

static int download_all(struct pull *p, qsnap_error *err)
{
	int r;

	for (size_t i = 0; i < p->n_dsts; i++) {
		p->dsts[i].fd = openat(p->stagefd, p->dsts[i].rel,
				       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (p->dsts[i].fd < 0)
			return qerr(err, errno, "cannot create %s/%s: %s", p->stage, p->dsts[i].rel,
				    strerror(errno));
	}
	p->t0 = now_ms();
	r = reg_parallel(p->reg, p->n_jobs, THREADS, download_job, p, tick, err);
	if (r < 0)
		return r;
	report(p, "download", true);
	for (size_t i = 0; i < p->n_dsts; i++) {
		if (ftruncate(p->dsts[i].fd, (off_t)p->dsts[i].size) < 0 || fsync(p->dsts[i].fd) < 0)
			return qerr(err, errno, "cannot write %s/%s: %s", p->stage, p->dsts[i].rel,
				    strerror(errno));
		closep(&p->dsts[i].fd);
		p->dsts[i].fd = -1;
	}
	for (size_t i = 0; i < p->n_jobs; i++) {
		if (p->jobs[i].local) {
			p->st.reused++;
			p->st.reused_bytes += p->jobs[i].item.size;
		} else {
			p->st.downloaded++;
			p->st.downloaded_bytes += p->jobs[i].item.size;
		}
	}
	return 0;
}

/* ---- the files made usable ---- */

/* A pulled layer names no data file, and its backing file is the one we
 * say (the header only: qemu-img rebase -u). */
static int fix_layer(const char *dir, const char *name, const char *backing, const char *bfmt,
		     qsnap_error *err)
{
	struct img_info info;
	bool data_file;
	int r;

	r = img_info("qemu-img", dir, name, "qcow2", false, &info, err);
	if (r < 0)
		return qerr_prefix(err, "layer %s is not a qcow2 image", name);
	data_file = info.data_file;
	img_info_free(&info);
	if (data_file)
		return qerr(err, EINVAL, "layer %s names a data file: a pulled layer may not", name);
	return img_rebase("qemu-img", dir, name, backing, bfmt, true, err);
}

/* The snapshot entry for state.json, its layers given. */
static void fill_snapshot(struct pull *p, struct snapshot *s, const char *dir, char **tops,
			  const char *parent, const char *checksum)
{
	json_object *m = p->snap.meta;

	s->name = xstrdup(p->snap.name);
	s->parent = xstrdup_or_null(parent);
	s->created = jint(m, "created", 0);
	s->dir = xstrdup(dir);
	s->mode = xstrdup(p->snap.has_ram ? "shared" : "stream");
	s->was_running = jbool(m, "was_running", true);
	s->vmstate_size = p->snap.state.size;
	s->memory = (uint64_t)jint(m, "memory", 0);
	s->compressed = !strcmp(p->snap.state.file, "vmstate.zst");
	s->vmstate_checksum = xstrdup(checksum);
	/* What the machine state needs to load (format checked by artifact_def). */
	s->format = xstrdup_or_null(jstr(m, "format"));
	s->qemu_version = xstrdup_or_null(jstr(m, "qemu_version"));
	s->machine = xstrdup_or_null(jstr(m, "machine"));
	s->drives = xcalloc(p->snap.n_drives, sizeof(*s->drives));
	for (size_t i = 0; i < p->snap.n_drives; i++)
		if (tops[i]) {
			s->drives[s->n_drives].drive = xstrdup(p->snap.drives[i].id);
			s->drives[s->n_drives++].layer = xstrdup(tops[i]);
		}
}

/* The reassembled machine state is the one that was saved. */
static int check_state(struct pull *p, const char *rel, char **ret_sum, qsnap_error *err)
{
	const char *want = jstr(p->snap.meta, "vmstate_checksum");
	int r = checksum_file(p->stagefd, rel, ret_sum, err);

	if (r < 0)
		return r;
	if (want && strcmp(want, *ret_sum))
		return qerr(err, EIO, "the machine state of snapshot '%s' does not match the checksum it was saved with (%s, expected %s)",
			    p->snap.name, *ret_sum, want);
	return 0;
}

/* The definition the artifact carries, checked against its drives. */
static int artifact_def(struct pull *p, qsnap_def *def, qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("vm.json of %s", p->ref);
	int r = vmdef_from_json(json_object_to_json_string(p->snap.vm), what, def, err);

	if (r < 0)
		return r;
	{
		const char *fmt = jstr(p->snap.meta, "format");

		if (fmt && strcmp(fmt, "mapped-ram"))
			return qerr(err, EINVAL, "%s: the snapshot's machine state has an unknown format '%s'",
				    p->ref, fmt);
	}
	/* Programs and folders of the pushing host may not be this one's: its
	 * QEMU where this host has that binary too (a snapshot may need that
	 * QEMU's format or machine type), else the default; the default RAM
	 * folder. */
	if (def->qemu) {
		_cleanup_free_ char *prog = find_program(def->qemu);

		if (!prog) {
			free(def->qemu);
			def->qemu = NULL;
		}
	}
	free(def->ram_dir);
	def->ram_dir = NULL;
	if (def->n_drives != p->snap.n_drives)
		goto bad;
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		const struct oci_pdrive *pd = &p->snap.drives[i];

		if (strcmp(d->id, pd->id) || strcmp(d->format, pd->format) ||
		    (d->readonly && pd->n_layers) || (!d->readonly && !pd->n_layers))
			goto bad;
	}
	if (!def->kernel != !p->snap.has_kernel || !def->initrd != !p->snap.has_initrd)
		goto bad;
	return 0;
bad:
	qsnap_def_free(def);
	return qerr(err, EINVAL, "the config of %s is damaged: its vm.json and its drives disagree",
		    p->ref);
}

/* ---- into a new VM directory ---- */

static int pull_new(struct pull *p, const char *final, qsnap_error *err)
{
	_cleanup_free_ char *layers_dir = xasprintf("%s/layers", p->stage);
	_cleanup_free_ char *sdir = xasprintf("snapshots/%s", p->snap.name);
	_cleanup_free_ char *statefile = xasprintf("%s/%s", sdir, p->snap.state.file);
	_cleanup_free_ char *sum = NULL, *text = NULL, *meta = NULL, *meta_path = NULL, *img = NULL;
	char **tops = xcalloc(p->snap.n_drives, sizeof(char *));
	char ***names = xcalloc(p->snap.n_drives, sizeof(char **));
	struct state st = {0};
	qsnap_def def = {0};
	bool have_def = false;
	int r;

	for (const char *const *d = (const char *const[]){"images", "boot", "layers", "snapshots",
							 sdir, NULL};
	     *d; d++)
		if (mkdirat(p->stagefd, *d, 0755) < 0) {
			r = qerr(err, errno, "cannot create %s/%s: %s", p->stage, *d, strerror(errno));
			goto out;
		}
	if (mkdirat(p->stagefd, "run", 0700) < 0) {
		r = qerr(err, errno, "cannot create %s/run: %s", p->stage, strerror(errno));
		goto out;
	}
	r = artifact_def(p, &def, err);
	if (r < 0)
		goto out;
	have_def = true;
	/* The pulled VM's QEMU brings its qemu-img. */
	img = qemu_img_for(def.qemu);
	for (size_t i = 0; i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		_cleanup_free_ char *base = xasprintf("images/%s.%s", pd->id, pd->format);
		_cleanup_free_ char *title = xasprintf("the base image of drive '%s'", pd->id);

		add_job(p, &pd->base, add_dst(p, base, pd->base.size), 0, title);
		names[i] = xcalloc(pd->n_layers + 1, sizeof(char *));
		for (size_t j = 0; j < pd->n_layers; j++) {
			_cleanup_free_ char *t = xasprintf("layer %zu of drive '%s'", j + 1, pd->id);

			names[i][j] = layout_layer(pd->id, ++st.seq);
			add_job(p, &pd->layers[j], add_dst(p, names[i][j], pd->layers[j].size), 0, t);
		}
	}
	if (p->snap.has_kernel)
		add_job(p, &p->snap.kernel, add_dst(p, "boot/kernel", p->snap.kernel.size), 0,
			"the kernel");
	if (p->snap.has_initrd)
		add_job(p, &p->snap.initrd, add_dst(p, "boot/initrd", p->snap.initrd.size), 0,
			"the initrd");
	add_chunk_jobs(p, &p->snap.state, statefile, "machine state");
	if (p->snap.has_ram) {
		_cleanup_free_ char *ram = xasprintf("%s/ram", sdir);
		add_chunk_jobs(p, &p->snap.ram, ram, "RAM");
	}
	p->st.blobs = p->n_jobs;
	r = download_all(p, err);
	if (r < 0)
		goto out;

	/* The images: standalone bases, layers re-pointed at their local
	 * backing files (names relative to layers/, as every layer has). */
	for (size_t i = 0; r >= 0 && i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *base = xasprintf("images/%s.%s", pd->id, pd->format);
		_cleanup_free_ char *rel_base = xasprintf("../%s", base);

		r = img_check_standalone(img, p->stage, base, pd->format, err);
		for (size_t j = 0; r >= 0 && j < pd->n_layers; j++) {
			const char *name = layout_in_layers(names[i][j]);

			r = fix_layer(layers_dir, name, j ? layout_in_layers(names[i][j - 1]) : rel_base,
				      j ? "qcow2" : pd->format, err);
			state_add_layer(&st, names[i][j], pd->id, j ? names[i][j - 1] : NULL);
		}
		if (r < 0)
			break;
		oci_record_set(p->record, p->stagefd, base, pd->base.digest);
		for (size_t j = 0; j < pd->n_layers; j++)
			oci_record_set_rebased(p->record, p->stagefd, names[i][j], pd->layers[j].digest);
		free(d->path);
		d->path = xasprintf("%s/%s", p->stage, base);
		if (pd->n_layers) {
			_cleanup_free_ char *active = layout_layer(pd->id, ++st.seq);

			tops[i] = names[i][pd->n_layers - 1];
			r = img_create("qemu-img", layers_dir, layout_in_layers(active),
				       layout_in_layers(tops[i]), "qcow2", err);
			state_add_layer(&st, active, pd->id, tops[i]);
			state_set_active(&st, pd->id, active);
		}
	}
	if (r < 0)
		goto out;
	if (p->snap.has_kernel)
		oci_record_set(p->record, p->stagefd, "boot/kernel", p->snap.kernel.digest);
	if (p->snap.has_initrd)
		oci_record_set(p->record, p->stagefd, "boot/initrd", p->snap.initrd.digest);
	if (def.kernel) {
		free(def.kernel);
		def.kernel = xasprintf("%s/boot/kernel", p->stage);
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = xasprintf("%s/boot/initrd", p->stage);
	}
	r = vmdef_check(&def, err);
	if (r >= 0)
		r = check_state(p, statefile, &sum, err);
	if (r < 0)
		goto out;
	/* Final paths, as in every VM's vm.json. */
	for (size_t i = 0; i < def.n_drives; i++) {
		free(def.drives[i].path);
		def.drives[i].path = xasprintf("%s/images/%s.%s", final, def.drives[i].id,
					       def.drives[i].format);
	}
	if (def.kernel) {
		free(def.kernel);
		def.kernel = xasprintf("%s/boot/kernel", final);
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = xasprintf("%s/boot/initrd", final);
	}
	st.snapshots = xcalloc(1, sizeof(*st.snapshots));
	fill_snapshot(p, &st.snapshots[st.n_snapshots++], sdir, tops, NULL, sum);
	st.current = xstrdup(p->snap.name);
	meta = meta_text(&st.snapshots[0]);
	meta_path = xasprintf("%s/meta.json", sdir);
	r = write_file_atomic(p->stagefd, meta_path, meta, strlen(meta), err);
	if (r >= 0)
		r = vmdef_to_json(&def, &text, err);
	if (r >= 0)
		r = write_file_atomic(p->stagefd, "vm.json", text, strlen(text), err);
	free(TAKE_PTR(text));
	if (r >= 0)
		r = state_to_json(&st, &text, err);
	if (r >= 0)
		r = write_file_atomic(p->stagefd, "state.json", text, strlen(text), err);
	if (r >= 0) {
		record_chunks(p->record, p->stagefd, statefile, &p->snap.state);
		if (p->snap.has_ram) {
			_cleanup_free_ char *ram = xasprintf("%s/ram", sdir);
			record_chunks(p->record, p->stagefd, ram, &p->snap.ram);
		}
		r = oci_record_save(p->record, p->stagefd, err);
	}
	for (const char *const *d = (const char *const[]){"images", "boot", "layers", sdir, NULL};
	     r >= 0 && *d; d++)
		r = fsync_dir(p->stagefd, *d, err);
	/* rename(2) replaces an empty directory. */
	if (r >= 0 && rename(p->stage, final) < 0)
		r = qerr(err, errno, "cannot rename %s to %s: %s", p->stage, final, strerror(errno));
out:
	for (size_t i = 0; i < p->snap.n_drives; i++)
		strv_free(names[i]);
	free(names);
	free(tops);
	if (have_def)
		qsnap_def_free(&def);
	state_free(&st);
	return r;
}

/* ---- into an existing VM ---- */

/* The local file's sha256 is digest: from the record when the file has not
 * changed since, else by reading it. */
static int local_digest_is(struct pull *p, qsnap_vm *vm, const char *path, const char *digest,
			   bool *ret, qsnap_error *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	char got[DIGEST_LEN + 1];
	struct sha256 h;

	size_t dl = strlen(vm->dir);

	/* Files inside the VM directory are recorded by their relative path. */
	if (!strncmp(path, vm->dir, dl) && path[dl] == '/')
		path += dl + 1;
	if (oci_record_match(p->record, vm->dirfd, path, digest)) {
		*ret = true;
		return 0;
	}
	fd = openat(vm->dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	buf = xmalloc(SINK_BUF);
	sha256_init(&h);
	for (;;) {
		ssize_t n = read(fd, buf, SINK_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sha256_free(&h);
			return qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
		}
		if (n == 0)
			break;
		sha256_update(&h, buf, (size_t)n);
	}
	sha256_final(&h, got);
	*ret = !strcmp(got, digest);
	if (*ret)
		oci_record_set(p->record, vm->dirfd, path, digest);
	return 0;
}

/* The VM must be the one the snapshot was taken of: the same drives, RAM
 * size, base images, kernel and initrd. */
static int check_compatible(struct pull *p, qsnap_vm *vm, qsnap_error *err)
{
	const qsnap_def *have = &vm->def;
	qsnap_def want;
	bool same;
	int r = artifact_def(p, &want, err);

	if (r < 0)
		return r;
	if (have->n_drives != want.n_drives)
		r = qerr(err, EINVAL, "%s has %zu drives, snapshot '%s' was taken with %zu: pull it into a new directory",
			 vm->dir, have->n_drives, p->snap.name, want.n_drives);
	for (size_t i = 0; r >= 0 && i < want.n_drives; i++) {
		const qsnap_drive_def *a = &have->drives[i], *b = &want.drives[i];

		if (strcmp(a->id, b->id) || strcmp(a->format, b->format) ||
		    a->readonly != b->readonly || a->iface != b->iface)
			r = qerr(err, EINVAL, "drive %zu of %s is '%s' (%s%s), snapshot '%s' has '%s' (%s%s) there: pull it into a new directory",
				 i + 1, vm->dir, a->id, a->format, a->readonly ? ", read-only" : "",
				 p->snap.name, b->id, b->format, b->readonly ? ", read-only" : "");
	}
	if (r >= 0 && have->memory != want.memory)
		r = qerr(err, EINVAL, "%s has %llu MiB of RAM, snapshot '%s' was taken with %llu MiB: pull it into a new directory",
			 vm->dir, (unsigned long long)(have->memory >> 20), p->snap.name,
			 (unsigned long long)(want.memory >> 20));
	if (r >= 0 && (!have->kernel != !want.kernel || !have->initrd != !want.initrd))
		r = qerr(err, EINVAL, "%s and snapshot '%s' differ in booting a kernel: pull it into a new directory",
			 vm->dir, p->snap.name);
	qsnap_def_free(&want);
	for (size_t i = 0; r >= 0 && i < p->snap.n_drives; i++) {
		r = local_digest_is(p, vm, have->drives[i].path, p->snap.drives[i].base.digest, &same,
				    err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the base image %s of drive '%s' is not the one snapshot '%s' was taken on (%s): pull it into a new directory",
				 have->drives[i].path, have->drives[i].id, p->snap.name,
				 p->snap.drives[i].base.digest);
	}
	if (r >= 0 && p->snap.has_kernel) {
		r = local_digest_is(p, vm, have->kernel, p->snap.kernel.digest, &same, err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the kernel %s is not the one snapshot '%s' was taken with: pull it into a new directory",
				 have->kernel, p->snap.name);
	}
	if (r >= 0 && p->snap.has_initrd) {
		r = local_digest_is(p, vm, have->initrd, p->snap.initrd.digest, &same, err);
		if (r >= 0 && !same)
			r = qerr(err, EINVAL, "the initrd %s is not the one snapshot '%s' was taken with: pull it into a new directory",
				 have->initrd, p->snap.name);
	}
	return r;
}

/* The local layer that holds this blob on top of below (NULL: the base). */
static const char *reusable_layer(struct pull *p, qsnap_vm *vm, const char *drive,
				  const char *below, const char *digest)
{
	for (size_t i = 0; i < vm->st.n_layers; i++) {
		const struct layer *l = &vm->st.layers[i];

		if (strcmp(l->drive, drive) || !l->backing != !below ||
		    (below && strcmp(l->backing, below)))
			continue;
		if (oci_record_match(p->record, vm->dirfd, l->path, digest))
			return l->path;
	}
	return NULL;
}

static int pull_add(struct pull *p, qsnap_vm *vm, qsnap_error *err)
{
	_cleanup_free_ char *sdir = NULL, *statefile = NULL, *sum = NULL, *meta = NULL;
	_cleanup_free_ char *meta_path = NULL, *stage_layers = NULL, *stage_rel = NULL;
	char **tops = xcalloc(p->snap.n_drives, sizeof(char *));
	char **moved = NULL;
	size_t n_moved = 0;
	struct snapshot *s;
	bool mkdirs_ok;
	int r;

	if (state_snapshot(&vm->st, p->snap.name)) {
		free(tops);
		return qerr(err, EEXIST, "%s has a snapshot '%s' already: delete it (qsnap delete) or pull into another directory",
			    vm->dir, p->snap.name);
	}
	r = check_compatible(p, vm, err);
	if (r < 0) {
		free(tops);
		return r;
	}
	stage_rel = xasprintf(".qsnap-pull-%d", (int)getpid());
	p->stage = xasprintf("%s/%s", vm->dir, stage_rel);
	rm_rf(vm->dirfd, stage_rel);
	mkdirs_ok = mkdirat(vm->dirfd, stage_rel, 0755) == 0;
	p->stagefd = mkdirs_ok ? openat(vm->dirfd, stage_rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (p->stagefd < 0 || mkdirat(p->stagefd, "layers", 0755) < 0 ||
	    mkdirat(p->stagefd, "snapshot", 0755) < 0) {
		r = qerr(err, errno, "cannot create %s: %s", p->stage, strerror(errno));
		goto out;
	}
	stage_layers = xasprintf("%s/layers", p->stage);
	sdir = xasprintf("snapshots/%s", p->snap.name);
	for (size_t i = 0; i < vm->st.n_snapshots; i++)
		if (!strcmp(vm->st.snapshots[i].dir, sdir)) {
			free(sdir);
			sdir = xasprintf("snapshots/%s@%lu", p->snap.name, ++vm->st.seq);
			break;
		}

	/* The layers it has already (a prefix of each chain), then the rest. */
	for (size_t i = 0; i < p->snap.n_drives; i++) {
		const struct oci_pdrive *pd = &p->snap.drives[i];
		const qsnap_drive_def *d = &vm->def.drives[i];
		char *below = NULL;
		size_t j = 0;

		for (; j < pd->n_layers; j++) {
			const char *l = reusable_layer(p, vm, pd->id, below, pd->layers[j].digest);

			if (!l)
				break;
			free(below);
			below = xstrdup(l);
			p->st.reused++;
			p->st.reused_bytes += pd->layers[j].size;
		}
		for (; j < pd->n_layers; j++) {
			_cleanup_free_ char *name = layout_layer(pd->id, ++vm->st.seq);
			_cleanup_free_ char *t = xasprintf("layer %zu of drive '%s'", j + 1, pd->id);

			add_job(p, &pd->layers[j], add_dst(p, name, pd->layers[j].size), 0, t);
			/* The backing relation, for after the download. */
			state_add_layer(&vm->st, name, pd->id, below);
			strv_push(&moved, &n_moved, name);
			free(below);
			below = xstrdup(name);
		}
		(void)d;
		tops[i] = below;
		/* The base images and kernel are the VM's own. */
		p->st.reused++;
		p->st.reused_bytes += pd->base.size;
	}
	if (p->snap.has_kernel) {
		p->st.reused++;
		p->st.reused_bytes += p->snap.kernel.size;
	}
	if (p->snap.has_initrd) {
		p->st.reused++;
		p->st.reused_bytes += p->snap.initrd.size;
	}
	statefile = xasprintf("snapshot/%s", p->snap.state.file);
	add_chunk_jobs(p, &p->snap.state, statefile, "machine state");
	if (p->snap.has_ram)
		add_chunk_jobs(p, &p->snap.ram, "snapshot/ram", "RAM");
	p->st.blobs = p->n_jobs + p->st.reused;
	r = download_all(p, err);
	if (r < 0)
		goto out;
	for (size_t k = 0; r >= 0 && k < n_moved; k++) {
		const struct layer *l = state_layer(&vm->st, moved[k]);
		const qsnap_drive_def *d = def_drive(&vm->def, l->drive);

		/* Backing names as chain_new_layer writes them. */
		r = fix_layer(stage_layers, layout_in_layers(moved[k]),
			      l->backing ? layout_in_layers(l->backing) : d->path,
			      l->backing ? "qcow2" : d->format, err);
	}
	if (r >= 0)
		r = check_state(p, statefile, &sum, err);
	if (r < 0)
		goto out;

	/* Into place, then state.json: a crash in between leaves strays
	 * that the next command sweeps. */
	for (size_t k = 0; r >= 0 && k < n_moved; k++) {
		_cleanup_free_ char *from = xasprintf("%s/%s", stage_rel, moved[k]);

		if (renameat(vm->dirfd, from, vm->dirfd, moved[k]) < 0)
			r = qerr(err, errno, "cannot move %s into %s/layers: %s", from, vm->dir,
				 strerror(errno));
	}
	if (r >= 0) {
		_cleanup_free_ char *from = xasprintf("%s/snapshot", stage_rel);

		rm_rf(vm->dirfd, sdir); /* a stray: no snapshot has this directory */
		if (renameat(vm->dirfd, from, vm->dirfd, sdir) < 0)
			r = qerr(err, errno, "cannot move %s to %s/%s: %s", from, vm->dir, sdir,
				 strerror(errno));
	}
	if (r < 0)
		goto out;
	{
		const char *parent = jstr(p->snap.meta, "parent");
		bool known = parent && state_snapshot(&vm->st, parent);

		vm->st.snapshots = xrealloc(vm->st.snapshots, (vm->st.n_snapshots + 1) * sizeof(*s));
		s = &vm->st.snapshots[vm->st.n_snapshots++];
		memset(s, 0, sizeof(*s));
		fill_snapshot(p, s, sdir, tops, known ? parent : NULL, sum);
	}
	meta = meta_text(s);
	meta_path = xasprintf("%s/meta.json", sdir);
	r = write_file_atomic(vm->dirfd, meta_path, meta, strlen(meta), err);
	for (const char *const *d = (const char *const[]){"layers", sdir, NULL}; r >= 0 && *d; d++)
		r = fsync_dir(vm->dirfd, *d, err);
	if (r >= 0)
		r = vm_write_state(vm, err);
	if (r >= 0) {
		for (size_t k = 0; k < n_moved; k++) {
			const struct layer *l = state_layer(&vm->st, moved[k]);
			const struct oci_pdrive *pd = NULL;

			for (size_t i = 0; i < p->snap.n_drives; i++)
				if (!strcmp(p->snap.drives[i].id, l->drive))
					pd = &p->snap.drives[i];
			for (size_t j = 0; pd && j < p->n_jobs; j++)
				if (!strcmp(p->dsts[p->jobs[j].dst].rel, moved[k]))
					oci_record_set_rebased(p->record, vm->dirfd, moved[k], p->jobs[j].item.digest);
		}
		{
			_cleanup_free_ char *sf = xasprintf("%s/%s", sdir, p->snap.state.file);
			_cleanup_free_ char *rf = xasprintf("%s/ram", sdir);

			record_chunks(p->record, vm->dirfd, sf, &p->snap.state);
			if (p->snap.has_ram)
				record_chunks(p->record, vm->dirfd, rf, &p->snap.ram);
		}
		/* Only a cache: losing it costs downloads, not correctness. */
		qsnap_error e2;
		oci_record_save(p->record, vm->dirfd, &e2);
	}
out:
	if (r < 0) {
		/* Forget the layers that never made it. */
		for (size_t k = 0; k < n_moved; k++) {
			for (size_t i = 0; i < vm->st.n_layers; i++)
				if (!strcmp(vm->st.layers[i].path, moved[k])) {
					free(vm->st.layers[i].path);
					free(vm->st.layers[i].drive);
					free(vm->st.layers[i].backing);
					vm->st.layers[i] = vm->st.layers[--vm->st.n_layers];
					break;
				}
			unlinkat(vm->dirfd, moved[k], 0);
		}
	}
	if (p->stagefd >= 0)
		closep(&p->stagefd);
	p->stagefd = -1;
	rm_rf(vm->dirfd, stage_rel);
	for (size_t i = 0; i < p->snap.n_drives; i++)
		free(tops[i]);
	free(tops);
	strv_free(moved);
	return r;
}

/* ---- the whole pull ---- */

/* Staging directories of pulls that were killed: .NAME.qsnap-pull-PID of
 * a PID that is gone. */
static void sweep_stages(const char *parent, const char *base)
{
	_cleanup_free_ char *prefix = xasprintf(".%s.qsnap-pull-", base);
	DIR *d = opendir(parent);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		long pid;

		if (strncmp(de->d_name, prefix, strlen(prefix)))
			continue;
		pid = strtol(de->d_name + strlen(prefix), &end, 10);
		if (*end || pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno == ESRCH)) {
			_cleanup_free_ char *path = xasprintf("%s/%s", parent, de->d_name);
			rm_rf(AT_FDCWD, path);
		}
	}
	closedir(d);
}

static void pull_free(struct pull *p)
{
	for (size_t i = 0; i < p->n_dsts; i++) {
		closep(&p->dsts[i].fd);
		free(p->dsts[i].rel);
	}
	free(p->dsts);
	for (size_t i = 0; i < p->n_jobs; i++) {
		free(p->jobs[i].title);
		free(p->jobs[i].local);
	}
	free(p->jobs);
	free(p->stage);
	json_object_put(p->record);
	oci_snapshot_free(&p->snap);
	registry_close(p->reg);
}

int qsnap_pull(const char *ref, const char *dir, const qsnap_pull_opts *opts, char **ret_name,
	       qsnap_error *err)
{
	static const qsnap_pull_opts dflt = {0};
	struct pull p = {.opts = opts ? opts : &dflt, .ref = ref, .stagefd = -1, .vmdirfd = -1};
	_cleanup_free_ char *c1 = xstrdup(dir), *c2 = xstrdup(dir), *final = NULL;
	_cleanup_free_ char *manifest = NULL, *config = NULL;
	_cleanup_json_ json_object *layers = NULL;
	const char *base = basename(c2);
	struct oci_item cfg;
	char parent[PATH_MAX];
	qsnap_vm *vm = NULL;
	struct stat st;
	reg_conn *c = NULL;
	bool existing;
	int r;

	if (!*base || !strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
		return qerr(err, EINVAL, "%s: name a VM directory to pull into", dir);
	if (!realpath(dirname(c1), parent))
		return qerr(err, errno, "cannot pull into %s: %s", dir, strerror(errno));
	final = xasprintf("%s/%s", strcmp(parent, "/") ? parent : "", base);
	existing = lstat(final, &st) == 0;
	if (existing && S_ISDIR(st.st_mode) && dir_is_empty(final))
		existing = false;
	if (existing) {
		_cleanup_free_ char *vmj = xasprintf("%s/vm.json", final);

		if (!S_ISDIR(st.st_mode) || access(vmj, F_OK) < 0)
			return qerr(err, EEXIST, "%s exists and is neither a VM directory nor empty: pull into a new directory",
				    dir);
	}
	r = registry_open(ref, "latest", p.opts->insecure, false, &p.reg, err);
	if (r < 0)
		goto out;
	c = reg_conn_new();
	r = reg_manifest_get(p.reg, c, OCI_MANIFEST_TYPE, &manifest, p.digest, err);
	if (r >= 0)
		r = oci_manifest_parse(manifest, ref, &cfg, &layers, err);
	if (r >= 0)
		r = reg_blob_get_mem(p.reg, c, cfg.digest, cfg.size, &config, err);
	if (r < 0)
		goto out;
	r = oci_config_parse(config, ref, layers, &p.snap, err);
	if (r < 0)
		goto out;
	if (existing) {
		r = qsnap_vm_open(final, 0, p.opts->lock_timeout, &vm, err);
		if (r < 0)
			goto out;
		p.record = oci_record_load(vm->dirfd);
		p.vmdirfd = vm->dirfd;
		r = pull_add(&p, vm, err);
	} else {
		sweep_stages(parent, base);
		p.stage = xasprintf("%s/.%s.qsnap-pull-%d", strcmp(parent, "/") ? parent : "", base,
				    (int)getpid());
		rm_rf(AT_FDCWD, p.stage);
		if (mkdir(p.stage, 0755) < 0) {
			r = qerr(err, errno, "cannot create %s: %s", p.stage, strerror(errno));
			goto out;
		}
		p.stagefd = open(p.stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (p.stagefd < 0) {
			r = qerr(err, errno, "cannot open %s: %s", p.stage, strerror(errno));
			goto out;
		}
		p.record = jbuild("files", json_object_new_object(), NULL);
		r = pull_new(&p, final, err);
		if (r >= 0)
			r = fsync_dir(AT_FDCWD, parent, err);
	}
out:
	if (!existing && p.stage && r < 0)
		rm_rf(AT_FDCWD, p.stage);
	closep(&p.stagefd);
	reg_conn_free(c);
	if (r >= 0) {
		/* The config counts as one of the blobs, as on push. */
		p.st.blobs++;
		p.st.downloaded++;
		p.st.downloaded_bytes += cfg.size;
		snprintf(p.st.digest, sizeof(p.st.digest), "%s", p.digest);
		if (p.opts->stats)
			*p.opts->stats = p.st;
		if (ret_name)
			*ret_name = xstrdup(p.snap.name);
	}
	if (vm)
		qsnap_vm_close(vm);
	pull_free(&p);
	if (r < 0)
		r = qerr_prefix(err, "pulling %s into %s failed; nothing was %s", ref, dir,
				existing ? "added" : "created");
	return r;
}
