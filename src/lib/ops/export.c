/* SPDX-License-Identifier: MIT */
/* Exporting a snapshot as one tar file that another host can import with
 * nothing else: the manifest (qsnap-export.json: the snapshot, and the size
 * and checksum of every other file) comes first, then vm.json (paths
 * inside the archive), the snapshot's meta.json and machine state, a
 * shared-RAM snapshot's RAM file and a differential one's older deltas,
 * the kernel and initrd, and every drive flattened into one standalone
 * image as it was at the snapshot. Files with holes (a RAM file, a
 * mapped-ram machine state) go in as sparse entries (GNU sparse 1.0 in
 * pax headers, which GNU tar and libarchive read): the holes take no room
 * in the archive. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define CHUNK (1 << 20)
/* Holes shorter than this are written as zeros: the sparse map (one line
 * per extent in the entry's data) stays at most one per 64 KiB. */
#define MIN_HOLE (64 << 10)

/* A range of a file that holds data. */
struct extent {
	uint64_t off, len;
};

/* One file of the archive: from disk (src) or from memory (data). */
struct xfile {
	char *name;
	char *src;
	char *data;
	uint64_t size;
	char *checksum;
};

struct export {
	qsnap_vm *vm;
	const struct snapshot *s;
	const qsnap_export_opts *opts;
	char *tmpdir; /* flattened images, beside the output */
	struct xfile *files;
	size_t n_files;
	uint64_t done;
	struct progress progress; /* its total grows as files are found */
};

static void xfiles_free(struct export *x)
{
	for (size_t i = 0; i < x->n_files; i++) {
		free(x->files[i].name);
		free(x->files[i].src);
		free(x->files[i].data);
		free(x->files[i].checksum);
	}
	free(x->files);
}

static struct xfile *add_file(struct export *x, const char *name)
{
	struct xfile *f;

	x->files = xrealloc(x->files, (x->n_files + 1) * sizeof(*x->files));
	f = &x->files[x->n_files++];
	memset(f, 0, sizeof(*f));
	f->name = xstrdup(name);
	return f;
}

