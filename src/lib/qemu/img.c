/* SPDX-License-Identifier: MIT */
/* qemu-img: every command line qsnap runs it with, and one parser of what
 * `qemu-img info --output=json` says. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "qemu/qemu.h"

/* qemu-img convert's parallel requests. qcow2 compresses in a pool of at
 * most 4 threads (QEMU 7.2), and only with -W (out-of-order writes) do the
 * requests compress at the same time: measured 2.2 s instead of 3.9 s for
 * 256 MiB of half-random data on 2 cores. */
#define CONVERT_COROUTINES "8"

char *qemu_img_for(const char *qemu)
{
	_cleanup_free_ char *bin = find_program(qemu ? qemu : "qemu-system-x86_64");
	char *slash = bin ? strrchr(bin, '/') : NULL;

	/* The qemu-img of the VM's QEMU (its own directory, e.g. a QEMU
	 * unpacked beside the system's), else the one on PATH. */
	if (slash) {
		char *img = xasprintf("%.*s/qemu-img", (int)(slash - bin), bin);

		if (access(img, X_OK) == 0)
			return img;
		free(img);
	}
	return xstrdup("qemu-img");
}

void img_info_free(struct img_info *i)
{
	free(i->filename);
	free(i->format);
	free(i->backing);
	free(i->data_file);
	*i = (struct img_info){0};
}

void img_info_chain_free(struct img_info *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		img_info_free(&v[i]);
	free(v);
}

static void parse_info(json_object *o, struct img_info *ret)
{
	*ret = (struct img_info){
		.filename = xstrdup_or_null(jstr(o, "filename")),
		.format = xstrdup_or_null(jstr(o, "format")),
		.virtual_size = jint(o, "virtual-size", -1),
		.backing = xstrdup_or_null(jstr(o, "backing-filename")),
		.data_file = xstrdup_or_null(jstr(jobj(jobj(o, "format-specific"), "data"), "data-file")),
	};
}

static int run_info(const char *qemu_img, const char *cwd, const char *path, const char *format,
		    bool force_share, bool chain, json_object **ret, qsnap_error *err)
{
	char **argv = NULL;
	size_t n = 0;
	_cleanup_free_ char *out = NULL;
	int r;

	strv_push(&argv, &n, qemu_img);
	strv_push(&argv, &n, "info");
	strv_push(&argv, &n, "--output=json");
	if (chain)
		strv_push(&argv, &n, "--backing-chain");
	if (force_share)
		strv_push(&argv, &n, "-U");
	if (format) {
		strv_push(&argv, &n, "-f");
		strv_push(&argv, &n, format);
	}
	strv_push(&argv, &n, path);
	r = run_program(cwd, argv, &out, err);
	strv_free(argv);
	if (r < 0)
		return r;
	*ret = json_tokener_parse(out);
	if (!*ret || !json_object_is_type(*ret, chain ? json_type_array : json_type_object)) {
		json_object_put(*ret);
		return qerr(err, EINVAL, "qemu-img info %s gave no %s", path,
			    chain ? "backing chain" : "description");
	}
	return 0;
}

int img_info(const char *qemu_img, const char *cwd, const char *path, const char *format,
	     bool force_share, struct img_info *ret, qsnap_error *err)
{
	_cleanup_json_ json_object *o = NULL;
	int r = run_info(qemu_img, cwd, path, format, force_share, false, &o, err);

	if (r < 0)
		return r;
	parse_info(o, ret);
	if (!ret->format) {
		img_info_free(ret);
		return qerr(err, EINVAL, "qemu-img info %s gave no format", path);
	}
	return 0;
}

int img_info_chain(const char *qemu_img, const char *cwd, const char *path, const char *format,
		   bool force_share, struct img_info **ret, size_t *ret_n, qsnap_error *err)
{
	_cleanup_json_ json_object *o = NULL;
	int r = run_info(qemu_img, cwd, path, format, force_share, true, &o, err);
	size_t n;

	if (r < 0)
		return r;
	n = json_object_array_length(o);
	*ret = xcalloc(n ? n : 1, sizeof(**ret));
	for (size_t i = 0; i < n; i++)
		parse_info(json_object_array_get_idx(o, i), &(*ret)[i]);
	*ret_n = n;
	return 0;
}

int img_create(const char *qemu_img, const char *cwd, const char *path, const char *backing,
	       const char *backing_format, qsnap_error *err)
{
	char *argv[] = {(char *)qemu_img, "create", "-q", "-f", "qcow2", "-F", (char *)backing_format,
			"-b", (char *)backing, (char *)path, NULL};

	return run_program(cwd, argv, NULL, err);
}

int img_rebase(const char *qemu_img, const char *cwd, const char *path, const char *backing,
	       const char *backing_format, bool unsafe, qsnap_error *err)
{
	char *argv[] = {(char *)qemu_img, "rebase", unsafe ? "-u" : "-q", "-f", "qcow2", "-F",
			(char *)backing_format, "-b", (char *)backing, (char *)path, NULL};

	return run_program(cwd, argv, NULL, err);
}

/* The first line of qemu-img's complaint that is not a warning, without
 * its "qemu-img: " (modifies m). */
static char *first_complaint(char *m)
{
	char *nl;

	/* backing= warns on 7.2. */
	while (strstr(m, "warning:") && (nl = strchr(m, '\n')))
		m = nl + 1;
	if ((nl = strchr(m, '\n')))
		*nl = '\0';
	return strncmp(m, "qemu-img: ", 10) ? m : m + 10;
}

