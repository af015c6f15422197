"""Unpacking downloads without trusting them.

Archive member names are chosen by whoever built the archive, so a name like ``../x``, a
symlink member, or a plain ``train.py`` could write outside the place the asset belongs to
or replace the project's own code. Every member is checked against a `Placement` before
anything is written: it must stay inside the artefact home, land under a folder the asset
may fill, not look like project source, and not replace a file this asset did not put
there. Extraction then goes through a staging folder so a failure half-way leaves the
destination as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from amalgam.errors import UserError
from amalgam.harness.asset_paths import OWN_PREFIX, path_parts, path_problem, source_problem

_JUNK_DIRS = frozenset({"__MACOSX"})
_JUNK_FILES = frozenset({".DS_Store"})
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Placement:
    """Where one asset may write, and which existing files it may replace."""

    asset: str  # the manifest asset's name, for messages
    home: Path  # the artefact home; nothing may resolve outside it
    dest: Path  # home / the asset's dest
    allowed: frozenset[str]  # top-level folders under home that this asset may fill
    owned: Mapping[str, str] = field(default_factory=dict)  # dest-relative path -> sha256 we wrote


@dataclass
class _Entry:
    name: str  # as written in the archive, for messages
    parts: list[str]  # dest-relative
    is_dir: bool
    read_digest: Callable[[], str]  # sha256 of the member's content
    _digest: str | None = None

    def digest(self) -> str:
        """Computed at most once, and only for members that meet an existing file."""
        if self._digest is None:
            self._digest = self.read_digest()
        return self._digest


def _refuse(placement: Placement, source: Path, name: str, problem: str, fix: str) -> UserError:
    return UserError(
        f"refusing to unpack {placement.asset} ({source.name}): member {name!r} {problem}; "
        f"nothing was extracted - {fix}"
    )


def _home_parts(placement: Placement, entry: _Entry) -> list[str]:
    """The entry's target, relative to the home, as written (before following any link)."""
    target = placement.dest.joinpath(*entry.parts)
    return path_parts(os.path.relpath(os.path.abspath(target), os.path.abspath(placement.home)))


def _check_location(placement: Placement, source: Path, entry: _Entry) -> None:
    target = placement.dest.joinpath(*entry.parts)
    home_rel = _home_parts(placement, entry)
    problem = source_problem(home_rel)
    if problem is not None:
        raise _refuse(placement, source, entry.name, problem, "an asset may not install code")
    inside_folder = len(home_rel) >= (1 if entry.is_dir else 2)
    if not inside_folder or home_rel[0] not in placement.allowed:
        allowed = ", ".join(f"{top}/" for top in sorted(placement.allowed))
        raise _refuse(
            placement, source, entry.name, f"would land outside the folders it may fill ({allowed})",
            "list its folder in the asset's provides in the manifest if it really belongs there",
        )
    resolved = target.resolve()
    if not resolved.is_relative_to(placement.home.resolve()):
        raise _refuse(placement, source, entry.name, f"resolves to {resolved}, outside {placement.home}",
                      "remove the symbolic link on the way")


def _keeps_existing(placement: Placement, source: Path, entry: _Entry) -> bool:
    """Whether an existing target already holds this member (True) or may be replaced (False)."""
    target = placement.dest.joinpath(*entry.parts)
    home_rel = _home_parts(placement, entry)
    for depth in range(1, len(home_rel)):  # every folder on the way must be a folder
        above = placement.home.joinpath(*home_rel[:depth])
        if above.exists() and not above.is_dir():
            raise _refuse(placement, source, entry.name, f"needs a folder where the file {above} is",
                          "move that file away, then run again")
    if not target.exists():
        return False
    if entry.is_dir:
        if target.is_dir():
            return True
        raise _refuse(placement, source, entry.name, f"is a folder but {target} is a file",
                      "move that file away, then run again")
    if target.is_dir():
        raise _refuse(placement, source, entry.name, f"is a file but {target} is a folder",
                      "move that folder away, then run again")
    on_disk = sha256_file(target)
    if on_disk == entry.digest():
        return True
    if placement.owned.get("/".join(entry.parts)) == on_disk:
        return False
    raise _refuse(placement, source, entry.name,
                  f"would replace {target}, which this asset did not put there (or which changed since)",
                  "move that file away if the asset's copy should win, then run again")


