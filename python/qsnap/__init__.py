"""qsnap: run QEMU virtual machines for testing; save and restore them whole
(disks, RAM, CPU and device state) as named snapshots. A binding of
libqsnap (libqsnap.so.1, include/qsnap.h) through ctypes.

    import qsnap

    with qsnap.VM.create("vm", drives={"vda": "base.qcow2"}, memory="1G") as vm:
        vm.start()
        vm.save("ready", live=True)
        print(vm.console().run("uname -r"))  # (output, exit status)
        vm.restore("ready")
        print([s.name for s in vm.snapshots()], vm.status().state)

Errors are qsnap.Error (errno, message) or one of its subclasses NotFound,
Exists, Busy, Invalid and Cancelled (VM.cancel() from another thread). Progress: any call that takes progress= calls it
with a qsnap.Progress; an exception it raises is raised when the call
returns.
"""

from . import _capi
from .console import Console
from .errors import Busy, Cancelled, Error, Exists, Invalid, NotFound
from .types import Drive, Progress, SaveStats, Snapshot, Status
from .vm import VM, pull


def version() -> str:
    """libqsnap's version ("1.0.0")."""
    return _capi.version().decode()


__all__ = ["VM", "Console", "pull", "version", "Error", "NotFound", "Exists", "Busy", "Invalid",
           "Cancelled",
           "Progress", "Snapshot", "Status", "Drive", "SaveStats"]
