/* SPDX-License-Identifier: MIT */
/* Importing an exported snapshot as a new VM directory. Everything is
 * unpacked into a hidden directory beside the target and checked against
 * the manifest; only then is it renamed to the target, so a damaged or
 * foreign archive leaves nothing behind. The exported disks become the new
 * VM's base images (images/), each with an empty frozen layer for the
 * snapshot and an active layer on top, as after a restore. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/ops.h"

#define CHUNK (1 << 20)
#define MAX_SMALL_FILE (1 << 20) /* manifest, vm.json, meta.json */

struct mfile {
	char *path; /* in the archive */
	uint64_t size;
	char *checksum; /* NULL: not checked (the manifest itself) */
	bool seen;
};

struct import {
	const char *input;
	const qsnap_import_opts *opts;
	int stagefd;
	char *name; /* the snapshot */
	char *mode;
	int64_t created;
	bool was_running;
	struct mfile *files;
	size_t n_files;
	char *vmjson, *meta; /* the small files, read into memory */
	uint64_t done;
	struct progress progress; /* its total grows as files are found */
};

static void import_free(struct import *im)
{
	for (size_t i = 0; i < im->n_files; i++) {
		free(im->files[i].path);
		free(im->files[i].checksum);
	}
	free(im->files);
	free(im->name);
	free(im->mode);
	free(im->vmjson);
	free(im->meta);
}

static void report(struct import *x, bool finished)
{
	progress_report(&x->progress, x->done, finished);
}

/* The names an export may hold besides the manifest. */
static bool allowed_path(const char *p)
{
	const char *dot;

	if (!strcmp(p, "vm.json") || !strcmp(p, "snapshot/meta.json") ||
	    !strcmp(p, "snapshot/vmstate") || !strcmp(p, "boot/kernel") ||
	    !strcmp(p, "boot/initrd"))
		return true;
	if (strncmp(p, "images/", 7) || !(dot = strrchr(p, '.')))
		return false;
	if (strcmp(dot, ".qcow2") && strcmp(dot, ".raw"))
		return false;
	{
		_cleanup_free_ char *id = strndup(p + 7, (size_t)(dot - p - 7));
		return id && drive_id_valid(id);
	}
}

static struct mfile *find_mfile(struct import *im, const char *path)
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

static int parse_manifest(struct import *im, const char *text, qsnap_error *err)
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
	if (strcmp(mode, "stream"))
		return qerr(err, EINVAL, "%s holds a '%s' snapshot; this qsnap imports 'stream' snapshots only",
			    im->input, mode);
	im->name = xstrdup(name);
	im->mode = xstrdup(mode);
	im->created = jint(snap, "created", 0);
	im->was_running = jbool(snap, "was_running", true);
	for (size_t i = 0; i < json_object_array_length(files); i++) {
		json_object *f = json_object_array_get_idx(files, i);
		const char *path = jstr(f, "path"), *sum = jstr(f, "checksum");
		int64_t size = jint(f, "size", -1);

		if (!path || !allowed_path(path) || find_mfile(im, path) || !checksum_valid(sum) ||
		    size < 0)
			return qerr(err, EINVAL, "%s: its manifest is damaged (file %zu)", im->input, i);
		im->files = xrealloc(im->files, (im->n_files + 1) * sizeof(*im->files));
		im->files[im->n_files++] = (struct mfile){
			.path = xstrdup(path), .size = (uint64_t)size, .checksum = xstrdup(sum)};
		im->progress.total += (uint64_t)size;
	}
	for (const char *const *p = (const char *const[]){"vm.json", "snapshot/meta.json",
							  "snapshot/vmstate", NULL};
	     *p; p++)
		if (!find_mfile(im, *p))
			return qerr(err, EINVAL, "%s: its manifest lists no %s", im->input, *p);
	return 0;
}

