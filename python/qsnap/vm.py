"""The Pythonic layer: a VM directory as an object."""

import ctypes
import json
import os
import threading
from typing import Any, List, Mapping, Optional, Sequence, Union

from . import _capi
from ._call import ProgressCallback, Reporter, arg, call, call_reporting, text
from .console import Console
from .errors import Invalid
from .types import Drive, SaveStats, Snapshot, Status

PathLike = Union[str, "os.PathLike[str]"]
DriveSpec = Union[PathLike, Mapping[str, Any]]


def _seconds(timeout: Optional[float]) -> int:
    """A timeout in whole seconds as the library takes it: None is the
    default (0)."""
    if timeout is None:
        return 0
    if timeout <= 0:
        raise Invalid(22, f"timeout {timeout}: give a number of seconds above 0, or None")
    return max(1, round(timeout))


def _drive(drive_id: str, spec: DriveSpec) -> str:
    """ID=PATH[,if=...][,format=...][,readonly] from a path or a dict with
    path, and optionally interface, format, readonly."""
    if isinstance(spec, Mapping):
        s = f"{drive_id}={os.fspath(spec['path'])}"
        if spec.get("interface"):
            s += f",if={spec['interface']}"
        if spec.get("format"):
            s += f",format={spec['format']}"
        if spec.get("readonly"):
            s += ",readonly"
        return s
    return f"{drive_id}={os.fspath(spec)}"


