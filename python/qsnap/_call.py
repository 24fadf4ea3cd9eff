"""Calling libqsnap: errors become exceptions, progress callbacks become C
function pointers whose exceptions are kept for after the call."""

import ctypes
from typing import Callable, Optional

from . import _capi
from .errors import Error, error
from .types import Progress


def text(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else b.decode("utf-8", "surrogateescape")


def arg(s) -> Optional[bytes]:
    """A str or path as the library takes it (None stays NULL)."""
    import os
    return None if s is None else os.fsencode(s)


def check(r: int, err: _capi.Error) -> int:
    if r < 0:
        raise error(err.code or -r, text(err.msg))
    return r


def call(fn, *args) -> int:
    """fn(*args, &err); raises the library's error as an exception."""
    err = _capi.Error()
    return check(fn(*args, ctypes.byref(err)), err)


ProgressCallback = Callable[[Progress], None]


class Reporter:
    """A Python progress callback as the library calls it. An exception it
    raises cannot cross the C call: it is kept, the callback is not called
    again, and raise_pending raises it once the call returned."""

    def __init__(self, callback: Optional[ProgressCallback]):
        self.callback = callback
        self.pending: Optional[BaseException] = None
        self.fn = _capi.PROGRESS_FN(self._report) if callback else _capi.PROGRESS_FN()

    def _report(self, p, userdata):
        if self.pending is not None:
            return
        c = p.contents
        try:
            self.callback(Progress(text(c.phase) or "", c.done, c.total, c.elapsed,
                                   bool(c.finished)))
        except BaseException as e:  # noqa: B036 - handed to the caller after the call
            self.pending = e

    def raise_pending(self):
        if self.pending is not None:
            e, self.pending = self.pending, None
            raise e


__all__ = ["Error", "call", "check", "text", "arg", "Reporter", "ProgressCallback"]


def call_reporting(rep: Reporter, fn, *args) -> int:
    """call(), then the callback's exception if it raised one (the
    library's own error, if any, is its __context__)."""
    try:
        return call(fn, *args)
    finally:
        rep.raise_pending()