/* Where a file of the archive goes in the staging directory. */
static char *stage_path(struct import *im, const char *path)
{
	if (!strcmp(path, "snapshot/vmstate"))
		return xasprintf("snapshots/%s/vmstate", im->name);
	return xstrdup(path); /* images/..., boot/... */
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
		if (dst && all_zero(at, (size_t)n)) {
			if (lseek(fd, n, SEEK_CUR) < 0) {
				r = qerr(err, errno, "cannot write %s: %s", dst, strerror(errno));
				break;
			}
		} else if (dst) {
			for (la_ssize_t off = 0; off < n;) {
				ssize_t w = write(fd, at + off, (size_t)(n - off));

				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0) {
					r = qerr(err, errno, "cannot write %s: %s", dst, strerror(errno));
					goto done;
				}
				off += w;
			}
		} else {
			len += (size_t)n;
		}
		im->done += (uint64_t)n;
		report(im, false);
	}
done:
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

static int unpack(struct import *im, qsnap_error *err)
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
			r = parse_manifest(im, manifest, err);
			if (r < 0)
				goto out;
			{
				_cleanup_free_ char *sd = xasprintf("snapshots/%s", im->name);
				if (mkdirat(im->stagefd, "snapshots", 0755) < 0 ||
				    mkdirat(im->stagefd, sd, 0755) < 0 ||
				    mkdirat(im->stagefd, "images", 0755) < 0 ||
				    mkdirat(im->stagefd, "boot", 0755) < 0) {
					r = qerr(err, errno, "cannot create the layout: %s",
						 strerror(errno));
					goto out;
				}
			}
			continue;
		}
		mf = find_mfile(im, path);
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
		if (!strcmp(path, "vm.json"))
			mem = &im->vmjson;
		else if (!strcmp(path, "snapshot/meta.json"))
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

static int create_layer(const char *qemu_img, const char *stagedir, const char *backing,
			const char *backing_fmt, const char *name, qsnap_error *err)
{
	_cleanup_free_ char *cwd = layout_in(stagedir, VMDIR_LAYERS);

	return img_create(qemu_img, cwd, name, backing, backing_fmt, err);
}

