/* SPDX-License-Identifier: MIT */
/* Pushing a snapshot to an OCI registry as an artifact (README: "The
 * snapshot as an OCI artifact"): every image of its drives' chains as it
 * is (base images and frozen qcow2 layers, not flattened), the kernel and
 * initrd, and the machine state and shared RAM in fixed-size chunks, all
 * named by sha256; a config blob that says how they fit together; and a
 * manifest that lists them. Only what the registry lacks is uploaded. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ops/ops.h"

#define HASH_BUF (1 << 20)
#define THREADS 4

struct pfile {
	char *path; /* absolute */
	char *key;  /* in registry.json: relative inside the VM directory */
	int fd;
	uint64_t size;
	bool chunked;
	size_t first, n; /* its blobs */
};

struct push {
	qsnap_vm *vm;
	const struct snapshot *s;
	const qsnap_push_opts *opts;
	struct pfile *files;
	size_t n_files;
	struct oci_blob *blobs;
	size_t n_blobs;
	uint64_t total, hashed, to_send, sent;
	const char *phase;
	int64_t t0;
};

static size_t add_file(struct push *p, const char *path, qsnap_error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return (size_t)qerr(err, errno, "cannot open %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return (size_t)qerr(err, EINVAL, "%s is not a regular file: it cannot be pushed", path);
	p->files = xrealloc(p->files, (p->n_files + 1) * sizeof(*p->files));
	p->files[p->n_files] = (struct pfile){.path = xstrdup(path), .fd = TAKE_FD(fd),
					      .size = (uint64_t)st.st_size, .first = p->n_blobs};
	{
		size_t dl = strlen(p->vm->dir);
		bool inside = !strncmp(path, p->vm->dir, dl) && path[dl] == '/';

		p->files[p->n_files].key = xstrdup(inside ? path + dl + 1 : path);
	}
	return p->n_files++;
}

static struct oci_blob *add_blob(struct push *p, const char *media_type, const char *title,
				 size_t file, uint64_t off, uint64_t len)
{
	struct oci_blob *b;

	p->blobs = xrealloc(p->blobs, (p->n_blobs + 1) * sizeof(*p->blobs));
	b = &p->blobs[p->n_blobs++];
	memset(b, 0, sizeof(*b));
	b->media_type = media_type;
	b->title = xstrdup(title);
	b->file = file;
	b->off = off;
	b->size = len;
	p->total += len;
	return b;
}

/* A whole file as one blob; returns its index or -errno. */
static ssize_t add_whole(struct push *p, const char *media_type, const char *title,
			 const char *path, qsnap_error *err)
{
	size_t f = add_file(p, path, err);

	if ((ssize_t)f < 0)
		return (ssize_t)f;
	add_blob(p, media_type, title, f, 0, p->files[f].size);
	p->files[f].n = 1;
	return (ssize_t)(p->n_blobs - 1);
}

/* A machine state or RAM file in chunks. */
static int add_chunked(struct push *p, const char *media_type, const char *what,
		       const char *path, size_t *ret_first, size_t *ret_n, qsnap_error *err)
{
	size_t f = add_file(p, path, err);
	uint64_t size;

	if ((ssize_t)f < 0)
		return (int)(ssize_t)f;
	size = p->files[f].size;
	*ret_first = p->n_blobs;
	for (uint64_t off = 0; off < size; off += OCI_CHUNK_SIZE) {
		_cleanup_free_ char *title = xasprintf("%s.%04llu", what,
						      (unsigned long long)(off / OCI_CHUNK_SIZE));
		add_blob(p, media_type, title, f, off,
			 size - off < OCI_CHUNK_SIZE ? size - off : OCI_CHUNK_SIZE);
		p->blobs[p->n_blobs - 1].chunk = true;
	}
	*ret_n = p->n_blobs - *ret_first;
	p->files[f].chunked = true;
	p->files[f].n = *ret_n;
	return 0;
}

static void report(struct push *p, bool finished)
{
	bool up = !strcmp(p->phase, "upload");
	struct progress pr = {.phase = p->phase, .fn = p->opts->progress,
			      .userdata = p->opts->userdata, .total = up ? p->to_send : p->total,
			      .t0 = p->t0};
	uint64_t done = __atomic_load_n(up ? &p->sent : &p->hashed, __ATOMIC_RELAXED);

	progress_report(&pr, done < pr.total ? done : pr.total, finished);
}

static void tick(void *ud)
{
	report(ud, false);
}

static bool all_zero(const char *buf, size_t n)
{
	return n == 0 || (buf[0] == 0 && !memcmp(buf, buf + 1, n - 1));
}

static int hash_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];
	struct pfile *f = &p->files[b->file];
	_cleanup_free_ char *buf = NULL;
	struct sha256 h;
	bool zero = b->chunk;
	uint64_t pos = 0;

	(void)r, (void)c;
	if (b->known) {
		__atomic_fetch_add(&p->hashed, b->size, __ATOMIC_RELAXED);
		return 0;
	}
	/* A chunk of a sparse file with no data in it is zero without reading. */
	if (b->chunk) {
		off_t d = lseek(f->fd, (off_t)b->off, SEEK_DATA);

		if ((d < 0 && errno == ENXIO) || (d >= 0 && (uint64_t)d >= b->off + b->size)) {
			b->zero = true;
			__atomic_fetch_add(&p->hashed, b->size, __ATOMIC_RELAXED);
			return 0;
		}
	}
	buf = xmalloc(HASH_BUF);
	sha256_init(&h);
	while (pos < b->size) {
		size_t want = b->size - pos < HASH_BUF ? (size_t)(b->size - pos) : HASH_BUF;
		ssize_t n = pread(f->fd, buf, want, (off_t)(b->off + pos));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sha256_free(&h);
			return n < 0 ? qerr(err, errno, "cannot read %s: %s", f->path, strerror(errno))
				     : qerr(err, EIO, "%s became shorter while it was pushed", f->path);
		}
		if (zero)
			zero = all_zero(buf, (size_t)n);
		sha256_update(&h, buf, (size_t)n);
		pos += (uint64_t)n;
		__atomic_fetch_add(&p->hashed, (uint64_t)n, __ATOMIC_RELAXED);
	}
	sha256_final(&h, b->digest);
	b->zero = zero;
	return 0;
}