/* A file from disk; checksum is the one known already, or NULL to compute. */
static int add_disk_file(struct export *x, const char *name, const char *src,
			 const char *checksum, qsnap_error *err)
{
	_cleanup_close_ int fd = open(src, O_RDONLY | O_CLOEXEC);
	struct xfile *f;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return qerr(err, errno, "cannot open %s: %s", src, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return qerr(err, EINVAL, "%s is not a regular file: it cannot go into an export", src);
	f = add_file(x, name);
	f->src = xstrdup(src);
	f->size = (uint64_t)st.st_size;
	if (checksum)
		f->checksum = xstrdup(checksum);
	else if (checksum_fd(fd, src, &f->checksum, err) < 0)
		return -err->code;
	x->progress.total += f->size;
	return 0;
}

static void add_mem_file(struct export *x, const char *name, const char *text)
{
	struct xfile *f = add_file(x, name);
	struct hasher h;

	f->data = xstrdup(text);
	f->size = strlen(text);
	hasher_init(&h);
	hasher_update(&h, f->data, f->size);
	f->checksum = hasher_final(&h);
}

/* Every drive as one standalone image in tmpdir; vm.json names them. */
static int flatten_drives(struct export *x, qsnap_def *def, qsnap_error *err)
{
	bool alive = vm_qemu_alive(x->vm);

	for (size_t i = 0; i < def->n_drives; i++) {
		qsnap_drive_def *d = &def->drives[i];
		const char *layer = NULL;
		/* Writable drives get a qcow2 layer on top anyway; read-only ones
		 * are used as they are, so they keep their format. */
		const char *fmt = d->readonly ? d->format : "qcow2";
		_cleanup_free_ char *name = layout_image(d->id, fmt);
		_cleanup_free_ char *dst = xasprintf("%s/%s.%s", x->tmpdir, d->id, fmt);
		_cleanup_free_ char *phase = xasprintf("flatten %s", d->id);
		_cleanup_free_ char *src = NULL, *img = qemu_img_for(x->vm->def.qemu);
		int r;

		for (size_t j = 0; !d->readonly && j < x->s->n_drives; j++)
			if (!strcmp(x->s->drives[j].drive, d->id))
				layer = x->s->drives[j].layer;
		if (!d->readonly && !layer)
			return qerr(err, ENOENT, "snapshot '%s' has no state for drive '%s' (was the drive added to vm.json after the snapshot?)",
				    x->s->name, d->id);
		src = layer ? vm_path(x->vm, layer) : xstrdup(d->path);
		r = img_convert(&(struct img_convert){
					  .qemu_img = img,
					  .src = src,
					  .src_format = layer ? "qcow2" : d->format,
					  .force_share = alive,
					  .dst = dst,
					  .dst_format = fmt,
					  .compress = x->opts->compress && !strcmp(fmt, "qcow2"),
					  .phase = phase,
					  .progress = x->opts->progress,
					  .userdata = x->opts->userdata,
				  },
				  err);
		if (r < 0)
			return qerr_prefix(err, "flattening drive '%s'", d->id);
		r = add_disk_file(x, name, dst, NULL, err);
		if (r < 0)
			return r;
		free(d->path);
		d->path = xstrdup(name);
		free(d->format);
		d->format = xstrdup(fmt);
	}
	return 0;
}

/* A file of the snapshot's directory, held to the size it was saved with. */
static int add_snap_file(struct export *x, const char *name, const char *rel, uint64_t size,
			 const char *checksum, qsnap_error *err)
{
	_cleanup_free_ char *path = vm_path(x->vm, rel);
	int r = add_disk_file(x, name, path, checksum, err);

	if (r < 0)
		return qerr_prefix(err, "snapshot '%s'", x->s->name);
	if (size && x->files[x->n_files - 1].size != size)
		return qerr(err, EINVAL, "snapshot '%s': %s has %llu bytes, %llu were saved: the file is damaged (qsnap verify)",
			    x->s->name, path, (unsigned long long)x->files[x->n_files - 1].size,
			    (unsigned long long)size);
	return 0;
}

/* A shared-RAM snapshot's RAM file, and a differential one's older deltas:
 * with the checksums they were saved with, which the copy into the
 * archive checks (a RAM file saved before RAM checksums is hashed now). */
static int add_ram_files(struct export *x, qsnap_error *err)
{
	const struct snapshot *s = x->s;
	_cleanup_free_ char *ram = layout_in(s->dir, SNAP_RAM);
	int r;

	r = add_snap_file(x, EXPORT_RAM, ram, s->memory ? s->memory : x->vm->def.memory,
			  s->ram_checksum, err);
	for (size_t k = 1; r >= 0 && k <= s->n_ram_chain; k++) {
		const struct ram_delta *d = &s->ram_chain[k - 1];
		_cleanup_free_ char *rel = snapshot_delta(s, k);
		_cleanup_free_ char *name = xasprintf(EXPORT_DELTA "%zu", k);

		r = add_snap_file(x, name, rel, d->size, d->checksum, err);
	}
	return r;
}

static int collect(struct export *x, char **ret_manifest, qsnap_error *err)
{
	const struct snapshot *s = x->s;
	_cleanup_free_ char *vmstate = xasprintf("%s/%s/vmstate", x->vm->dir, s->dir);
	_cleanup_free_ char *meta = NULL, *vmjson = NULL;
	_cleanup_json_ json_object *m = NULL;
	json_object *files;
	uint64_t vmstate_size;
	qsnap_def def;
	int r;

	/* The archive holds a plain machine state file. */
	if (s->compressed)
		return qerr(err, ENOTSUP, "snapshot '%s' is compressed: export takes snapshots saved without --compress; restore it, then save it again without --compress",
			    s->name);
	def_copy(&def, &x->vm->def);
	r = flatten_drives(x, &def, err);
	if (r >= 0 && def.kernel) {
		r = add_disk_file(x, VMDIR_KERNEL, def.kernel, NULL, err);
		free(def.kernel);
		def.kernel = xstrdup(VMDIR_KERNEL);
	}
	if (r >= 0 && def.initrd) {
		r = add_disk_file(x, VMDIR_INITRD, def.initrd, NULL, err);
		free(def.initrd);
		def.initrd = xstrdup(VMDIR_INITRD);
	}
	if (r >= 0)
		r = vmdef_to_json(&def, &vmjson, err);
	def_clear(&def);
	if (r < 0)
		return r;
	add_mem_file(x, VMDIR_DEF, vmjson);
	r = meta_read(x->vm->dirfd, s, &meta, err);
	if (r < 0)
		return r;
	add_mem_file(x, EXPORT_META, meta);
	/* The checksum recorded at save time: copying checks the file against it. */
	r = add_disk_file(x, EXPORT_VMSTATE, vmstate, s->vmstate_checksum, err);
	if (r < 0)
		return qerr_prefix(err, "snapshot '%s'", s->name);
	vmstate_size = x->files[x->n_files - 1].size;
	if (s->vmstate_size && vmstate_size != s->vmstate_size)
		return qerr(err, EINVAL, "snapshot '%s': %s has %llu bytes, %llu were saved: the file is damaged",
			    s->name, vmstate, (unsigned long long)vmstate_size,
			    (unsigned long long)s->vmstate_size);
	if (s->mode == QSNAP_RAM_SHARED) {
		r = add_ram_files(x, err);
		if (r < 0)
			return r;
	}

	files = json_object_new_array();
	for (size_t i = 0; i < x->n_files; i++) {
		const struct xfile *f = &x->files[i];

		json_object_array_add(files, jbuild("path", json_object_new_string(f->name), "size",
						    json_object_new_int64((int64_t)f->size),
						    "checksum", json_object_new_string(f->checksum),
						    NULL));
	}
	m = jbuild("format", json_object_new_string(EXPORT_FORMAT), "version",
		   json_object_new_int(EXPORT_VERSION), "snapshot",
		   jbuild("name", json_object_new_string(s->name), "created",
			  json_object_new_int64(s->created), "mode",
			  json_object_new_string(qsnap_ram_mode_name(s->mode)), "was_running",
			  json_object_new_boolean(s->was_running), "vmstate_size",
			  json_object_new_int64((int64_t)vmstate_size), "ram_base",
			  s->ram_base ? json_object_new_string(s->ram_base) : NULL, NULL),
		   "files", files, NULL);
	*ret_manifest = xasprintf("%s\n", json_object_to_json_string_ext(
						  m, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	return 0;
}

static void report(struct export *x, bool finished)
{
	progress_report(&x->progress, x->done, finished);
}

static int ar_err(struct archive *a, const char *what, qsnap_error *err)
{
	return qerr(err, archive_errno(a) > 0 ? archive_errno(a) : EIO, "cannot write %s: %s",
		    what, archive_error_string(a) ? archive_error_string(a) : "unknown error");
}

/* The data extents of a file of size bytes (SEEK_DATA, SEEK_HOLE), holes
 * shorter than MIN_HOLE counted as data. */
static int file_extents(int fd, const char *path, uint64_t size, struct extent **ret,
			size_t *ret_n, qsnap_error *err)
{
	_cleanup_free_ struct extent *ext = NULL;
	size_t n = 0;
	uint64_t pos = 0;

	while (pos < size) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break; /* a hole to the end */
		if (data < 0)
			return qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
		if ((uint64_t)data >= size)
			break;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return qerr(err, errno, "cannot read %s: %s", path, strerror(errno));
		if ((uint64_t)hole > size)
			hole = (off_t)size;
		if (n && (uint64_t)data - (ext[n - 1].off + ext[n - 1].len) < MIN_HOLE) {
			ext[n - 1].len = (uint64_t)hole - ext[n - 1].off;
		} else {
			ext = xrealloc(ext, (n + 1) * sizeof(*ext));
			ext[n++] = (struct extent){.off = (uint64_t)data,
						   .len = (uint64_t)(hole - data)};
		}
		pos = (uint64_t)hole;
	}
	*ret = TAKE_PTR(ext);
	*ret_n = n;
	return 0;
}

/* Bytes [pos, end) of f into the archive and the hasher: read from fd, or
 * zeros (a hole: the sparse entry skips them, nothing is read). */
static int write_range(struct export *x, struct archive *a, const struct xfile *f, int fd,
		       char *buf, const char *zeros, uint64_t pos, uint64_t end, struct hasher *h,
		       const char *output, qsnap_error *err)
{
	while (pos < end) {
		size_t want = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
		const char *p = zeros;
		ssize_t n = (ssize_t)want;

		if (fd >= 0) {
			n = pread(fd, buf, want, (off_t)pos);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? qerr(err, errno, "cannot read %s: %s", f->src,
						    strerror(errno))
					     : qerr(err, EIO, "%s became shorter while it was exported",
						    f->src);
			p = buf;
		}
		hasher_update(h, p, (size_t)n);
		if (archive_write_data(a, p, (size_t)n) != n)
			return ar_err(a, output, err);
		pos += (uint64_t)n;
		x->done += (uint64_t)n;
		report(x, false);
	}
	return 0;
}

static int write_entry(struct export *x, struct archive *a, const struct xfile *f,
		       const char *output, qsnap_error *err)
{
	struct archive_entry *e = archive_entry_new();
	_cleanup_free_ char *buf = NULL, *zeros = NULL, *sum = NULL;
	_cleanup_free_ struct extent *ext = NULL;
	_cleanup_close_ int fd = -1;
	size_t n_ext = 0;
	struct hasher h;
	uint64_t pos = 0;
	int r = 0;

	if (f->src) {
		fd = open(f->src, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			archive_entry_free(e);
			return qerr(err, errno, "cannot open %s: %s", f->src, strerror(errno));
		}
		r = file_extents(fd, f->src, f->size, &ext, &n_ext, err);
		if (r < 0) {
			archive_entry_free(e);
			return r;
		}
	}
	archive_entry_set_pathname(e, f->name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)f->size);
	archive_entry_set_mtime(e, time(NULL), 0);
	/* A file with holes: a sparse entry, its data extents listed. */
	if (f->src && !(n_ext == 1 && ext[0].off == 0 && ext[0].len == f->size))
		for (size_t i = 0; i < n_ext; i++)
			archive_entry_sparse_add_entry(e, (la_int64_t)ext[i].off,
						       (la_int64_t)ext[i].len);
	if (archive_write_header(a, e) != ARCHIVE_OK) {
		archive_entry_free(e);
		return ar_err(a, output, err);
	}
	archive_entry_free(e);
	if (f->data) {
		if (archive_write_data(a, f->data, f->size) != (la_ssize_t)f->size)
			return ar_err(a, output, err);
		return 0;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	buf = xmalloc(CHUNK);
	zeros = xcalloc(1, CHUNK);
	hasher_init(&h);
	for (size_t i = 0; r >= 0 && i <= n_ext; i++) {
		uint64_t off = i < n_ext ? ext[i].off : f->size;

		r = write_range(x, a, f, -1, buf, zeros, pos, off, &h, output, err);
		if (r >= 0 && i < n_ext)
			r = write_range(x, a, f, fd, buf, zeros, off, off + ext[i].len, &h, output,
					err);
		pos = i < n_ext ? off + ext[i].len : f->size;
	}
	if (r < 0) {
		hasher_free(&h);
		return r;
	}
	sum = hasher_final(&h);
	/* What went into the archive is what the manifest promises. */
	if (strcmp(sum, f->checksum))
		return qerr(err, EIO, "%s does not match its checksum (%s, expected %s): it is damaged or changed while it was exported",
			    f->src, sum, f->checksum);
	return 0;
}

static int write_archive(struct export *x, const char *manifest, const char *tmp,
			 const char *output, qsnap_error *err)
{
	struct archive *a = archive_write_new();
	_cleanup_close_ int fd = -1;
	struct xfile mf = {.name = EXPORT_MANIFEST, .data = (char *)manifest,
			   .size = strlen(manifest)};
	int r = 0;

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		archive_write_free(a);
		return qerr(err, errno, "cannot create %s: %s", tmp, strerror(errno));
	}
	/* pax: no limits on sizes or name lengths. */
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(a, 64 << 10) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(a, fd) != ARCHIVE_OK) {
		r = ar_err(a, output, err);
		archive_write_free(a);
		return r;
	}
	r = write_entry(x, a, &mf, output, err);
	for (size_t i = 0; r >= 0 && i < x->n_files; i++)
		r = write_entry(x, a, &x->files[i], output, err);
	if (r >= 0 && archive_write_close(a) != ARCHIVE_OK)
		r = ar_err(a, output, err);
	archive_write_free(a);
	if (r >= 0 && fsync(fd) < 0)
		r = qerr(err, errno, "cannot sync %s: %s", tmp, strerror(errno));
	return r;
}

