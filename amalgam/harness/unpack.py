"""Unpacking downloads without trusting them.

Archive member names are chosen by whoever built the archive, so a name like ``../x``, a
symlink member, or a plain ``train.py`` could write outside the place the asset belongs to
or replace the project's own code. Every member is checked against a `Placement` before
anything is written: it must stay inside the artefact home, land under a folder the asset
may fill, not look like project source, and not replace a file this asset did not put
there. Extraction then goes through a staging folder so a failure half-way leaves the
destination as it was.

Sizes are checked too, since a few hundred KiB can inflate to GiB: the archive's declared
total must stay under a limit, no member (and not the whole) may inflate more than a ratio,
the disk must have room for what will be written, and what is read may never exceed what
was declared. An asset's manifest table may raise both limits (`ArchiveLimits`).
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
from amalgam.writable import existing_ancestor, size_text

_JUNK_DIRS = frozenset({"__MACOSX"})
DEFAULT_MAX_UNPACKED = 16 * 2**30  # the CAS771 archives hold well under 1 GiB
DEFAULT_MAX_RATIO = 100.0  # images and tensors compress a few times at most; a bomb, ~1000 times
RATIO_FLOOR = 2**20  # below this much unpacked, a high ratio (a file of zeros) harms nothing
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


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may unpack to, and how many times its members may inflate."""

    max_bytes: int = DEFAULT_MAX_UNPACKED
    max_ratio: float = DEFAULT_MAX_RATIO


class UnsafeArchive(UserError):
    """The archive itself is the problem (unsafe names, a bomb): the download is not worth keeping."""


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


def _refuse(
    placement: Placement, source: Path, name: str, problem: str, fix: str, unsafe: bool = True
) -> UserError:
    """`unsafe`: the archive is at fault; else (a user's file in the way) the archive may be fine."""
    return (UnsafeArchive if unsafe else UserError)(
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
                          "move that file away, then run again", unsafe=False)
    if not target.exists():
        return False
    if entry.is_dir:
        if target.is_dir():
            return True
        raise _refuse(placement, source, entry.name, f"is a folder but {target} is a file",
                      "move that file away, then run again", unsafe=False)
    if target.is_dir():
        raise _refuse(placement, source, entry.name, f"is a file but {target} is a folder",
                      "move that folder away, then run again", unsafe=False)
    on_disk = sha256_file(target)
    if on_disk == entry.digest():
        return True
    if placement.owned.get("/".join(entry.parts)) == on_disk:
        return False
    raise _refuse(placement, source, entry.name,
                  f"would replace {target}, which this asset did not put there (or which changed since)",
                  "move that file away if the asset's copy should win, then run again", unsafe=False)


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
            raise UnsafeArchive(
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


def _copy_hashing(src, target: Path, declared: int | None = None) -> str:  # noqa: ANN001 - any binary file
    """Copy and hash; with `declared`, refuse a member that yields more bytes than its header said."""
    digest = hashlib.sha256()
    read = 0
    with target.open("wb") as out:
        for block in iter(lambda: src.read(_CHUNK), b""):
            read += len(block)
            if declared is not None and read > declared:
                raise UnsafeArchive(f"a member of the archive unpacks to more than the {declared} bytes it "
                                    "declares; nothing was extracted - get it from the original publisher")
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _check_sizes(placement: Placement, archive: Path, members: list[zipfile.ZipInfo],
                 writes: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Refuse a bomb from its headers (total, and each member's and the whole's inflation),
    and an archive the disk has no room for, before anything is written."""
    files = [info for info in members if not info.is_dir()]
    total = sum(info.file_size for info in files)
    raise_it = "if the release really is so, raise {key} in its [[asset]] table of the manifest"
    if total > limits.max_bytes:
        raise _refuse(placement, archive, files[0].filename if files else "",
                      f"is one of {len(files)} that declare {size_text(total)} in all, over the "
                      f"{size_text(limits.max_bytes)} limit", raise_it.format(key="max_unpacked_mib"))
    packed = max(archive.stat().st_size, 1)
    worst = max(files, key=lambda i: i.file_size / max(i.compress_size, 1), default=None)
    if worst is not None and worst.file_size > RATIO_FLOOR \
            and worst.file_size / max(worst.compress_size, 1) > limits.max_ratio:
        raise _refuse(placement, archive, worst.filename,
                      f"inflates {worst.file_size / max(worst.compress_size, 1):.0f} times "
                      f"({size_text(worst.compress_size)} to {size_text(worst.file_size)}), over the "
                      f"limit of {limits.max_ratio:g}", raise_it.format(key="max_ratio"))
    if total > RATIO_FLOOR and total / packed > limits.max_ratio:
        raise _refuse(placement, archive, files[0].filename,
                      f"is one of {len(files)} that inflate {total / packed:.0f} times in all "
                      f"({size_text(packed)} to {size_text(total)}), over the limit of {limits.max_ratio:g}",
                      raise_it.format(key="max_ratio"))
    need = sum(info.file_size for info in writes)
    free = shutil.disk_usage(existing_ancestor(placement.dest)).free
    if need > free:
        raise UserError(f"cannot unpack {placement.asset} ({archive.name}) into {placement.dest}: it needs "
                        f"{size_text(need)} but the disk has {size_text(free)} free; nothing was extracted - "
                        "free some space, then run again")


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


def unpack_zip(archive: Path, placement: Placement, limits: ArchiveLimits | None = None) -> dict[str, str]:
    """Extract a zip into placement.dest, skipping macOS litter; returns {dest-relative path: sha256}.

    Raises zipfile.BadZipFile for damaged archives (the caller decides what to do with the
    download), UnsafeArchive for unsafe ones and UserError for disk problems.
    """
    dest = placement.dest
    limits = limits or ArchiveLimits()
    try:
        with zipfile.ZipFile(archive) as zf:
            pairs = _zip_entries(archive, zf)
            _check_sizes(placement, archive, [info for info, _ in pairs], [], limits)  # before any hashing
            todo = {id(e) for e in _plan(placement, archive, [entry for _, entry in pairs])}
            _check_sizes(placement, archive, [info for info, _ in pairs],
                         [info for info, entry in pairs if id(entry) in todo], limits)
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
                            written["/".join(entry.parts)] = _copy_hashing(src, target, info.file_size)
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
