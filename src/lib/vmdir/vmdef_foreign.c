/* SPDX-License-Identifier: MIT */
/* A vm.json from elsewhere (an archive that qsnap import reads, an artifact
 * that qsnap pull fetches) is data: it may carry what qsnap itself writes
 * there and can check (drives as images/<id>.<format>, kernel and initrd
 * under boot/, memory and CPUs within bounds, a plain machine type), never
 * a program, a folder or a command line of its own unless the user trusts
 * the source (--trust-config). The one place of these rules (README
 * "Trust and security"). */
#include <errno.h>
#include <string.h>

#include "vmdir/vmdir.h"

#define FOREIGN_MAX_MEMORY (1ULL << 40) /* 1 TiB */

static bool all_of(const char *s, const char *set, size_t max)
{
	size_t n = strlen(s);

	return n && n <= max && strspn(s, set) == n;
}

#define LOWER_DIGITS "abcdefghijklmnopqrstuvwxyz0123456789"

bool machine_name_plain(const char *m)
{
	return all_of(m, LOWER_DIGITS "._-", 64) && m[0] != '-' && m[0] != '.';
}

/* pc and q35 (aliases every x86 QEMU has), or a versioned pc-* type that
 * the QEMU that will run it lists (pc-i440fx-7.2, pc-q35-10.0). */
static int machine_ok(const char *m, const char *qemu, bool *ret, qsnap_error *err)
{
	*ret = !strcmp(m, "pc") || !strcmp(m, "q35");
	if (*ret || strncmp(m, "pc-", 3) || !machine_name_plain(m))
		return 0;
	return qemu_has_machine(qemu, m, ret, err);
}

static void note_add(char **note, const char *fmt, const char *v)
{
	_cleanup_free_ char *item = xasprintf(fmt, v);
	char *n = *note ? xasprintf("%s, %s", *note, item) : xstrdup(item);

	free(*note);
	*note = n;
}

static char *extra_joined(const qsnap_def *def)
{
	char *s = xstrdup("");

	for (size_t i = 0; i < def->n_extra; i++) {
		char *n = xasprintf("%s%s%s", s, i ? " " : "", def->extra[i]);

		free(s);
		s = n;
	}
	return s;
}

/* What qsnap itself writes: the paths of the layout, the bounds. */
static int check_written_by_qsnap(const qsnap_def *def, const char *what, qsnap_error *err)
{
	for (size_t i = 0; i < def->n_drives; i++) {
		const qsnap_drive_def *d = &def->drives[i];
		_cleanup_free_ char *want = layout_image(d->id, d->format);

		if (strcmp(d->path, want))
			return qerr(err, EINVAL, "%s: drive '%s' is %s; a snapshot from elsewhere names its drives %s",
				    what, d->id, d->path, want);
	}
	if ((def->kernel && strcmp(def->kernel, VMDIR_KERNEL)) ||
	    (def->initrd && strcmp(def->initrd, VMDIR_INITRD)))
		return qerr(err, EINVAL, "%s names a kernel or initrd outside %s/: a snapshot from elsewhere brings its own",
			    what, VMDIR_BOOT);
	if (def->memory > FOREIGN_MAX_MEMORY || def->memory % (1ULL << 20))
		return qerr(err, EINVAL, "%s: 'memory' must be a whole number of MiB, at most 1 TiB",
			    what);
	if (!all_of(def->accel, LOWER_DIGITS ":", 64))
		return qerr(err, EINVAL, "%s: 'accel' must be a list of accelerators such as kvm:tcg", what);
	if (def->cpu && !all_of(def->cpu, LOWER_DIGITS "ABCDEFGHIJKLMNOPQRSTUVWXYZ._+-=,", 256))
		return qerr(err, EINVAL, "%s: 'cpu' is not a CPU model with properties", what);
	return 0;
}

