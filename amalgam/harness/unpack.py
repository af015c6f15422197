"""Unpacking downloads without trusting them.

Archive member names are chosen by whoever built the archive, so a name like ``../x`` or a
symlink member could write outside the project (zip-slip). Every member is checked before
anything is written, and extraction goes through a staging folder so a failure half-way
leaves the destination as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from amalgam.errors import UserError

_SEPARATORS = re.compile(r"[\\/]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK_DIRS = frozenset({"__MACOSX"})
_JUNK_FILES = frozenset({".DS_Store"})
_CHUNK = 1 << 20


def path_problem(name: str) -> str | None:
    """Why a relative path could escape the folder it is joined to, or None if it cannot.

    Shared by manifest validation and archive checks; backslashes count as separators
    because archives made on Windows use them.
    """
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if ".." in _SEPARATORS.split(name):
        return "contains a '..' component"
    return None


def _parts(name: str) -> list[str]:
    return [part for part in _SEPARATORS.split(name) if part not in ("", ".")]


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep st_mode in the high 16 bits; a link's target would be written as its body.
    return stat.S_ISLNK(info.external_attr >> 16)


def _plan(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Check every member up front, so a hostile archive is refused before one byte lands."""
    plan = []
    for info in zf.infolist():
        problem = path_problem(info.filename)
        if problem is None and _is_symlink(info):
            problem = "is a symbolic link"
        if problem is not None:
            raise UserError(
                f"refusing to unpack {archive}: member {info.filename!r} {problem}; nothing was "
                "extracted - the archive is unsafe, get it from the original publisher"
            )
        parts = _parts(info.filename)
        if not parts or parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES:
            continue
        plan.append((info, parts))
    return plan


def _join_inside(base: Path, parts: list[str]) -> Path:
    """Join checked parts, then confirm the result is still under base as a last line of defence."""
    target = base.joinpath(*parts)
    base_abs = os.path.abspath(base)
    if os.path.commonpath([base_abs, os.path.abspath(target)]) != base_abs:
        name = "/".join(parts)
        raise UserError(f"refusing to unpack member {name!r}: it resolves outside {base}")
    return target


def _merge(src: Path, dst: Path) -> None:
    """Move staged entries into place; whole folders move in one rename when they are new."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _merge(entry, target)
        else:
            os.replace(entry, target)


def unpack_zip(archive: Path, dest: Path) -> None:
    """Extract a zip into dest, skipping macOS litter.

    Raises zipfile.BadZipFile for damaged archives (the caller decides what to do with the
    download) and UserError for unsafe ones or disk problems.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = _plan(archive, zf)
            dest.mkdir(parents=True, exist_ok=True)
            # Staged inside dest so the final moves are same-filesystem renames.
            staging = Path(tempfile.mkdtemp(prefix=".amalgam-unpack-", dir=dest))
            try:
                for info, parts in plan:
                    target = _join_inside(staging, parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
                _merge(staging, dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zlib.error, EOFError) as err:
        raise zipfile.BadZipFile(str(err)) from err
    except OSError as err:
        raise UserError(
            f"could not unpack {archive} into {dest} ({err}); free some disk space or fix "
            "the folder's permissions, then run again"
        ) from err


def place_file(src: Path, dest: Path, filename: str) -> Path:
    """Copy under a temporary name first, so readers never see half a file."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    staging = dest / f".{filename}.amalgam-tmp"
    try:
        shutil.copyfile(src, staging)
        os.replace(staging, target)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise UserError(
            f"could not copy {src} to {target} ({err}); free some disk space or fix the "
            "folder's permissions, then run again"
        ) from err
    return target
