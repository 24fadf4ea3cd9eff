/* SPDX-License-Identifier: MIT */
/* The VM directory's layout: every name in it (docs/design.md, "The VM
 * directory"). Paths are relative to the VM directory; QEMU runs in it. */
#ifndef QSNAP_LAYOUT_H
#define QSNAP_LAYOUT_H

#define VMDIR_DEF "vm.json"
#define VMDIR_STATE "state.json"
#define VMDIR_LOCK "lock"
#define VMDIR_LAYERS "layers"
#define VMDIR_SNAPSHOTS "snapshots"
#define VMDIR_RUN "run"
/* An imported or pulled VM's base images and boot files. */
#define VMDIR_IMAGES "images"
#define VMDIR_BOOT "boot"
#define VMDIR_KERNEL "boot/kernel"
#define VMDIR_INITRD "boot/initrd"

/* run/: the running QEMU's sockets and files (mode 0700). */
#define VMDIR_QMP_SOCK "run/qmp.sock"
#define VMDIR_QEMU_PID "run/qemu.pid"
#define VMDIR_QEMU_LOG "run/qemu.log"
#define VMDIR_SERIAL_SOCK "run/serial.sock"
#define VMDIR_SERIAL_LOG "run/serial.log"
#define VMDIR_SAVE_PROGRESS "run/save-progress.json"
#define VMDIR_SAVE_RESULT "run/save-result.json"

/* In a snapshot's directory. */
#define SNAP_META "meta.json"
#define SNAP_VMSTATE "vmstate"
#define SNAP_VMSTATE_ZST "vmstate.zst"
#define SNAP_RAM "ram"
/* delta.<k>: the k-th older delta of a differential snapshot's chain. */
#define SNAP_DELTA "delta"

/* layers/<drive>-<seq>.qcow2 */
char *layout_layer(const char *drive, unsigned long seq);
/* A layer's name inside layers/, as backing files name each other. */
const char *layout_in_layers(const char *layer);
/* snapshots/<name>, and a partial one: snapshots/.partial-<seq>. */
char *layout_snapshot(const char *name);
char *layout_partial(unsigned long seq);
/* images/<drive>.<format> */
char *layout_image(const char *drive, const char *format);
/* <dir>/<file>: a file of a snapshot directory, or a name of the layout
 * under a VM directory's path (a staging one, or the final one). */
char *layout_in(const char *dir, const char *file);

#endif
