"""The thin C layer: libqsnap.so.1 through ctypes, its structs mirrored as
qsnap.h declares them. Every options and stats struct starts with its
size, which this module sets to the size of its own mirror: a newer
libqsnap reads only that much and takes the rest as defaults (the growth
rule of qsnap.h), so this binding keeps working when the library grows.
Nothing here is Pythonic; qsnap.vm is, on top of it."""

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char, c_char_p, c_double, c_int,
                    c_int64, c_size_t, c_uint, c_uint64, c_void_p)

SONAME = "libqsnap.so.1"


def _load():
    """QSNAP_LIBRARY if set (a build tree's library), else the library next
    to which meson installed this package, else the dynamic linker's."""
    paths = [os.environ.get("QSNAP_LIBRARY")]
    try:
        from . import _paths  # written by meson install
        paths.append(os.path.join(_paths.LIBDIR, SONAME))
    except ImportError:
        pass
    for p in paths:
        if p and os.path.exists(p):
            return ctypes.CDLL(p)
    return ctypes.CDLL(SONAME)


# ctypes.CDLL releases the GIL for every call: other Python threads run
# while a save or restore works; callbacks take the GIL back.
lib = _load()

COMPRESS_OFF = -1
NO_WAIT = -1
OPEN_READONLY = 1


class Error(Structure):
    _fields_ = [("code", c_int), ("msg", c_char * 1024)]


class Progress(Structure):
    _fields_ = [("phase", c_char_p), ("done", c_uint64), ("total", c_uint64),
                ("elapsed", c_double), ("finished", c_bool)]


PROGRESS_FN = CFUNCTYPE(None, POINTER(Progress), c_void_p)


class Sized(Structure):
    """A struct that carries its size: made with it set."""

    def __init__(self, **kw):
        super().__init__(size=ctypes.sizeof(self), **kw)


class StartOpts(Sized):
    _fields_ = [("size", c_size_t), ("paused", c_bool), ("from_", c_char_p), ("lazy", c_bool),
                ("timeout", c_int), ("progress", PROGRESS_FN), ("userdata", c_void_p)]


class SavePhase(Structure):
    _fields_ = [("name", c_char_p), ("start", c_double), ("seconds", c_double)]


SAVE_PHASES = 16  # QSNAP_SAVE_PHASES


class SaveStats(Sized):
    _fields_ = [("size", c_size_t), ("paused", c_double), ("total", c_double),
                ("bytes", c_uint64), ("live", c_bool), ("mode", c_int),
                ("path", c_char_p), ("channels", ctypes.c_uint), ("direct_io", c_bool),
                ("precopy", c_bool), ("n_phases", c_size_t),
                ("phases", SavePhase * SAVE_PHASES), ("diff", c_bool),
                ("pages_written", c_uint64), ("pages_left_out", c_uint64)]


class SaveOpts(Sized):
    _fields_ = [("size", c_size_t), ("replace", c_bool), ("live", c_bool), ("compress", c_int),
                ("timeout", c_int), ("progress", PROGRESS_FN), ("userdata", c_void_p),
                ("stats", POINTER(SaveStats)), ("diff", c_bool)]


class RestoreOpts(Sized):
    _fields_ = [("size", c_size_t), ("timeout", c_int), ("lazy", c_bool),
                ("progress", PROGRESS_FN), ("userdata", c_void_p)]


class SnapshotInfo(Structure):
    _fields_ = [("name", c_char_p), ("parent", c_char_p), ("created", c_int64), ("mode", c_int),
                ("size", c_uint64), ("compressed", c_bool), ("was_running", c_bool),
                ("current", c_bool), ("ram_base", c_char_p), ("ram_deltas", c_size_t),
                ("ram_after", c_char_p)]


class DriveStatus(Structure):
    _fields_ = [("id", c_char_p), ("readonly", c_bool), ("n_chain", c_size_t),
                ("chain", POINTER(c_char_p))]


class Status(Structure):
    _fields_ = [("state", c_int), ("qemu_status", c_char_p), ("pid", c_int),
                ("current", c_char_p), ("n_drives", c_size_t),
                ("drives", POINTER(POINTER(DriveStatus))), ("n_snapshots", c_size_t),
                ("ram_mode", c_int), ("ram_file", c_char_p), ("ram_lazy", c_bool)]