int qsnap_vm_export(qsnap_vm *vm, const char *name, const char *output,
		    const qsnap_export_opts *opts, qsnap_error *err)
{
	qsnap_export_opts o;
	struct export x = {.vm = vm, .opts = &o};
	_cleanup_free_ char *tmp = NULL, *manifest = NULL;
	struct snapshot *s;
	struct stat st;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_export_opts", err)) < 0)
		return r;
	progress_begin(&x.progress, "export", x.opts->progress, x.opts->userdata, 0);

	r = find_snapshot(vm, name, &s, err);
	if (r < 0)
		return r;
	x.s = s;
	if (lstat(output, &st) == 0 && (!x.opts->replace || !S_ISREG(st.st_mode)))
		return qerr(err, EEXIST, "%s exists: choose another name%s", output,
			    S_ISREG(st.st_mode) ? ", or pass --replace" : "");
	r = output_beside(output, "export", &x.tmpdir, err);
	if (r < 0)
		return r;
	r = output_beside(output, "partial", &tmp, err);
	if (r < 0)
		goto out;
	rm_rf(AT_FDCWD, x.tmpdir);
	unlink(tmp);
	if (mkdir(x.tmpdir, 0700) < 0) {
		r = qerr(err, errno, "cannot create %s: %s", x.tmpdir, strerror(errno));
		goto out;
	}
	r = collect(&x, &manifest, err);
	if (r >= 0)
		r = write_archive(&x, manifest, tmp, output, err);
	if (r >= 0)
		r = output_take(tmp, output, x.opts->replace, err);
	if (r >= 0) {
		_cleanup_free_ char *c = xstrdup(output);

		report(&x, true);
		r = fsync_dir(AT_FDCWD, dirname(c), err);
	}
out:
	rm_rf(AT_FDCWD, x.tmpdir);
	if (r < 0) {
		if (tmp)
			unlink(tmp);
		r = qerr_prefix(err, "exporting snapshot '%s' of %s to %s failed", name, vm->dir,
				output);
	}
	free(x.tmpdir);
	xfiles_free(&x);
	return r;
}
