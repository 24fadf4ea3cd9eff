/* SPDX-License-Identifier: MIT */
/* Importing an exported snapshot as a new VM directory (qsnap_import).
 * Everything is unpacked into a hidden directory beside the target and
 * checked against the manifest (import_archive.c), made a VM directory
 * there (import_vmdir.c), and only then renamed to the target, so a
 * damaged or foreign archive leaves nothing behind. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/import.h"

static void import_free(struct import *im)
{
	for (size_t i = 0; i < im->n_files; i++) {
		free(im->files[i].path);
		free(im->files[i].checksum);
	}
	free(im->files);
	free(im->name);
	free(im->vmjson);
	free(im->meta);
	free(im->note);
}

int qsnap_import(const char *dir, const char *input, const qsnap_import_opts *opts,
		 char **ret_name, qsnap_error *err)
{
	qsnap_import_opts o;
	struct import im = {.input = input, .opts = &o, .stagefd = -1};
	_cleanup_free_ char *c1 = xstrdup(dir), *c2 = xstrdup(dir);
	_cleanup_free_ char *final = NULL, *stage = NULL;
	const char *base = basename(c2);
	char parent[PATH_MAX];
	struct stat st;
	int r;

	if ((r = sized_in(&o, sizeof(o), opts, "qsnap_import_opts", err)) < 0)
		return r;
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
	{
		_cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		_cleanup_free_ char *prefix = xasprintf(".%s.", base);

		/* Staging directories of imports into the same name that were
		 * killed (they can hold gigabytes). */
		if (pfd >= 0)
			sweep_stale(pfd, prefix, ".qsnap-import-");
	}
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
	r = import_unpack(&im, err);
	if (r < 0)
		goto fail;
	r = import_build_vm(&im, stage, final, err);
	if (r < 0)
		goto fail;
	/* rename(2) replaces an empty directory. */
	if (rename(stage, final) < 0) {
		r = qerr(err, errno, "cannot rename %s to %s: %s", stage, final, strerror(errno));
		goto fail;
	}
	r = fsync_dir(AT_FDCWD, parent, err);
	progress_report(&im.progress, im.done, true);
	if (r >= 0 && ret_name)
		*ret_name = xstrdup(im.name);
	if (r >= 0 && im.note && im.opts->notice)
		im.opts->notice(im.note, im.opts->userdata);
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
