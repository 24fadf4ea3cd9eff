"""What the binding's calls return: plain, frozen dataclasses."""

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Progress:
    """One progress report: phase is one of qsnap.h's names ("save",
    "restore", "restore RAM", "upload", ...), done and total are bytes
    (total 0 when unknown), elapsed seconds since the phase began."""
    phase: str
    done: int
    total: int
    elapsed: float
    finished: bool


@dataclass(frozen=True)
class Snapshot:
    """A snapshot, with the fields of `qsnap list --json`."""
    name: str
    parent: Optional[str]
    created: int  # seconds since the epoch
    mode: str  # "stream" or "shared": where its RAM is
    compressed: bool
    size: int  # bytes on disk of its machine state and its own layers
    was_running: bool  # restores running (else paused)
    current: bool  # the current state descends from it
    ram_base: Optional[str] = None  # a differential snapshot: whose RAM file it builds on
    ram_deltas: int = 0  # the older deltas a restore loads before its own
    ram_after: Optional[str] = None  # the snapshot whose delta it builds on directly


@dataclass(frozen=True)
class Drive:
    """A drive's layer chain, base image first, active layer last."""
    id: str
    readonly: bool
    chain: Tuple[str, ...]


@dataclass(frozen=True)
class Status:
    """What `qsnap status` shows."""
    state: str  # "stopped", "running", "paused" or "crashed"
    qemu_status: Optional[str]  # QEMU's own word, None when stopped
    pid: int  # QEMU's, 0 when stopped
    current: Optional[str]  # the snapshot the current state descends from
    drives: Tuple[Drive, ...]
    snapshots: int
    ram_mode: str
    ram_file: Optional[str]
    ram_lazy: bool


@dataclass(frozen=True)
class SaveStats:
    """How a save went."""
    paused: float  # seconds the guest was paused
    total: float  # seconds the save took
    bytes: int  # machine state written
    live: bool  # RAM was written while the guest ran
    mode: str  # where the snapshot's RAM went: "stream" or "shared"
    path: str = "stream"  # how QEMU wrote it: "stream", "mapped-ram" or "ram-file"
    channels: int = 0  # mapped-ram's multifd channels
    precopy: bool = False  # written while the guest ran, paused for the rest
    # Where the time went: (phase, start, seconds), starts from the save's start.
    phases: tuple = ()
    diff: bool = False  # a differential save (only the pages written since the base)
    pages_written: int = 0  # diff: RAM pages in the stream
    pages_left_out: int = 0  # diff: pages the base's RAM file has