class PushStats(Sized):
    _fields_ = [("size", c_size_t), ("digest", c_char * 72), ("blobs", c_size_t),
                ("uploaded", c_size_t), ("uploaded_bytes", c_uint64), ("present", c_size_t),
                ("present_bytes", c_uint64), ("zero_chunks", c_size_t),
                ("zero_bytes", c_uint64), ("bytes", c_uint64)]


class PushOpts(Sized):
    _fields_ = [("size", c_size_t), ("insecure", c_bool), ("progress", PROGRESS_FN),
                ("userdata", c_void_p), ("stats", POINTER(PushStats))]


class PullStats(Sized):
    _fields_ = [("size", c_size_t), ("digest", c_char * 72), ("blobs", c_size_t),
                ("downloaded", c_size_t), ("downloaded_bytes", c_uint64), ("reused", c_size_t),
                ("reused_bytes", c_uint64)]


class PullOpts(Sized):
    _fields_ = [("size", c_size_t), ("insecure", c_bool), ("lock_timeout", c_int),
                ("progress", PROGRESS_FN), ("userdata", c_void_p), ("stats", POINTER(PullStats))]


def _proto(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


E = POINTER(Error)
VMP = c_void_p  # qsnap_vm *, opaque
DEFP = c_void_p  # qsnap_def *, opaque

version = _proto("qsnap_version", c_char_p)
free = _proto("qsnap_free", None, c_void_p)
def_new = _proto("qsnap_def_new", DEFP)
def_free = _proto("qsnap_def_free", None, DEFP)
def_set = _proto("qsnap_def_set", c_int, DEFP, c_char_p, c_char_p, E)
def_get = _proto("qsnap_def_get", c_int, DEFP, c_char_p, POINTER(c_void_p), E)
vm_create = _proto("qsnap_vm_create", c_int, c_char_p, DEFP, E)
vm_open = _proto("qsnap_vm_open", c_int, c_char_p, c_uint, c_int, POINTER(VMP), E)
vm_close = _proto("qsnap_vm_close", None, VMP)
vm_cancel = _proto("qsnap_vm_cancel", None, VMP)
vm_set_qemu = _proto("qsnap_vm_set_qemu", c_int, VMP, c_char_p, E)
vm_dir = _proto("qsnap_vm_dir", c_char_p, VMP)
vm_def = _proto("qsnap_vm_def", DEFP, VMP)
vm_notice = _proto("qsnap_vm_notice", c_char_p, VMP)
vm_start = _proto("qsnap_vm_start", c_int, VMP, POINTER(StartOpts), E)
vm_stop = _proto("qsnap_vm_stop", c_int, VMP, c_int, E)
vm_status = _proto("qsnap_vm_status", c_int, VMP, POINTER(POINTER(Status)), E)
status_free = _proto("qsnap_status_free", None, POINTER(Status))
run_state_name = _proto("qsnap_run_state_name", c_char_p, c_int)
ram_mode_name = _proto("qsnap_ram_mode_name", c_char_p, c_int)
vm_qmp = _proto("qsnap_vm_qmp", c_int, VMP, c_char_p, c_char_p, POINTER(c_void_p), E)
vm_save = _proto("qsnap_vm_save", c_int, VMP, c_char_p, POINTER(SaveOpts), E)
vm_restore = _proto("qsnap_vm_restore", c_int, VMP, c_char_p, POINTER(RestoreOpts), E)
vm_list = _proto("qsnap_vm_list", c_int, VMP, POINTER(POINTER(POINTER(SnapshotInfo))),
                 POINTER(c_size_t), E)
snapshot_info_free = _proto("qsnap_snapshot_info_free", None, POINTER(POINTER(SnapshotInfo)),
                            c_size_t)
vm_delete = _proto("qsnap_vm_delete", c_int, VMP, c_char_p, E)
vm_fold = _proto("qsnap_vm_fold", c_int, VMP, c_char_p, E)
vm_push = _proto("qsnap_vm_push", c_int, VMP, c_char_p, c_char_p, POINTER(PushOpts), E)
pull = _proto("qsnap_pull", c_int, c_char_p, c_char_p, POINTER(PullOpts), POINTER(c_void_p), E)
console_connect = _proto("qsnap_console_connect", c_int, c_char_p, c_int, E)
