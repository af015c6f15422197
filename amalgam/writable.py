"""Can we write there? Asked before work starts, and answered in one line when a write fails.

A read-only artefact home, a full disk or a folder owned by someone else is found with a probe
file before a teacher trains for an hour; a write that fails anyway (the disk filled up while
training) reaches the front end as an OSError, which `describe_write_failure` turns into the
one `error:` line that names the path and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from amalgam.errors import UserError

# errno values that mean "this place cannot take the write", not "this input is wrong"
WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
_FIXES = {
    errno.EROFS: "it is on a read-only file system",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would be larger than the file system allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
ELSEWHERE = "set AMALGAM_HOME (or --out) to a folder you can write"


class NotWritable(UserError):
    """A place cannot take what a command will write: whatever runs next would fail the same way,
    so a loop over runs (a comparison's arms) stops instead of recording one failure per run."""


def is_write_failure(exc: BaseException) -> bool:
    """A NotWritable, or an OSError that says the place (not the input) is wrong."""
    return isinstance(exc, NotWritable) or (isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS)


def describe_write_failure(exc: OSError) -> str | None:
    """The one-line message for an OSError that says a place cannot be written; None for others."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    verb = "use" if exc.errno in (errno.EACCES, errno.EPERM) else "write"  # a read can be refused too
    return f"cannot {verb} {where}: {_reason_and_fix(exc.errno)}"


def _reason_and_fix(code: int) -> str:
    if code in (errno.EACCES, errno.EPERM):
        return f"{_FIXES[code]}; fix its permissions or {ELSEWHERE}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{_FIXES[code]}; free some space or {ELSEWHERE}"
    return f"{_FIXES[code]}; {ELSEWHERE}"


def existing_ancestor(path: Path) -> Path:
    """The nearest folder at or above `path` that exists: where a write would land first."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, what: str, need_bytes: int = 0) -> None:
    """Refuse, before any work, a `folder` (made later if missing) that cannot take a file, or
    whose disk has fewer than `need_bytes` free. A probe file is created and removed in the
    nearest existing folder, so nothing is left behind either way."""
    target = existing_ancestor(Path(folder))
    if not target.is_dir():
        raise NotWritable(f"cannot write {what} into {folder}: {target} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".amalgam-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise NotWritable(f"cannot write {what} into {folder}: {_reason_and_fix(exc.errno)}") from exc
    if need_bytes:
        free = shutil.disk_usage(target).free
        if free < need_bytes:
            raise NotWritable(
                f"cannot write {what} into {folder}: it needs about {size_text(need_bytes)} but its disk has "
                f"{size_text(free)} free; free some space or {ELSEWHERE}"
            )


def size_text(nbytes: int) -> str:
    """A size for a message, never rounded to zero: GiB, MiB, KiB or bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{nbytes} bytes"