static int head_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];

	if (b->zero || b->dup)
		return 0;
	return reg_blob_exists(r, c, b->digest, &b->present, err);
}

static void count_sent(uint64_t n, void *ud)
{
	struct push *p = ud;

	__atomic_fetch_add(&p->sent, n, __ATOMIC_RELAXED);
}

static int upload_job(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err)
{
	struct push *p = ud;
	struct oci_blob *b = &p->blobs[i];
	int ret;

	if (b->zero || b->dup || b->present)
		return 0;
	ret = reg_blob_upload_fd(r, c, p->files[b->file].fd, b->off, b->size, b->digest, count_sent,
				 p, err);
	if (ret < 0)
		return qerr_prefix(err, "%s (%s)", b->title, p->files[b->file].path);
	b->uploaded = true;
	return 0;
}

/* The snapshot's files: base images, layers, kernel, initrd, machine state. */
static int collect(struct push *p, struct oci_config *cfg, qsnap_error *err)
{
	qsnap_vm *vm = p->vm;
	const struct snapshot *s = p->s;
	const qsnap_def *def = &vm->def;
	_cleanup_free_ char *vmstate = snapshot_vmstate(s);
	_cleanup_free_ char *vmstate_path = vm_path(vm, vmstate);
	ssize_t k;
	int r;

	cfg->drives = xcalloc(def->n_drives, sizeof(*cfg->drives));
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		struct oci_drive *od = &cfg->drives[cfg->n_drives++];
		const char *top = NULL;
		const char **layers = NULL;
		size_t n;

		od->id = xstrdup(d->id);
		od->format = xstrdup(d->format);
		for (size_t j = 0; !d->readonly && j < s->n_drives; j++)
			if (!strcmp(s->drives[j].drive, d->id))
				top = s->drives[j].layer;
		if (!d->readonly && !top)
			return qerr(err, ENOENT, "snapshot '%s' has no state for drive '%s' (was the drive added to vm.json after the snapshot?)",
				    s->name, d->id);
		{
			_cleanup_free_ char *title = xasprintf("%s.base.%s", d->id, d->format);

			k = add_whole(p, strcmp(d->format, "raw") ? QSNAP_DISK_QCOW2_TYPE : QSNAP_DISK_RAW_TYPE,
				      title, d->path, err);
		}
		if (k < 0)
			return (int)k;
		od->base = (size_t)k;
		n = top ? chain_layers(&vm->st, top, &layers) : 0;
		od->layers = xcalloc(n, sizeof(size_t));
		for (size_t j = 0; j < n; j++) {
			_cleanup_free_ char *path = vm_path(vm, layers[j]);

			k = add_whole(p, QSNAP_DISK_QCOW2_TYPE, layers[j] + strlen("layers/"), path, err);
			if (k < 0) {
				free(layers);
				return qerr_prefix(err, "snapshot '%s' needs layer %s", s->name, layers[j]);
			}
			od->layers[od->n_layers++] = (size_t)k;
		}
		free(layers);
	}
	if (def->kernel) {
		k = add_whole(p, QSNAP_KERNEL_TYPE, "kernel", def->kernel, err);
		if (k < 0)
			return (int)k;
		cfg->kernel = (ssize_t)k;
	}
	if (def->initrd) {
		k = add_whole(p, QSNAP_INITRD_TYPE, "initrd", def->initrd, err);
		if (k < 0)
			return (int)k;
		cfg->initrd = (ssize_t)k;
	}
	cfg->state.file = xstrdup(strrchr(vmstate, '/') + 1);
	r = add_chunked(p, QSNAP_VMSTATE_TYPE, cfg->state.file, vmstate_path, &cfg->state.first,
			&cfg->state.n, err);
	if (r < 0)
		return qerr_prefix(err, "snapshot '%s'", s->name);
	cfg->state.size = p->files[p->n_files - 1].size;
	if (s->vmstate_size && cfg->state.size != s->vmstate_size)
		return qerr(err, EINVAL, "snapshot '%s': %s has %llu bytes, %llu were saved: the file is damaged (qsnap verify)",
			    s->name, vmstate_path, (unsigned long long)cfg->state.size,
			    (unsigned long long)s->vmstate_size);
	if (!strcmp(s->mode, "shared")) {
		_cleanup_free_ char *ram = xasprintf("%s/%s/ram", vm->dir, s->dir);

		cfg->has_ram = true;
		cfg->ram.file = xstrdup("ram");
		r = add_chunked(p, QSNAP_RAM_TYPE, "ram", ram, &cfg->ram.first, &cfg->ram.n, err);
		if (r < 0)
			return qerr_prefix(err, "snapshot '%s'", s->name);
		cfg->ram.size = p->files[p->n_files - 1].size;
	}
	return 0;
}