int vmdef_foreign(const char *text, const char *what, const struct foreign *f, qsnap_def *def,
		  char **ret_note, qsnap_error *err)
{
	_cleanup_free_ char *note = NULL, *extra = NULL;
	const char *local;
	bool machine_plain = true;
	int r;

	*ret_note = NULL;
	r = vmdef_from_json(text, what, def, err);
	if (r < 0)
		return r;
	r = check_written_by_qsnap(def, what, err);
	if (r < 0)
		goto fail;
	/* The QEMU the user names, else this host's default; the artifact's
	 * only when trusted (and then it must be here). */
	if (f->qemu) {
		_cleanup_free_ char *prog = find_program(f->qemu);

		if (!prog) {
			r = qerr(err, ENOENT, "--qemu %s: no such program (give a path, or a name on PATH)",
				 f->qemu);
			goto fail;
		}
	}
	if (def->qemu && f->qemu) {
		if (!f->trust && strcmp(def->qemu, f->qemu))
			note_add(&note, "qemu %s", def->qemu);
		free(def->qemu);
		def->qemu = NULL;
	} else if (def->qemu && f->trust) {
		_cleanup_free_ char *prog = find_program(def->qemu);

		if (!prog) {
			r = qerr(err, ENOENT, "%s names QEMU %s, which this host does not have: name one with --qemu",
				 what, def->qemu);
			goto fail;
		}
		note_add(&note, "qemu %s", def->qemu);
	} else if (def->qemu) {
		note_add(&note, "qemu %s", def->qemu);
		free(def->qemu);
		def->qemu = NULL;
	}
	if (f->qemu)
		def->qemu = xstrdup(f->qemu);
	local = def->qemu;
	if (def->machine) {
		r = machine_ok(def->machine, local, &machine_plain, err);
		if (r < 0)
			goto fail;
		if (!machine_plain)
			note_add(&note, "machine %s", def->machine);
		if (!machine_plain && !f->trust) {
			free(def->machine);
			def->machine = NULL;
		}
	}
	if (def->ram_dir) {
		note_add(&note, "ram_dir %s", def->ram_dir);
		if (!f->trust) {
			free(def->ram_dir);
			def->ram_dir = NULL;
		}
	}
	/* A limit of this host's disk is this host's to set. */
	if (def->serial_log_max) {
		_cleanup_free_ char *n = xasprintf("%llu", (unsigned long long)def->serial_log_max);

		note_add(&note, "serial_log_max %s", n);
		if (!f->trust)
			def->serial_log_max = 0;
	}
	/* So are the save settings: chosen by measuring on the host. */
	if (def->save_path || def->multifd_channels || def->direct_io || def->precopy) {
		_cleanup_free_ char *v = xasprintf("save_path %s, multifd_channels %u, direct_io %s, precopy %s",
						   save_path_name(def->save_path), def->multifd_channels,
						   setting_name(def->direct_io), setting_name(def->precopy));

		note_add(&note, "%s", v);
		if (!f->trust) {
			def->save_path = SAVE_PATH_AUTO;
			def->multifd_channels = 0;
			def->direct_io = def->precopy = SETTING_AUTO;
		}
	}
	if (def->n_extra) {
		extra = extra_joined(def);
		note_add(&note, "extra_args [%s]", extra);
		if (!f->trust) {
			for (size_t i = 0; i < def->n_extra; i++)
				free(def->extra[i]);
			free(def->extra);
			def->extra = NULL;
			def->n_extra = 0;
		}
	}
	if (note)
		*ret_note = f->trust ? xasprintf("taken from %s (--trust-config): %s", what, note)
				     : xasprintf("dropped from %s, which qsnap does not take from elsewhere: %s (keep them with --trust-config)",
						 what, note);
	return 0;
fail:
	def_clear(def);
	return r;
}

int vmdef_foreign_meta(json_object *meta, const qsnap_def *def, const char *what, qsnap_error *err)
{
	const char *fmt = jstr(meta, "format"), *machine = jstr(meta, "machine");
	int64_t memory = jint(meta, "memory", 0);

	if (fmt && strcmp(fmt, vmstate_format_name(VMSTATE_MAPPED_RAM)))
		return qerr(err, EINVAL, "%s: the snapshot's machine state has an unknown format '%s'",
			    what, fmt);
	if (machine && !machine_name_plain(machine))
		return qerr(err, EINVAL, "%s: the snapshot's machine type '%s' is not a machine type name",
			    what, machine);
	if (memory && (uint64_t)memory != def->memory)
		return qerr(err, EINVAL, "%s: the snapshot was taken with %lld bytes of RAM, its vm.json says %llu",
			    what, (long long)memory, (unsigned long long)def->memory);
	return 0;
}

uint64_t foreign_vmstate_max(uint64_t memory)
{
	/* RAM pages with their headers (or mapped-ram's layout of them), and
	 * device state: far less than this, which only stops a size that
	 * would make a file of terabytes. */
	return 2 * memory + (1ULL << 30);
}
