/* SPDX-License-Identifier: MIT */
/* Reading an export (a tar file, compressed or not): its manifest must come
 * first and say it is one; every other file must be one the manifest
 * lists, under a name an export may hold, with the size and checksum it
 * gives. vm.json and meta.json are read into memory; the disks, kernel,
 * initrd, machine state, RAM file and older deltas are staged where the
 * new VM directory has them, their zeros left as holes (a sparse entry's
 * holes are read as zeros). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/import.h"

#define CHUNK (1 << 20)
#define MAX_SMALL_FILE (1 << 20) /* manifest, vm.json, meta.json */

size_t import_delta_index(const char *path)
{
	const char *k = path + strlen(EXPORT_DELTA);
	size_t n = 0;

	if (strncmp(path, EXPORT_DELTA, strlen(EXPORT_DELTA)) || *k < '1' || *k > '9')
		return 0;
	for (; *k >= '0' && *k <= '9' && n <= RAM_CHAIN_MAX; k++)
		n = n * 10 + (size_t)(*k - '0');
	return *k || n > RAM_CHAIN_MAX ? 0 : n;
}

/* The names an export may hold besides the manifest. */
static bool allowed_path(const char *p)
{
	const char *dot;

	if (!strcmp(p, VMDIR_DEF) || !strcmp(p, EXPORT_META) ||
	    !strcmp(p, EXPORT_VMSTATE) || !strcmp(p, VMDIR_KERNEL) ||
	    !strcmp(p, VMDIR_INITRD) || !strcmp(p, EXPORT_RAM))
		return true;
	if (!strncmp(p, EXPORT_DELTA, strlen(EXPORT_DELTA)))
		return import_delta_index(p) > 0;
	if (strncmp(p, "images/", 7) || !(dot = strrchr(p, '.')))
		return false;
	if (strcmp(dot, ".qcow2") && strcmp(dot, ".raw"))
		return false;
	{
		_cleanup_free_ char *id = strndup(p + 7, (size_t)(dot - p - 7));
		return id && drive_id_valid(id);
	}
}