int img_check(const char *qemu_img, const char *path, const char *format, qsnap_error *err)
{
	char *argv[] = {(char *)qemu_img, "check", "-q", "-f", (char *)format, (char *)path, NULL};
	_cleanup_free_ char *out = NULL, *errout = NULL;
	int status = 0, r;
	char *msg;
	size_t l;

	/* A raw image has no metadata that could be damaged. */
	if (!strcmp(format, "raw"))
		return 0;
	r = run_program_ex(NULL, argv,
			   &(struct run_opts){.ret_status = &status, .ret_stderr = &errout}, &out,
			   err);
	if (r < 0)
		return r;
	if (status == 0)
		return 0;
	/* All it says: what is damaged may take several lines. */
	msg = *errout ? errout : out;
	l = strlen(msg);
	while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == '\r'))
		msg[--l] = '\0';
	return qerr(err, EIO, "qemu-img check %s failed (exit %d)%s%s", path, status,
		    *msg ? ": " : "", msg);
}

int img_check_layer(const char *qemu_img, const char *cwd, const char *layer, char **ret_problem,
		    qsnap_error *err)
{
	/* backing= empty: the layer alone. */
	_cleanup_free_ char *opts = xasprintf("driver=qcow2,file.driver=file,file.filename=%s,backing=",
					       layer);
	char *argv[] = {(char *)qemu_img, "check", "-U", "--output=json", "--image-opts", opts, NULL};
	_cleanup_free_ char *out = NULL, *errout = NULL;
	_cleanup_json_ json_object *o = NULL;
	int status = 0, r;
	char *m;

	*ret_problem = NULL;
	r = run_program_ex(cwd, argv, &(struct run_opts){.ret_status = &status, .ret_stderr = &errout},
			   &out, err);
	if (r < 0)
		return r;
	o = json_tokener_parse(out);
	/* Exit 3: leaked clusters only (an interrupted write leaves them). */
	if (status == 0 || (status == 3 && o))
		return 0;
	if (status == 2 && o) {
		*ret_problem = xasprintf("qemu-img check finds %lld corruption(s): the layer is damaged",
					 (long long)jint(o, "corruptions", 0));
		return 0;
	}
	m = first_complaint(errout && *errout ? errout : out);
	*ret_problem = xasprintf("qemu-img check fails (exit %d)%s%s", status, *m ? ": " : "", m);
	return 0;
}

struct convert_watch {
	struct progress p;
	char line[64];
	size_t len;
};

/* qemu-img -p writes "    (12.34/100%)\r" for every percent it gets further. */
static void on_convert_output(const char *data, size_t len, void *userdata)
{
	struct convert_watch *w = userdata;

	for (size_t i = 0; i < len; i++) {
		const char *open;
		double pct;

		if (data[i] != '\r' && data[i] != '\n') {
			if (w->len + 1 < sizeof(w->line))
				w->line[w->len++] = data[i];
			continue;
		}
		w->line[w->len] = '\0';
		w->len = 0;
		open = strchr(w->line, '(');
		if (!open || sscanf(open + 1, "%lf/100%%", &pct) != 1 || pct < 0 || pct > 100)
			continue;
		progress_report(&w->p, (uint64_t)((double)w->p.total * pct / 100.0), false);
	}
}

int img_convert(const struct img_convert *c, qsnap_error *err)
{
	struct convert_watch w = {0};
	struct img_info info;
	char **argv = NULL;
	size_t n = 0;
	int r;

	r = img_info(c->qemu_img, NULL, c->src, c->src_format, c->force_share, &info, err);
	if (r < 0)
		return r;
	if (info.virtual_size < 0) {
		img_info_free(&info);
		return qerr(err, EINVAL, "qemu-img info %s gave no virtual size", c->src);
	}
	progress_begin(&w.p, c->phase, c->progress, c->userdata, (uint64_t)info.virtual_size);
	img_info_free(&info);
	strv_push(&argv, &n, c->qemu_img);
	strv_push(&argv, &n, "convert");
	strv_push(&argv, &n, "-p");
	/* Frozen layers are never written again, so reading them while QEMU
	 * has them open as backing files is safe. */
	if (c->force_share)
		strv_push(&argv, &n, "-U");
	strv_push(&argv, &n, "-f");
	strv_push(&argv, &n, c->src_format);
	strv_push(&argv, &n, "-O");
	strv_push(&argv, &n, c->dst_format);
	if (c->compress)
		strv_push(&argv, &n, "-c");
	strv_push(&argv, &n, "-m");
	strv_push(&argv, &n, CONVERT_COROUTINES);
	strv_push(&argv, &n, "-W");
	strv_push(&argv, &n, c->src);
	strv_push(&argv, &n, c->dst);
	progress_report(&w.p, 0, false);
	r = run_program_ex(NULL, argv,
			   &(struct run_opts){.on_stdout = on_convert_output, .userdata = &w}, NULL,
			   err);
	strv_free(argv);
	if (r < 0)
		return r;
	progress_report(&w.p, w.p.total, true);
	return 0;
}

/* An imported or pulled disk must stand alone: a qcow2 header that names a
 * backing or data file would make QEMU read a file of this host into the
 * guest. */
int img_check_standalone(const char *qemu_img, const char *dir, const char *path,
			 const char *format, qsnap_error *err)
{
	struct img_info info;
	bool named;
	int r = img_info(qemu_img, dir, path, format, false, &info, err);

	if (r < 0)
		return r;
	named = info.backing || info.data_file;
	img_info_free(&info);
	if (named)
		return qerr(err, EINVAL, "%s names a backing or data file: an exported disk stands alone",
			    path);
	return 0;
}