/* vm.json as the artifact carries it: paths inside the artifact. */
static int portable_vmjson(qsnap_vm *vm, char **ret, qsnap_error *err)
{
	qsnap_def def;
	int r;

	def_copy(&def, &vm->def);
	for (size_t i = 0; i < def.n_drives; i++) {
		free(def.drives[i].path);
		def.drives[i].path = xasprintf("images/%s.%s", def.drives[i].id, def.drives[i].format);
	}
	if (def.kernel) {
		free(def.kernel);
		def.kernel = xstrdup("boot/kernel");
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = xstrdup("boot/initrd");
	}
	free(def.ram_dir); /* a path of this host */
	def.ram_dir = NULL;
	r = vmdef_to_json(&def, ret, err);
	qsnap_def_free(&def);
	return r;
}

/* Digests of files that have not changed since an earlier push or pull. */
static void recall(struct push *p, json_object *rec)
{
	for (size_t i = 0; i < p->n_files; i++) {
		struct pfile *f = &p->files[i];

		if (f->chunked) {
			char (*d)[DIGEST_LEN + 1] = xcalloc(f->n ? f->n : 1, sizeof(*d));

			if (oci_record_chunks(rec, p->vm->dirfd, f->key, OCI_CHUNK_SIZE, f->n, d))
				for (size_t j = 0; j < f->n; j++) {
					struct oci_blob *b = &p->blobs[f->first + j];

					b->known = true;
					b->zero = !d[j][0];
					memcpy(b->digest, d[j], sizeof(b->digest));
				}
			free(d);
		} else if (f->n == 1) {
			const char *d = oci_record_digest(rec, p->vm->dirfd, f->key);

			if (d) {
				p->blobs[f->first].known = true;
				snprintf(p->blobs[f->first].digest, sizeof(p->blobs[f->first].digest),
					 "%s", d);
			}
		}
	}
}

/* The digests for the next push; losing them costs hashing, not
 * correctness. */
static void remember(struct push *p, json_object *rec)
{
	qsnap_error e;

	for (size_t i = 0; i < p->n_files; i++) {
		struct pfile *f = &p->files[i];

		if (f->chunked) {
			const char **d = xcalloc(f->n ? f->n : 1, sizeof(char *));

			for (size_t j = 0; j < f->n; j++)
				d[j] = p->blobs[f->first + j].zero ? NULL : p->blobs[f->first + j].digest;
			oci_record_set_chunks(rec, p->vm->dirfd, f->key, OCI_CHUNK_SIZE, d, f->n);
			free(d);
		} else if (f->n == 1) {
			oci_record_set(rec, p->vm->dirfd, f->key, p->blobs[f->first].digest);
		}
	}
	oci_record_save(rec, p->vm->dirfd, &e);
}

static void push_free(struct push *p)
{
	for (size_t i = 0; i < p->n_files; i++) {
		closep(&p->files[i].fd);
		free(p->files[i].path);
		free(p->files[i].key);
	}
	free(p->files);
	for (size_t i = 0; i < p->n_blobs; i++)
		free(p->blobs[i].title);
	free(p->blobs);
}

