"""The exceptions: every failure of libqsnap becomes one, carrying the
library's errno and its sentence."""

import errno as _errno


class Error(Exception):
    """A libqsnap call failed.

    Attributes:
        errno: the positive errno value the library returned.
        message: the library's sentence, naming the thing and what to do.
    """

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(Error):
    """Something named does not exist: a snapshot, a VM directory (ENOENT)."""


class Exists(Error):
    """Something to be made exists already: a snapshot, a directory (EEXIST)."""


class Busy(Error):
    """The VM is locked by another command, or runs where it must not (EBUSY)."""


class Invalid(Error):
    """An argument is wrong: a name, a size, an option (EINVAL, E2BIG)."""


class Cancelled(Error):
    """VM.cancel() ended the call; its work was undone (ECANCELED)."""


_BY_ERRNO = {
    _errno.ECANCELED: Cancelled,
    _errno.ENOENT: NotFound,
    _errno.EEXIST: Exists,
    _errno.ENOTEMPTY: Exists,
    _errno.EBUSY: Busy,
    _errno.EAGAIN: Busy,
    _errno.EINVAL: Invalid,
    _errno.E2BIG: Invalid,
}


def error(code: int, message: str) -> Error:
    """The exception for a positive errno value and the library's message."""
    return _BY_ERRNO.get(code, Error)(code, message or _errno.errorcode.get(code, str(code)))