class VM:
    """A qsnap VM directory, open: its lock held (unless read-only) until
    close(), or the end of a with block.

    A VM is used by one thread at a time (calls on one VM from several
    threads take turns); long calls release the GIL, so other threads run
    meanwhile. The exception is cancel(): another thread calls it to end
    the save, restore, start or stop that is running.

    Example::

        with qsnap.VM.create("vm", drives={"vda": "base.qcow2"}, memory="1G",
                             kernel="vmlinuz", initrd="initrd.img",
                             append="console=ttyS0") as vm:
            vm.start()
            vm.save("ready", live=True)
            ...
            vm.restore("ready", lazy=True)
    """

    def __init__(self, handle: int):
        self._vm: Optional[int] = handle
        self._lock = threading.Lock()
        # Taken by cancel() and by close() around freeing the handle, not
        # for the length of a call: cancel() must not wait for the call.
        self._cancel_lock = threading.Lock()

    # ---- making and opening ----

    @classmethod
    def create(cls, path: PathLike, drives: Mapping[str, DriveSpec], *,
               memory: Union[str, int, None] = None, smp: Optional[int] = None,
               kernel: Optional[PathLike] = None, initrd: Optional[PathLike] = None,
               append: Optional[str] = None, machine: Optional[str] = None,
               cpu: Optional[str] = None, accel: Optional[str] = None,
               qemu: Optional[PathLike] = None, serial: bool = True,
               ram_mode: Optional[str] = None, ram_dir: Optional[PathLike] = None,
               max_chain: Optional[int] = None, extra_args: Sequence[str] = (),
               lock_timeout: Optional[float] = None) -> "VM":
        """Create a VM directory at path (new, or empty) and open it.

        drives maps a drive id to its base image, a path, or to a dict with
        "path" and optionally "interface" (virtio, scsi, ide, pflash),
        "format" (qcow2, raw) and "readonly". memory is bytes or a size
        such as "512M" or "4G". The other keywords are qsnap init's
        options; None leaves the default. Raises Exists if path is a
        non-empty directory, Invalid for a bad value."""
        d = _capi.def_new()
        if not d:
            raise MemoryError("qsnap_def_new")
        try:
            values = [("drive", _drive(i, s)) for i, s in drives.items()]
            values += [("memory", memory), ("smp", smp), ("kernel", kernel),
                       ("initrd", initrd), ("append", append), ("machine", machine),
                       ("cpu", cpu), ("accel", accel), ("qemu", qemu),
                       ("serial", None if serial else "off"), ("ram-mode", ram_mode),
                       ("ram-dir", ram_dir), ("max-chain", max_chain)]
            values += [("extra", a) for a in extra_args]
            for key, value in values:
                if value is not None:
                    v = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
                    call(_capi.def_set, d, key.encode(), arg(v))
            call(_capi.vm_create, arg(path), d)
        finally:
            _capi.def_free(d)
        return cls.open(path, lock_timeout=lock_timeout)

    @classmethod
    def open(cls, path: PathLike, *, readonly: bool = False,
             lock_timeout: Optional[float] = None) -> "VM":
        """Open a VM directory. Unless readonly, take its lock, waiting
        lock_timeout seconds for another qsnap command (None: the
        library's default, 600 s; 0: not at all, Busy at once)."""
        h = _capi.VMP()
        lt = 0 if lock_timeout is None else (_capi.NO_WAIT if lock_timeout <= 0
                                             else max(1, round(lock_timeout)))
        call(_capi.vm_open, arg(path), _capi.OPEN_READONLY if readonly else 0, lt,
             ctypes.byref(h))
        return cls(h.value)

    def close(self) -> None:
        """Close the handle and release the VM's lock; QEMU runs on."""
        with self._lock, self._cancel_lock:
            if self._vm:
                _capi.vm_close(self._vm)
                self._vm = None

    def cancel(self) -> None:
        """End the save, restore, start or stop another thread is running
        on this VM: that call raises Cancelled, its work undone as after
        any failure (a save leaves no snapshot and the VM as it was; a
        restore or start leaves the VM stopped, or as it was if the running
        QEMU was not touched yet; a stop kills QEMU at once and succeeds).
        Work that is not a wait (qemu-img, a RAM file copy) finishes first.
        Called while no such call runs, it ends the next one at its first
        wait. Safe from any thread; does nothing on a closed VM."""
        with self._cancel_lock:
            if self._vm:
                _capi.vm_cancel(self._vm)

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_vm", None):
            _capi.vm_close(self._vm)

    def _h(self) -> int:
        if not self._vm:
            raise ValueError("the VM is closed")
        return self._vm

    # ---- what it is ----

    @property
    def path(self) -> str:
        """The VM directory, absolute."""
        return text(_capi.vm_dir(self._h()))

    @property
    def notice(self) -> Optional[str]:
        """What the last call wants the user to know although it succeeded
        (a lazy restore done eagerly, and why), or None."""
        return text(_capi.vm_notice(self._h()))

    def definition(self, key: str) -> Optional[str]:
        """A value of the VM's definition by qsnap init's option name
        ("memory" in bytes, "kernel", "ram-mode", "drive": one per line),
        None when unset."""
        v = ctypes.c_void_p()
        with self._lock:
            call(_capi.def_get, _capi.vm_def(self._h()), key.encode(), ctypes.byref(v))
        try:
            return text(ctypes.string_at(v.value)) if v.value else None
        finally:
            _capi.free(v)

    def set_qemu(self, qemu: Optional[PathLike]) -> None:
        """Use the QEMU binary qemu from the next start (None: the default,
        qemu-system-x86_64 from PATH); the VM must be stopped. NotFound
        for a binary that is not there, Busy while the VM runs."""
        with self._lock:
            call(_capi.vm_set_qemu, self._h(), arg(qemu))

    def status(self) -> Status:
        """Whether QEMU runs, the current snapshot, the drives' chains."""
        p = ctypes.POINTER(_capi.Status)()
        with self._lock:
            call(_capi.vm_status, self._h(), ctypes.byref(p))
        try:
            s = p.contents
            drives = tuple(
                Drive(text(d.contents.id), bool(d.contents.readonly),
                      tuple(text(d.contents.chain[j]) for j in range(d.contents.n_chain)))
                for d in (s.drives[i] for i in range(s.n_drives)))
            return Status(text(_capi.run_state_name(s.state)), text(s.qemu_status), s.pid,
                          text(s.current), drives, s.n_snapshots,
                          text(_capi.ram_mode_name(s.ram_mode)), text(s.ram_file),
                          bool(s.ram_lazy))
        finally:
            _capi.status_free(p)

    def snapshots(self) -> List[Snapshot]:
        """The snapshots, oldest first."""
        lst = ctypes.POINTER(ctypes.POINTER(_capi.SnapshotInfo))()
        n = ctypes.c_size_t()
        with self._lock:
            call(_capi.vm_list, self._h(), ctypes.byref(lst), ctypes.byref(n))
        try:
            return [Snapshot(text(s.name), text(s.parent), s.created,
                             text(_capi.ram_mode_name(s.mode)), bool(s.compressed), s.size,
                             bool(s.was_running), bool(s.current), text(s.ram_base),
                             s.ram_deltas, text(s.ram_after))
                    for s in (lst[i].contents for i in range(n.value))]
        finally:
            _capi.snapshot_info_free(lst, n)

    # ---- running it ----

    def start(self, *, paused: bool = False, snapshot: Optional[str] = None,
              lazy: bool = False, timeout: Optional[float] = None,
              progress: Optional[ProgressCallback] = None) -> None:
        """Start QEMU for the stopped VM, or from snapshot (as restore
        does; lazy maps a shared-RAM snapshot's RAM copy-on-write)."""
        rep = Reporter(progress)
        o = _capi.StartOpts(paused=paused, from_=arg(snapshot), lazy=lazy,
                            timeout=_seconds(timeout), progress=rep.fn)
        with self._lock:
            call_reporting(rep, _capi.vm_start, self._h(), ctypes.byref(o))

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop QEMU ("quit", SIGKILL after timeout seconds, default 10).
        Stopping a stopped VM is not an error."""
        with self._lock:
            call(_capi.vm_stop, self._h(), _seconds(timeout))

    def save(self, name: str, *, live: bool = False, replace: bool = False,
             compress: Optional[int] = None, timeout: Optional[float] = None,
             progress: Optional[ProgressCallback] = None, diff: bool = False) -> SaveStats:
        """Save the whole VM as snapshot name; it runs on as it was. live:
        pause the guest only for milliseconds. compress: a zstd level 1-19
        (None: none). diff: a differential snapshot of a lazily restored VM
        (only the pages written since its base). Raises Exists if name
        exists and not replace."""
        rep = Reporter(progress)
        st = _capi.SaveStats()
        o = _capi.SaveOpts(replace=replace, live=live,
                           compress=_capi.COMPRESS_OFF if compress is None else compress,
                           timeout=_seconds(timeout), progress=rep.fn,
                           stats=ctypes.pointer(st), diff=diff)
        with self._lock:
            call_reporting(rep, _capi.vm_save, self._h(), arg(name), ctypes.byref(o))
        return SaveStats(st.paused, st.total, st.bytes, bool(st.live),
                         text(_capi.ram_mode_name(st.mode)), text(st.path) or "stream",
                         st.channels, bool(st.precopy),
                         tuple((text(p.name), p.start, p.seconds)
                               for p in st.phases[:st.n_phases]),
                         bool(st.diff), st.pages_written, st.pages_left_out)

    def restore(self, name: str, *, lazy: bool = False, timeout: Optional[float] = None,
                progress: Optional[ProgressCallback] = None) -> None:
        """Bring the VM back to snapshot name, running or not. lazy: map a
        shared-RAM snapshot's RAM copy-on-write (a fraction of a second).
        Raises NotFound for an unknown name."""
        rep = Reporter(progress)
        o = _capi.RestoreOpts(timeout=_seconds(timeout), lazy=lazy, progress=rep.fn)
        with self._lock:
            call_reporting(rep, _capi.vm_restore, self._h(), arg(name), ctypes.byref(o))

    def delete(self, name: str) -> None:
        """Delete snapshot name (snapshots built on it stay restorable)."""
        with self._lock:
            call(_capi.vm_delete, self._h(), arg(name))

    def fold(self, name: str) -> None:
        """Fold differential snapshot name's chain of older deltas into a RAM
        file of its own, so that its restore loads only its own delta (as
        much disk as the guest's RAM in use; what it restores to does not
        change)."""
        with self._lock:
            call(_capi.vm_fold, self._h(), arg(name))

    def qmp(self, command: str, arguments: Optional[Mapping[str, Any]] = None) -> Any:
        """Send one QMP command to the running QEMU; its "return" value."""
        out = ctypes.c_void_p()
        with self._lock:
            call(_capi.vm_qmp, self._h(), command.encode(),
                 None if arguments is None else json.dumps(arguments).encode(),
                 ctypes.byref(out))
        try:
            return json.loads(ctypes.string_at(out.value)) if out.value else None
        finally:
            _capi.free(out)

    def console(self, connect_timeout: float = 30) -> Console:
        """The guest's serial console (needs no lock: use it while other
        calls on this VM work); it follows the VM across restores."""
        return Console(self.path, connect_timeout)

    def push(self, name: str, ref: str, *, insecure: bool = False,
             progress: Optional[ProgressCallback] = None) -> dict:
        """Push snapshot name to an OCI registry reference; the stats
        (digest, blobs, uploaded, uploaded_bytes, present, ...)."""
        rep = Reporter(progress)
        st = _capi.PushStats()
        o = _capi.PushOpts(insecure=insecure, progress=rep.fn, stats=ctypes.pointer(st))
        with self._lock:
            call_reporting(rep, _capi.vm_push, self._h(), arg(name), ref.encode(),
                           ctypes.byref(o))
        return {f: (text(getattr(st, f)) if f == "digest" else getattr(st, f))
                for f, _ in _capi.PushStats._fields_ if f != "size"}


def pull(ref: str, path: PathLike, *, insecure: bool = False,
         lock_timeout: Optional[float] = None,
         progress: Optional[ProgressCallback] = None) -> str:
    """Pull the snapshot at ref into the VM directory path (made if new);
    returns the snapshot's name."""
    rep = Reporter(progress)
    lt = 0 if lock_timeout is None else (_capi.NO_WAIT if lock_timeout <= 0
                                         else max(1, round(lock_timeout)))
    o = _capi.PullOpts(insecure=insecure, lock_timeout=lt, progress=rep.fn)
    name = ctypes.c_void_p()
    call_reporting(rep, _capi.pull, ref.encode(), arg(path), ctypes.byref(o),
                   ctypes.byref(name))
    try:
        return text(ctypes.string_at(name.value))
    finally:
        _capi.free(name)
