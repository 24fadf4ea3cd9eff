/* SPDX-License-Identifier: MIT */
/* Changing a VM's definition (qsnap config). */
#include <errno.h>
#include <string.h>

#include "ops/ops.h"

/* Check a changed definition and write it to vm.json; def is taken. */
static int replace_def(qsnap_vm *vm, qsnap_def def, qsnap_error *err)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = vmdef_check(&def, err);
	if (r >= 0)
		r = vmdef_to_json(&def, &text, err);
	if (r >= 0)
		r = write_file_atomic(vm->dirfd, VMDIR_DEF, text, strlen(text), err);
	if (r < 0) {
		def_clear(&def);
		return r;
	}
	def_clear(&vm->def);
	vm->def = def;
	return 0;
}

int qsnap_vm_set_ram(qsnap_vm *vm, qsnap_ram_mode mode, const char *ram_dir, qsnap_error *err)
{
	qsnap_def def;

	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is running: stop it (or save it) before changing its RAM mode",
			    vm->dir);
	def_copy(&def, &vm->def);
	def.ram_mode = mode;
	free(def.ram_dir);
	def.ram_dir = xstrdup_or_null(ram_dir);
	return replace_def(vm, def, err);
}

int qsnap_vm_set_qemu(qsnap_vm *vm, const char *qemu, qsnap_error *err)
{
	qsnap_def def;

	if (vm_qemu_alive(vm))
		return qerr(err, EBUSY, "the VM in %s is running: stop it before changing its QEMU",
			    vm->dir);
	if (qemu) {
		_cleanup_free_ char *found = find_program(qemu);

		if (!found)
			return qerr(err, ENOENT, "QEMU binary '%s' not found or not executable: give the path of a qemu-system-x86_64",
				    qemu);
	}
	def_copy(&def, &vm->def);
	/* The key qsnap init --qemu sets (NULL: the default). */
	if (qsnap_def_set(&def, "qemu", qemu, err) < 0) {
		def_clear(&def);
		return -err->code;
	}
	return replace_def(vm, def, err);
}

int qsnap_vm_set_serial_log_max(qsnap_vm *vm, uint64_t bytes, qsnap_error *err)
{
	qsnap_def def;

	if (bytes && bytes < QSNAP_MIN_SERIAL_LOG_MAX)
		return qerr(err, EINVAL, "the serial log limit must be 0 (default, 64M) or at least 64K");
	def_copy(&def, &vm->def);
	def.serial_log_max = bytes;
	return replace_def(vm, def, err);
}

int qsnap_vm_set_max_chain(qsnap_vm *vm, unsigned max_chain, qsnap_error *err)
{
	qsnap_def def;

	if (max_chain == 1 || max_chain > 1000)
		return qerr(err, EINVAL, "the chain limit must be 0 (default) or between 2 and 1000");
	def_copy(&def, &vm->def);
	def.max_chain = max_chain;
	return replace_def(vm, def, err);
}

int qsnap_vm_set_save_setting(qsnap_vm *vm, const char *key, const char *value, qsnap_error *err)
{
	static const char *const keys[] = {"save-path", "multifd-channels", "direct-io", "precopy"};
	qsnap_def def;
	size_t i;
	int r;

	for (i = 0; i < ARRAY_SIZE(keys) && strcmp(key, keys[i]); i++)
		;
	if (i == ARRAY_SIZE(keys))
		return qerr(err, EINVAL, "'%s' is not a save setting (have: save-path, multifd-channels, direct-io, precopy)",
			    key);
	def_copy(&def, &vm->def);
	r = qsnap_def_set(&def, key, value, err);
	if (r < 0) {
		def_clear(&def);
		return r;
	}
	return replace_def(vm, def, err);
}
