/* SPDX-License-Identifier: MIT */
/* What a push sends: every image of the snapshot's drive chains as it is
 * (base images and frozen qcow2 layers, not flattened), the kernel and
 * initrd, and the machine state, shared RAM and a differential snapshot's
 * older deltas in fixed-size chunks, each file opened once and its blobs
 * listed; and vm.json with the paths the artifact has. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/push.h"

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

int push_collect(struct push *p, struct oci_config *cfg, qsnap_error *err)
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

			k = add_whole(p, QSNAP_DISK_QCOW2_TYPE, layout_in_layers(layers[j]), path,
				      err);
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
	if (s->mode == QSNAP_RAM_SHARED) {
		_cleanup_free_ char *rel = layout_in(s->dir, SNAP_RAM);
		_cleanup_free_ char *ram = vm_path(vm, rel);

		cfg->has_ram = true;
		cfg->ram.file = xstrdup("ram");
		r = add_chunked(p, QSNAP_RAM_TYPE, "ram", ram, &cfg->ram.first, &cfg->ram.n, err);
		if (r < 0)
			return qerr_prefix(err, "snapshot '%s'", s->name);
		cfg->ram.size = p->files[p->n_files - 1].size;
	}
	if (s->ram_base) {
		cfg->diff = true;
		cfg->deltas = xcalloc(s->n_ram_chain, sizeof(*cfg->deltas));
		for (size_t d = 1; d <= s->n_ram_chain; d++) {
			struct oci_chunks *ch = &cfg->deltas[cfg->n_deltas++];
			_cleanup_free_ char *rel = snapshot_delta(s, d);
			_cleanup_free_ char *path = vm_path(vm, rel);

			ch->file = xstrdup(strrchr(rel, '/') + 1);
			r = add_chunked(p, QSNAP_VMSTATE_TYPE, ch->file, path, &ch->first, &ch->n,
					err);
			if (r < 0)
				return qerr_prefix(err, "snapshot '%s' needs the delta of '%s'", s->name,
						   s->ram_chain[d - 1].snapshot);
			ch->size = p->files[p->n_files - 1].size;
			if (ch->size != s->ram_chain[d - 1].size)
				return qerr(err, EINVAL, "snapshot '%s': %s has %llu bytes, %llu were saved: the file is damaged (qsnap verify)",
					    s->name, path, (unsigned long long)ch->size,
					    (unsigned long long)s->ram_chain[d - 1].size);
		}
	}
	return 0;
}

int push_vmjson(qsnap_vm *vm, char **ret, qsnap_error *err)
{
	qsnap_def def;
	int r;

	def_copy(&def, &vm->def);
	for (size_t i = 0; i < def.n_drives; i++) {
		free(def.drives[i].path);
		def.drives[i].path = layout_image(def.drives[i].id, def.drives[i].format);
	}
	if (def.kernel) {
		free(def.kernel);
		def.kernel = xstrdup(VMDIR_KERNEL);
	}
	if (def.initrd) {
		free(def.initrd);
		def.initrd = xstrdup(VMDIR_INITRD);
	}
	free(def.ram_dir); /* a path of this host */
	def.ram_dir = NULL;
	r = vmdef_to_json(&def, ret, err);
	def_clear(&def);
	return r;
}
