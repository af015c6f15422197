"""Which relative paths an asset may name: rules shared by manifest validation (manifest.py)
and archive extraction (unpack.py), so a name refused in one place is refused in the other.

A name comes from whoever wrote the manifest or built the archive. It must not escape the
folder it is joined to (absolute, drive letter, '..'), and it must not look like project
source, an executable or tool state, which no asset (weights and data) ever is.
"""

from __future__ import annotations

import re
from pathlib import Path

_SEPARATORS = re.compile(r"[\\/]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Code, build files and tool state: an asset is weights and data, never something that runs.
_SOURCE_SUFFIXES = frozenset(
    ".py .pyc .pyo .pyi .pyw .pyx .pxd .pyd .so .dylib .dll .exe .sh .bash .zsh .bat .cmd .ps1".split()
)
_SOURCE_NAMES = frozenset(
    "pyproject.toml setup.cfg setup.py MANIFEST.in Makefile tox.ini requirements.txt".split()
)
_TOOL_DIRS = frozenset(".git .hg .svn .github .venv venv .tox __pycache__ site-packages".split())
OWN_PREFIX = ".amalgam-"  # fetch records and staging folders; an archive must not forge them


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


def path_parts(name: str) -> list[str]:
    return [part for part in _SEPARATORS.split(name) if part not in ("", ".")]


def source_problem(parts: list[str]) -> str | None:
    """Why a path looks like project source or tool state that no asset may write, or None."""
    if not parts:
        return None
    if any(part in _TOOL_DIRS for part in parts):
        return "is inside a version-control, virtualenv or cache folder"
    if any(part.startswith(OWN_PREFIX) for part in parts):
        return f"uses amalgam's own bookkeeping prefix {OWN_PREFIX!r}"
    name = parts[-1]
    suffix = Path(name).suffix.lower()
    if name in _SOURCE_NAMES or name.startswith("requirements") or suffix in _SOURCE_SUFFIXES:
        return "looks like project source or an executable"
    return None