static int run_phase(struct push *p, struct registry *reg, const char *phase, reg_job fn,
		     qsnap_error *err)
{
	int r;

	p->phase = phase;
	p->t0 = now_ms();
	r = reg_parallel(reg, p->n_blobs, THREADS, fn, p, tick, err);
	if (r >= 0)
		report(p, true);
	return r;
}

int qsnap_vm_push(qsnap_vm *vm, const char *name, const char *ref, const qsnap_push_opts *opts,
		  qsnap_error *err)
{
	static const qsnap_push_opts dflt = {0};
	struct push p = {.vm = vm, .opts = opts ? opts : &dflt, .phase = "digest"};
	struct oci_config cfg = {.kernel = -1, .initrd = -1};
	struct registry *reg = NULL;
	json_object *rec = NULL;
	_cleanup_free_ char *vmjson = NULL, *meta = NULL, *config = NULL, *manifest = NULL;
	qsnap_push_stats st = {0};
	struct snapshot *s;
	reg_conn *c = NULL;
	char cfg_digest[DIGEST_LEN + 1];
	bool have;
	int r;

	{
		struct reg_ref chk = {0};

		r = reg_ref_parse(ref, name, &chk, err);
		reg_ref_free(&chk);
		if (r < 0)
			return r;
	}
	r = find_snapshot(vm, name, &s, err);
	if (r < 0)
		return r;
	p.s = s;
	r = registry_open(ref, name, p.opts->insecure, true, &reg, err);
	if (r < 0)
		goto out;
	r = collect(&p, &cfg, err);
	if (r >= 0)
		r = portable_vmjson(vm, &vmjson, err);
	if (r >= 0) {
		_cleanup_free_ char *mp = xasprintf("%s/meta.json", s->dir);
		r = read_file(vm->dirfd, mp, &meta, NULL, err);
	}
	if (r < 0)
		goto out;
	rec = oci_record_load(vm->dirfd);
	recall(&p, rec);
	p.t0 = now_ms();
	r = run_phase(&p, reg, "digest", hash_job, err);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < p.n_blobs; i++)
		for (size_t j = 0; !p.blobs[i].zero && j < i; j++)
			if (!p.blobs[j].zero && !strcmp(p.blobs[i].digest, p.blobs[j].digest)) {
				p.blobs[i].dup = true;
				break;
			}
	r = run_phase(&p, reg, "check", head_job, err);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < p.n_blobs; i++)
		if (!p.blobs[i].zero && !p.blobs[i].dup && !p.blobs[i].present)
			p.to_send += p.blobs[i].size;
	r = run_phase(&p, reg, "upload", upload_job, err);
	if (r < 0)
		goto out;

	r = oci_config_build(&cfg, p.blobs, vmjson, meta, &config, err);
	if (r < 0)
		goto out;
	sha256_buf(config, strlen(config), cfg_digest);
	c = reg_conn_new();
	r = reg_blob_exists(reg, c, cfg_digest, &have, err);
	if (r >= 0 && !have)
		r = reg_blob_upload_mem(reg, c, config, strlen(config), cfg_digest, err);
	if (r < 0)
		goto out;
	manifest = oci_manifest_build(p.blobs, p.n_blobs, cfg_digest, strlen(config), s);
	r = reg_manifest_put(reg, c, OCI_MANIFEST_TYPE, manifest, err);
	if (r < 0)
		goto out;

	sha256_buf(manifest, strlen(manifest), st.digest);
	st.blobs = 1;
	st.bytes = strlen(config);
	if (have) {
		st.present++;
		st.present_bytes += strlen(config);
	} else {
		st.uploaded++;
		st.uploaded_bytes += strlen(config);
	}
	for (size_t i = 0; i < p.n_blobs; i++) {
		const struct oci_blob *b = &p.blobs[i];

		if (b->zero) {
			st.zero_chunks++;
			st.zero_bytes += b->size;
			continue;
		}
		if (b->dup)
			continue;
		st.blobs++;
		st.bytes += b->size;
		if (b->uploaded) {
			st.uploaded++;
			st.uploaded_bytes += b->size;
		} else {
			st.present++;
			st.present_bytes += b->size;
		}
	}
	if (p.opts->stats)
		*p.opts->stats = st;
	remember(&p, rec);
out:
	json_object_put(rec);
	reg_conn_free(c);
	registry_close(reg);
	oci_config_free(&cfg);
	push_free(&p);
	if (r < 0)
		r = qerr_prefix(err, "pushing snapshot '%s' of %s to %s failed", name, vm->dir, ref);
	return r;
}