/* meta.json as exported, with the new VM's layers. */
static char *new_meta(struct import *im, const struct snapshot *s)
{
	_cleanup_json_ json_object *o = json_tokener_parse(im->meta);
	json_object *drives = json_object_new_object();

	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	for (size_t i = 0; i < s->n_drives; i++)
		json_object_object_add(drives, s->drives[i].drive,
				       json_object_new_string(s->drives[i].layer));
	json_object_object_add(o, "name", json_object_new_string(s->name));
	json_object_object_add(o, "parent", NULL);
	json_object_object_add(o, "vmstate_checksum", json_object_new_string(s->vmstate_checksum));
	json_object_object_add(o, "drives", drives);
	return xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void repath(char **p, const char *root, const char *rel)
{
	free(*p);
	*p = xasprintf("%s/%s", root, rel);
}

/* The staged files made a VM directory: vm.json with the final paths,
 * layers, the snapshot and state.json. */
static int build_vm(struct import *im, const char *stagedir, const char *final, qsnap_error *err)
{
	_cleanup_free_ char *what = xasprintf("vm.json in %s", im->input);
	_cleanup_free_ char *text = NULL, *meta = NULL, *meta_path = NULL, *img = NULL;
	struct state st = {0};
	struct snapshot *s;
	struct mfile *vmstate = find_mfile(im, "snapshot/vmstate");
	qsnap_def def;
	int r;

	r = vmdef_from_json(im->vmjson, what, &def, err);
	if (r < 0)
		return r;
	/* The imported VM's QEMU (vm.json's "qemu") brings its qemu-img. */
	img = qemu_img_for(def.qemu);
	/* Every file vm.json names must have come in the archive. */
	for (size_t i = 0; i < def.n_drives; i++) {
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *want = xasprintf("images/%s.%s", d->id, d->format);

		if (strcmp(d->path, want) || !find_mfile(im, want)) {
			r = qerr(err, EINVAL, "%s: drive '%s' is %s, which the archive does not hold",
				 what, d->id, d->path);
			goto out;
		}
		r = img_check_standalone(img, stagedir, want, d->format, err);
		if (r < 0)
			goto out;
		free(d->path);
		d->path = xasprintf("%s/%s", stagedir, want);
	}
	if ((def.kernel && (strcmp(def.kernel, "boot/kernel") || !find_mfile(im, def.kernel))) ||
	    (def.initrd && (strcmp(def.initrd, "boot/initrd") || !find_mfile(im, def.initrd)))) {
		r = qerr(err, EINVAL, "%s names a kernel or initrd that the archive does not hold",
			 what);
		goto out;
	}
	if (def.kernel)
		repath(&def.kernel, stagedir, "boot/kernel");
	if (def.initrd)
		repath(&def.initrd, stagedir, "boot/initrd");
	r = vmdef_check(&def, err);
	if (r < 0)
		goto out;
	if (mkdirat(im->stagefd, "layers", 0755) < 0 || mkdirat(im->stagefd, "run", 0700) < 0) {
		r = qerr(err, errno, "cannot create the layout of %s: %s", stagedir, strerror(errno));
		goto out;
	}

	st.snapshots = xcalloc(1, sizeof(*st.snapshots));
	s = &st.snapshots[st.n_snapshots++];
	s->name = xstrdup(im->name);
	s->created = im->created;
	s->dir = xasprintf("snapshots/%s", im->name);
	s->mode = xstrdup(im->mode);
	s->was_running = im->was_running;
	s->vmstate_size = vmstate->size;
	s->vmstate_checksum = xstrdup(vmstate->checksum);
	{
		/* What the machine state needs to load: its format, QEMU
		 * version and machine type (meta.json, checked by the manifest). */
		_cleanup_json_ json_object *mo = im->meta ? json_tokener_parse(im->meta) : NULL;
		const char *fmt = jstr(mo, "format");

		if (fmt && strcmp(fmt, "mapped-ram")) {
			r = qerr(err, EINVAL, "%s: the snapshot's machine state has an unknown format '%s'",
				 im->input, fmt);
			goto out;
		}
		s->format = xstrdup_or_null(fmt);
		s->qemu_version = xstrdup_or_null(jstr(mo, "qemu_version"));
		s->machine = xstrdup_or_null(jstr(mo, "machine"));
	}
	s->drives = xcalloc(def.n_drives, sizeof(*s->drives));
	for (size_t i = 0; i < def.n_drives; i++) {
		qsnap_drive_def *d = &def.drives[i];
		_cleanup_free_ char *base = xasprintf("../images/%s.%s", d->id, d->format);
		_cleanup_free_ char *frozen = xasprintf("%s-%lu.qcow2", d->id, ++st.seq);
		_cleanup_free_ char *active = xasprintf("%s-%lu.qcow2", d->id, ++st.seq);
		_cleanup_free_ char *frozen_rel = xasprintf("layers/%s", frozen);
		_cleanup_free_ char *active_rel = xasprintf("layers/%s", active);

		/* The final path of the base image, as every VM's vm.json has it. */
		free(d->path);
		d->path = xasprintf("%s/images/%s.%s", final, d->id, d->format);
		if (d->readonly)
			continue;
		/* Backing names relative to layers/, like every other layer. */
		r = create_layer(img, stagedir, base, d->format, frozen, err);
		if (r >= 0)
			r = create_layer(img, stagedir, frozen, "qcow2", active, err);
		if (r < 0) {
			r = qerr_prefix(err, "cannot create the layers of drive '%s'", d->id);
			goto out;
		}
		state_add_layer(&st, frozen_rel, d->id, NULL);
		state_add_layer(&st, active_rel, d->id, frozen_rel);
		state_set_active(&st, d->id, active_rel);
		s->drives[s->n_drives].drive = xstrdup(d->id);
		s->drives[s->n_drives++].layer = xstrdup(frozen_rel);
	}
	if (def.kernel)
		repath(&def.kernel, final, "boot/kernel");
	if (def.initrd)
		repath(&def.initrd, final, "boot/initrd");
	st.current = xstrdup(im->name);

	meta = new_meta(im, s);
	meta_path = xasprintf("%s/meta.json", s->dir);
	r = write_file_atomic(im->stagefd, meta_path, meta, strlen(meta), err);
	if (r < 0)
		goto out;
	r = vmdef_to_json(&def, &text, err);
	if (r >= 0)
		r = write_file_atomic(im->stagefd, "vm.json", text, strlen(text), err);
	free(TAKE_PTR(text));
	if (r >= 0)
		r = state_to_json(&st, &text, err);
	if (r >= 0)
		r = write_file_atomic(im->stagefd, "state.json", text, strlen(text), err);
	for (const char *const *p = (const char *const[]){"images", "boot", "layers", s->dir, NULL};
	     r >= 0 && *p; p++)
		r = fsync_dir(im->stagefd, *p, err);
out:
	qsnap_def_free(&def);
	state_free(&st);
	return r;
}

int qsnap_import(const char *dir, const char *input, const qsnap_import_opts *opts,
		 char **ret_name, qsnap_error *err)
{
	static const qsnap_import_opts dflt = {0};
	struct import im = {.input = input, .opts = opts ? opts : &dflt, .stagefd = -1};
	_cleanup_free_ char *c1 = xstrdup(dir), *c2 = xstrdup(dir);
	_cleanup_free_ char *final = NULL, *stage = NULL;
	const char *base = basename(c2);
	char parent[PATH_MAX];
	struct stat st;
	int r;

	progress_begin(&im.progress, "import", im.opts->progress, im.opts->userdata, 0);

	if (!*base || !strcmp(base, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
		return qerr(err, EINVAL, "%s: name a new VM directory to import into", dir);
	if (!realpath(dirname(c1), parent))
		return qerr(err, errno, "cannot import into %s: %s", dir, strerror(errno));
	final = xasprintf("%s/%s", strcmp(parent, "/") ? parent : "", base);
	/* A new VM directory only: an existing VM is never changed by an import. */
	if (lstat(final, &st) == 0 && (!S_ISDIR(st.st_mode) || !dir_is_empty(final)))
		return qerr(err, EEXIST, "%s exists and is not empty: import into a new directory",
			    dir);
	stage = xasprintf("%s/.%s.qsnap-import-%d", strcmp(parent, "/") ? parent : "", base,
			  (int)getpid());
	rm_rf(AT_FDCWD, stage);
	if (mkdir(stage, 0755) < 0)
		return qerr(err, errno, "cannot create %s: %s", stage, strerror(errno));
	im.stagefd = open(stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (im.stagefd < 0) {
		r = qerr(err, errno, "cannot open %s: %s", stage, strerror(errno));
		goto fail;
	}
	r = unpack(&im, err);
	if (r < 0)
		goto fail;
	r = build_vm(&im, stage, final, err);
	if (r < 0)
		goto fail;
	/* rename(2) replaces an empty directory. */
	if (rename(stage, final) < 0) {
		r = qerr(err, errno, "cannot rename %s to %s: %s", stage, final, strerror(errno));
		goto fail;
	}
	r = fsync_dir(AT_FDCWD, parent, err);
	report(&im, true);
	if (r >= 0 && ret_name)
		*ret_name = xstrdup(im.name);
	close(im.stagefd);
	import_free(&im);
	return r;
fail:
	if (im.stagefd >= 0)
		close(im.stagefd);
	rm_rf(AT_FDCWD, stage);
	import_free(&im);
	return qerr_prefix(err, "importing %s failed; nothing was imported", input);
}