struct mfile *import_find_mfile(struct import *im, const char *path)
{
	for (size_t i = 0; i < im->n_files; i++)
		if (!strcmp(im->files[i].path, path))
			return &im->files[i];
	return NULL;
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Write n bytes at fd's offset, its zero pages (4 KiB, a RAM page) left
 * as holes: skipped, and the file's length set at the end. */
static int write_sparse(int fd, const char *p, size_t n, const char *dst, qsnap_error *err)
{
	const size_t page = 4096;

	for (size_t at = 0; at < n;) {
		size_t end = at;

		while (end < n && all_zero(p + end, end + page <= n ? page : n - end))
			end += page;
		if (end > at) {
			end = end < n ? end : n;
			if (lseek(fd, (off_t)(end - at), SEEK_CUR) < 0)
				return qerr(err, errno, "cannot write %s: %s", dst, strerror(errno));
			at = end;
			continue;
		}
		while (end < n && !all_zero(p + end, end + page <= n ? page : n - end))
			end += page;
		end = end < n ? end : n;
		while (at < end) {
			ssize_t w = write(fd, p + at, end - at);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return qerr(err, errno, "cannot write %s: %s", dst, strerror(errno));
			at += (size_t)w;
		}
	}
	return 0;
}

int import_parse_manifest(struct import *im, const char *text, qsnap_error *err)
{
	_cleanup_json_ json_object *o = json_tokener_parse(text);
	json_object *snap = jobj(o, "snapshot"), *files = jarr(o, "files");
	const char *name = jstr(snap, "name"), *mode = jstr(snap, "mode");

	if (!o || !jstr(o, "format") || strcmp(jstr(o, "format"), EXPORT_FORMAT))
		return qerr(err, EINVAL, "%s is not a qsnap export (its %s is not one): make one with qsnap export",
			    im->input, EXPORT_MANIFEST);
	if (jint(o, "version", -1) != EXPORT_VERSION)
		return qerr(err, EINVAL, "%s is a qsnap export of version %lld, this qsnap reads version %d: import it with a newer qsnap",
			    im->input, (long long)jint(o, "version", -1), EXPORT_VERSION);
	if (!name || !qsnap_name_valid(name) || !mode || !files)
		return qerr(err, EINVAL, "%s: its manifest is damaged (snapshot or files)", im->input);
	if (qsnap_ram_mode_parse(mode, &im->mode) < 0)
		return qerr(err, EINVAL, "%s holds a '%s' snapshot; this qsnap imports 'stream' and 'shared' snapshots only",
			    im->input, mode);
	im->name = xstrdup(name);
	im->created = jint(snap, "created", 0);
	im->was_running = jbool(snap, "was_running", true);
	for (size_t i = 0; i < json_object_array_length(files); i++) {
		json_object *f = json_object_array_get_idx(files, i);
		const char *path = jstr(f, "path"), *sum = jstr(f, "checksum");
		int64_t size = jint(f, "size", -1);

		if (!path || !allowed_path(path) || import_find_mfile(im, path) ||
		    !checksum_valid(sum) || size < 0)
			return qerr(err, EINVAL, "%s: its manifest is damaged (file %zu)", im->input, i);
		im->files = xrealloc(im->files, (im->n_files + 1) * sizeof(*im->files));
		im->files[im->n_files++] = (struct mfile){
			.path = xstrdup(path), .size = (uint64_t)size, .checksum = xstrdup(sum)};
		im->progress.total += (uint64_t)size;
	}
	for (const char *const *p = (const char *const[]){VMDIR_DEF, EXPORT_META,
							  EXPORT_VMSTATE, NULL};
	     *p; p++)
		if (!import_find_mfile(im, *p))
			return qerr(err, EINVAL, "%s: its manifest lists no %s", im->input, *p);
	/* A RAM file and deltas only with a shared-RAM snapshot, and always with one. */
	if ((im->mode == QSNAP_RAM_SHARED) != !!import_find_mfile(im, EXPORT_RAM))
		return qerr(err, EINVAL, "%s: its manifest %s %s for a '%s' snapshot: the archive is damaged",
			    im->input, im->mode == QSNAP_RAM_SHARED ? "lists no" : "lists a",
			    EXPORT_RAM, mode);
	for (size_t i = 0; i < im->n_files; i++)
		if (im->mode != QSNAP_RAM_SHARED && import_delta_index(im->files[i].path))
			return qerr(err, EINVAL, "%s: its manifest lists %s for a '%s' snapshot: the archive is damaged",
				    im->input, im->files[i].path, mode);
	return 0;
}

/* Where a file of the archive goes in the staging directory. */
static char *stage_path(struct import *im, const char *path)
{
	_cleanup_free_ char *dir = layout_snapshot(im->name);

	/* snapshot/vmstate, ram, delta.<k>: into the snapshot's directory. */
	if (!strcmp(path, EXPORT_VMSTATE) || !strcmp(path, EXPORT_RAM) ||
	    import_delta_index(path))
		return layout_in(dir, path + strlen("snapshot/"));
	return xstrdup(path); /* images/..., boot/...: where a VM directory has them */
}

static int ar_err(struct import *im, struct archive *a, qsnap_error *err)
{
	return qerr(err, EINVAL, "cannot read %s: %s: it is damaged or not a tar file", im->input,
		    archive_error_string(a) ? archive_error_string(a) : "unknown error");
}

/* Read one entry's data into memory (small files, when ret_mem is set) or
 * a staged file, checking its size and checksum. */
static int read_entry(struct import *im, struct archive *a, struct mfile *mf, char **ret_mem,
		      qsnap_error *err)
{
	_cleanup_free_ char *dst = ret_mem ? NULL : stage_path(im, mf->path);
	_cleanup_free_ char *buf = NULL, *sum = NULL;
	_cleanup_close_ int fd = -1;
	size_t len = 0;
	struct hasher h;
	int r = 0;

	if (dst) {
		fd = openat(im->stagefd, dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return qerr(err, errno, "cannot create %s: %s", dst, strerror(errno));
		buf = xmalloc(CHUNK);
	} else {
		if (mf->size > MAX_SMALL_FILE)
			return qerr(err, EINVAL, "%s: %s is too large (%llu bytes)", im->input,
				    mf->path, (unsigned long long)mf->size);
		buf = xmalloc(mf->size + 1);
	}
	hasher_init(&h);
	for (;;) {
		char *at = dst ? buf : buf + len;
		size_t room = dst ? CHUNK : mf->size - len + 1;
		la_ssize_t n = archive_read_data(a, at, room);

		if (n < 0) {
			r = ar_err(im, a, err);
			break;
		}
		if (n == 0)
			break;
		if (h.bytes + (uint64_t)n > mf->size) {
			r = qerr(err, EINVAL, "%s: %s is longer than its manifest says", im->input,
				 mf->path);
			break;
		}
		hasher_update(&h, at, (size_t)n);
		/* Zeros stay holes: a mapped-ram machine state or a RAM file is
		 * as long as the guest's RAM and mostly holes. */
		if (dst) {
			r = write_sparse(fd, at, (size_t)n, dst, err);
			if (r < 0)
				break;
		} else {
			len += (size_t)n;
		}
		im->done += (uint64_t)n;
		progress_report(&im->progress, im->done, false);
	}
	if (r == 0 && fd >= 0 && ftruncate(fd, (off_t)h.bytes) < 0)
		r = qerr(err, errno, "cannot write %s: %s", dst, strerror(errno));
	if (r < 0) {
		hasher_free(&h);
		return r;
	}
	if (h.bytes != mf->size) {
		hasher_free(&h);
		return qerr(err, EINVAL, "%s: %s has %llu bytes, its manifest says %llu: the archive is damaged",
			    im->input, mf->path, (unsigned long long)h.bytes,
			    (unsigned long long)mf->size);
	}
	sum = hasher_final(&h);
	if (mf->checksum && strcmp(sum, mf->checksum))
		return qerr(err, EINVAL, "%s: %s does not match its checksum (%s, expected %s): the archive is damaged",
			    im->input, mf->path, sum, mf->checksum);
	if (fd >= 0 && fsync(fd) < 0)
		return qerr(err, errno, "cannot sync %s: %s", dst, strerror(errno));
	if (!dst) {
		buf[len] = '\0';
		*ret_mem = TAKE_PTR(buf);
	}
	mf->seen = true;
	return 0;
}

/* The machine state and the deltas are held to the guest's RAM size
 * (vm.json, which an export writes before them), the RAM file to be it,
 * before a byte of them is written. */
static int check_vmstate_size(struct import *im, const struct mfile *mf, qsnap_error *err)
{
	_cleanup_json_ json_object *o = NULL;
	bool ram = !strcmp(mf->path, EXPORT_RAM);
	int64_t memory;

	if (strcmp(mf->path, EXPORT_VMSTATE) && !ram && !import_delta_index(mf->path))
		return 0;
	o = im->vmjson ? json_tokener_parse(im->vmjson) : NULL;
	memory = jint(o, "memory", -1);
	if (memory <= 0)
		return qerr(err, EINVAL, "%s holds %s before a vm.json that gives the RAM size: not an archive qsnap export wrote",
			    im->input, mf->path);
	if (ram && mf->size != (uint64_t)memory)
		return qerr(err, EINVAL, "%s: its RAM file has %llu bytes, its vm.json says %lld MiB: the archive is damaged",
			    im->input, (unsigned long long)mf->size, (long long)(memory >> 20));
	if (mf->size > foreign_vmstate_max((uint64_t)memory))
		return qerr(err, EINVAL, "%s: its %s has %llu bytes, too many for a guest of %lld MiB: the archive is damaged",
			    im->input, mf->path, (unsigned long long)mf->size,
			    (long long)(memory >> 20));
	return 0;
}

int import_unpack(struct import *im, qsnap_error *err)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	_cleanup_close_ int fd = open(im->input, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *manifest = NULL;
	bool first = true;
	int r = 0;

	if (fd < 0) {
		archive_read_free(a);
		return qerr(err, errno, "cannot open %s: %s", im->input, strerror(errno));
	}
	archive_read_support_format_tar(a);
	/* A tar file the user compressed (gzip, zstd, xz) reads as well. */
	archive_read_support_filter_all(a);
	if (archive_read_open_fd(a, fd, CHUNK) != ARCHIVE_OK) {
		r = ar_err(im, a, err);
		goto out;
	}
	for (;;) {
		const char *path;
		struct mfile *mf;
		char **mem = NULL;

		r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF) {
			r = 0;
			break;
		}
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			r = ar_err(im, a, err);
			goto out;
		}
		path = archive_entry_pathname(e);
		if (!path || archive_entry_filetype(e) != AE_IFREG) {
			r = qerr(err, EINVAL, "%s holds '%s', which is not a plain file: not a qsnap export, or damaged",
				 im->input, path ? path : "(no name)");
			goto out;
		}
		if (first) {
			struct mfile m = {.path = (char *)path,
					  .size = (uint64_t)archive_entry_size(e)};

			first = false;
			if (strcmp(path, EXPORT_MANIFEST)) {
				r = qerr(err, EINVAL, "%s is not a qsnap export (it does not start with %s): make one with qsnap export",
					 im->input, EXPORT_MANIFEST);
				goto out;
			}
			r = read_entry(im, a, &m, &manifest, err);
			if (r < 0)
				goto out;
			r = import_parse_manifest(im, manifest, err);
			if (r < 0)
				goto out;
			{
				_cleanup_free_ char *sd = layout_snapshot(im->name);
				if (mkdirat(im->stagefd, VMDIR_SNAPSHOTS, 0755) < 0 ||
				    mkdirat(im->stagefd, sd, 0755) < 0 ||
				    mkdirat(im->stagefd, VMDIR_IMAGES, 0755) < 0 ||
				    mkdirat(im->stagefd, VMDIR_BOOT, 0755) < 0) {
					r = qerr(err, errno, "cannot create the layout: %s",
						 strerror(errno));
					goto out;
				}
			}
			continue;
		}
		mf = import_find_mfile(im, path);
		if (!mf || mf->seen) {
			r = qerr(err, EINVAL, "%s holds '%s', which its manifest does not list%s: the archive is damaged",
				 im->input, path, mf ? " twice" : "");
			goto out;
		}
		if (archive_entry_size_is_set(e) && (uint64_t)archive_entry_size(e) != mf->size) {
			r = qerr(err, EINVAL, "%s: %s has %lld bytes, its manifest says %llu: the archive is damaged",
				 im->input, path, (long long)archive_entry_size(e),
				 (unsigned long long)mf->size);
			goto out;
		}
		r = check_vmstate_size(im, mf, err);
		if (r < 0)
			goto out;
		if (!strcmp(path, VMDIR_DEF))
			mem = &im->vmjson;
		else if (!strcmp(path, EXPORT_META))
			mem = &im->meta;
		r = read_entry(im, a, mf, mem, err);
		if (r < 0)
			goto out;
	}
	if (first) {
		r = qerr(err, EINVAL, "%s is empty: not a qsnap export", im->input);
		goto out;
	}
	for (size_t i = 0; i < im->n_files; i++)
		if (!im->files[i].seen) {
			r = qerr(err, EINVAL, "%s has no %s, which its manifest lists: the archive is incomplete",
				 im->input, im->files[i].path);
			goto out;
		}
out:
	archive_read_free(a);
	return r;
}
