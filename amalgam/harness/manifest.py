"""The asset manifest: what the project downloads, where it goes, and how to tell it is there.

Kept as data in release_manifest.toml beside this module (package data, so it is there after
a plain `pip install`) so a new release or a pinned checksum is a one-line edit. The file is
validated strictly because a typo there otherwise surfaces much later as a confusing
missing-file error in training or evaluation. Its paths are relative to the artefact home
(`amalgam.PROJECT_ROOT`) and may never lead out of it.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amalgam.errors import UserError
from amalgam.harness.asset_paths import OWN_PREFIX, path_parts, path_problem, source_problem
from amalgam.harness.unpack import DEFAULT_MAX_RATIO, DEFAULT_MAX_UNPACKED, ArchiveLimits

DEFAULT_MANIFEST = Path(__file__).with_name("release_manifest.toml")  # package data
ARCHIVES = ("zip", "none")
# Folders under the home that any archive may fill, besides the top folders of its provides.
ARTEFACT_FOLDERS = frozenset({"data", "checkpoints", "best_models"})

_REQUIRED = ("name", "url", "sha256", "archive", "dest")
_OPTIONAL = ("filename", "provides", "students", "tasks", "max_unpacked_mib", "max_ratio")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GDRIVE_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Asset:
    """One downloadable release file; see release_manifest.toml for what each field means."""

    name: str
    url: str
    sha256: str
    archive: str
    dest: str
    filename: str
    provides: tuple[str, ...] = ()
    students: dict[str, str] = field(default_factory=dict, hash=False)
    tasks: tuple[str, ...] = ()
    limits: ArchiveLimits = ArchiveLimits()


class _Table:
    """Typed access to one [[asset]] table, so every complaint names the file and the key."""

    def __init__(self, table: dict[str, Any], where: str) -> None:
        self.table = table
        self.where = where

    def fail(self, key: str, problem: str) -> UserError:
        return UserError(f"{self.where}: key '{key}' {problem}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def rel_path(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "must hold strings (relative paths)")
        problem = path_problem(value) or source_problem(path_parts(value))
        if problem is not None:
            raise self.fail(key, f"path {value!r} {problem}; use a path inside the project")
        return value

    def positive(self, key: str) -> float | None:
        """An optional number above zero (a limit an asset raises); None when absent."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise self.fail(key, f"must be a number above 0, got {value!r}")
        return value

    def str_list(self, key: str) -> list[Any]:
        value = self.table.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of strings")
        return value


def _parse_asset(table: Any, where: str) -> Asset:
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table; write it as [[asset]]")
    if isinstance(table.get("name"), str):
        where = f"{where} ({table['name']})"
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        allowed = ", ".join(_REQUIRED + _OPTIONAL)
        raise UserError(f"{where}: unknown key '{unknown[0]}'; allowed keys are {allowed}")
    for key in _REQUIRED:
        if key not in table:
            raise UserError(f"{where}: missing key '{key}'; add it to this [[asset]] table")
    t = _Table(table, where)

    name = t.text("name")
    if not _NAME.fullmatch(name):
        raise t.fail("name", f"{name!r} may only use letters, digits, '.', '_' and '-'")
    url = t.text("url")
    if url.startswith("gdrive:"):
        if not _GDRIVE_ID.fullmatch(url.removeprefix("gdrive:")):
            raise t.fail("url", f"{url!r} needs a Google Drive file id after 'gdrive:'")
    elif not url.startswith(("http://", "https://")):
        raise t.fail("url", f"{url!r} must start with gdrive:, http:// or https://")
    sha256 = t.text("sha256").strip().lower()
    if sha256 and not _SHA256.fullmatch(sha256):
        raise t.fail("sha256", 'must be 64 hex digits, or "" while the digest is unknown')
    archive = t.text("archive")
    if archive not in ARCHIVES:
        raise t.fail("archive", f"is {archive!r}; use one of {', '.join(ARCHIVES)}")
    dest = t.text("dest")
    if dest.strip() not in (".", "./"):
        t.rel_path("dest", dest)
    filename = t.text("filename", f"{name}.zip" if archive == "zip" else name)
    if filename in ("", ".", "..") or any(c in filename for c in "/\\\0"):
        raise t.fail("filename", f"{filename!r} must be a plain file name without folders")

    provides = tuple(t.rel_path("provides", p) for p in t.str_list("provides"))
    tasks = t.str_list("tasks")
    if not all(isinstance(task, str) and task for task in tasks):
        raise t.fail("tasks", 'must be a list of task names such as ["A", "B"]')
    students = table.get("students", {})
    if not isinstance(students, dict):
        raise t.fail("students", "must be a table mapping task name to checkpoint path")
    students = {str(task): t.rel_path("students", p) for task, p in students.items()}
    max_mib, max_ratio = t.positive("max_unpacked_mib"), t.positive("max_ratio")
    limits = ArchiveLimits(
        int(max_mib * 2**20) if max_mib is not None else DEFAULT_MAX_UNPACKED,
        float(max_ratio) if max_ratio is not None else DEFAULT_MAX_RATIO,
    )
    return Asset(name, url, sha256, archive, dest, filename, provides, students, tuple(tasks), limits)