def _plan(placement: Placement, source: Path, entries: list[_Entry]) -> list[_Entry]:
    """Check every entry up front; returns those that still need writing."""
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    for entry in entries:
        key = "/".join(entry.parts)
        for depth in range(1, len(entry.parts)):
            folders.setdefault("/".join(entry.parts[:depth]), entry.name)
        if entry.is_dir:
            folders.setdefault(key, entry.name)
        elif key in files:
            raise _refuse(placement, source, entry.name, f"repeats member {files[key]!r}",
                          "the archive is ambiguous, get it from the original publisher")
        else:
            files[key] = entry.name
    for key, name in files.items():
        if key in folders:
            raise _refuse(placement, source, name,
                          f"is a file but member {folders[key]!r} needs a folder of that name",
                          "the archive is inconsistent, get it from the original publisher")
    for entry in entries:
        _check_location(placement, source, entry)
    return [entry for entry in entries if not _keeps_existing(placement, source, entry)]


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep st_mode in the high 16 bits; a link's target would be written as its body.
    return stat.S_ISLNK(info.external_attr >> 16)


def _zip_entries(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, _Entry]]:
    entries = []
    for info in zf.infolist():
        problem = path_problem(info.filename)
        if problem is None and _is_symlink(info):
            problem = "is a symbolic link"
        if problem is not None:
            raise UserError(
                f"refusing to unpack {archive}: member {info.filename!r} {problem}; nothing was "
                "extracted - the archive is unsafe, get it from the original publisher"
            )
        parts = path_parts(info.filename)
        if not parts or parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES:
            continue
        digest = partial(_member_digest, zf, info)
        entries.append((info, _Entry(info.filename, parts, info.is_dir(), digest)))
    return entries


def _member_digest(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with zf.open(info) as src:
        for block in iter(lambda: src.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_hashing(src, target: Path) -> str:  # noqa: ANN001 - any binary file object
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for block in iter(lambda: src.read(_CHUNK), b""):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _merge(src: Path, dst: Path) -> None:
    """Move staged entries into place; whole folders move in one rename when they are new."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
        else:
            os.replace(entry, target)


def _disk_error(source: Path, dest: Path, err: OSError) -> UserError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "fix the folder's permissions"
    else:
        fix = "fix the cause above"
    return UserError(f"could not unpack {source} into {dest} ({err}); {fix}, then run again")


def unpack_zip(archive: Path, placement: Placement) -> dict[str, str]:
    """Extract a zip into placement.dest, skipping macOS litter; returns {dest-relative path: sha256}.

    Raises zipfile.BadZipFile for damaged archives (the caller decides what to do with the
    download) and UserError for unsafe ones or disk problems.
    """
    dest = placement.dest
    try:
        with zipfile.ZipFile(archive) as zf:
            pairs = _zip_entries(archive, zf)
            todo = {id(e) for e in _plan(placement, archive, [entry for _, entry in pairs])}
            written: dict[str, str] = {}
            dest.mkdir(parents=True, exist_ok=True)
            # Staged inside dest so the final moves are same-filesystem renames.
            staging = Path(tempfile.mkdtemp(prefix=f"{OWN_PREFIX}unpack-", dir=dest))
            try:
                for info, entry in pairs:
                    target = staging.joinpath(*entry.parts)
                    if entry.is_dir:
                        target.mkdir(parents=True, exist_ok=True)
                    elif id(entry) in todo:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src:
                            written["/".join(entry.parts)] = _copy_hashing(src, target)
                    else:
                        written["/".join(entry.parts)] = entry.digest()  # already there, identical
                _merge(staging, dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zlib.error, EOFError) as err:
        raise zipfile.BadZipFile(str(err)) from err
    except OSError as err:
        raise _disk_error(archive, dest, err) from err
    return written


def place_file(src: Path, placement: Placement, filename: str) -> dict[str, str]:
    """Copy under a temporary name first, so readers never see half a file; returns {filename: sha256}."""
    entry = _Entry(filename, [filename], False, lambda: sha256_file(src))
    todo = _plan(placement, src, [entry])
    target = placement.dest / filename
    staging = placement.dest / f"{OWN_PREFIX}{filename}.tmp"
    try:
        placement.dest.mkdir(parents=True, exist_ok=True)
        if todo:
            shutil.copyfile(src, staging)
            os.replace(staging, target)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise _disk_error(src, placement.dest, err) from err
    return {filename: entry.digest()}