def load_manifest(path: Path | None = None) -> list[Asset]:
    """Read and validate the manifest so later code can trust every field."""
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(
            f"asset manifest {path} not found; pass the right path with --manifest (the "
            "default one ships inside the amalgam package: reinstall it if it is missing)"
        ) from None
    except OSError as err:
        raise UserError(f"cannot read manifest {path} ({err}); check its permissions") from err
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML ({err}); fix the syntax") from err
    tables = data.get("asset")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{path}: key 'asset' must hold [[asset]] tables; add at least one")
    assets = [_parse_asset(table, f"{path}: asset #{i}") for i, table in enumerate(tables, 1)]
    seen: set[str] = set()
    for asset in assets:
        if asset.name in seen:
            raise UserError(f"{path}: key 'name' repeats {asset.name!r}; make asset names unique")
        seen.add(asset.name)
    return assets


def home_path(asset: Asset, key: str, rel: str, root: Path) -> Path:
    """root / rel, refused when it resolves outside root (a symbolic link on the way)."""
    home = Path(root).resolve()
    path = Path(root) / rel
    resolved = path.resolve()
    if not resolved.is_relative_to(home):
        raise UserError(
            f"asset {asset.name}: key '{key}' path {rel!r} resolves to {resolved}, outside the "
            f"artefact home {home}; remove the symbolic link or set AMALGAM_HOME to a folder holding it"
        )
    return path


def allowed_folders(asset: Asset) -> frozenset[str]:
    """Top-level folders of the home that this asset's archive may add files under."""
    tops = {parts[0] for parts in map(path_parts, asset.provides) if len(parts) > 1}
    return ARTEFACT_FOLDERS | tops


def marker_path(asset: Asset, root: Path) -> Path:
    """Where a verified fetch is recorded; it lives in dest so deleting dest forgets the fetch.

    The record holds the download's sha256 (trusted on first use when the manifest pins
    none) and the digest of every file the asset put in dest, which later fetches of the
    same asset may replace and nothing else may.
    """
    return root / asset.dest / f"{OWN_PREFIX}fetched-{asset.name}.json"


def read_record(asset: Asset, root: Path) -> dict[str, Any]:
    """The earlier fetch's record, or {} when there is none (or it is unreadable)."""
    try:
        record = json.loads(marker_path(asset, root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_files(record: dict[str, Any]) -> dict[str, str]:
    files = record.get("files")
    if not isinstance(files, dict):
        return {}
    return {str(rel): digest for rel, digest in files.items() if isinstance(digest, str)}


def write_record(asset: Asset, root: Path, digest: str, files: dict[str, str]) -> Path:
    record = {"name": asset.name, "url": asset.url, "sha256": digest, "archive": asset.archive,
              "files": dict(sorted(files.items()))}
    path = marker_path(asset, root)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def _marker_matches(asset: Asset, root: Path) -> bool:
    record = read_record(asset, root)
    if record.get("url") != asset.url:
        return False
    return not asset.sha256 or record.get("sha256") == asset.sha256


def is_present(asset: Asset, root: Path) -> bool:
    """Whether fetching can be skipped.

    Listed ``provides`` files win over the marker: they also cover a user who unpacked the
    archive by hand, and they notice when someone deleted part of an earlier unpack.
    """
    if asset.provides:
        return all(home_path(asset, "provides", rel, root).exists() for rel in asset.provides)
    return _marker_matches(asset, root)


def released_student(task: str, manifest: Path | None, root: Path) -> Path | None:
    """The published student checkpoint for a task, if it has been fetched."""
    for asset in load_manifest(manifest):
        rel = asset.students.get(task)
        if rel is not None and home_path(asset, "students", rel, root).is_file():
            return root / rel
    return None
