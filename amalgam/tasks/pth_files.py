"""Opening pickled `.pth` files without running them, and saying plainly why one is refused.

Data files and the reference app's checkpoints are pickles. They are opened with
`weights_only=True` plus the few numpy types an array needs; a file smuggling in any other
callable is refused before anything in it runs, and the refusal names what it would have
called, read from the pickle's opcodes (never executed), so the message does not depend on
the wording of the installed torch. Empty, truncated and foreign files get their own message.
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amalgam.errors import UserError

_DTYPE_CLASSES = (
    "BoolDType", "UInt8DType", "Int8DType", "UInt16DType", "Int16DType", "UInt32DType",
    "Int32DType", "UInt64DType", "Int64DType", "Float32DType", "Float64DType",
)
# globals a plain tensor/array file imports; anything else in a refused file is code
_DATA_GLOBALS = ("torch.", "numpy.", "collections.OrderedDict", "_codecs.encode", "builtins.bytes")
_SCAN_LIMIT = 64 << 20  # a legacy torch file puts its pickles first, its raw storages after
AGAIN = "download or copy it again"


def _empty_bytes(*args: object) -> bytes:
    """`bytes()` as pickled for an empty array's buffer; any argument is refused."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


def numpy_safe_globals() -> list[Any]:
    """The numpy callables and types a pickled array needs, under both module spellings.

    numpy 2 writes `numpy._core.multiarray`, numpy 1 wrote `numpy.core.multiarray`; the
    released files may carry either, so both names map to the functions of the numpy we run.
    An empty array pickles its buffer as `bytes()`, so that one call is allowed too.
    """
    # numpy 2's module, which numpy 1.26 also answers (with its numpy.core.multiarray)
    multiarray = importlib.import_module("numpy._core.multiarray")
    allowed: list[Any] = [np.ndarray, np.dtype, (_empty_bytes, "builtins.bytes"),
                          (_empty_bytes, "__builtin__.bytes")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray._reconstruct, f"{module}._reconstruct"))
        allowed.append((multiarray.scalar, f"{module}.scalar"))
    dtypes = getattr(np, "dtypes", None)
    for name in _DTYPE_CLASSES:
        cls = getattr(dtypes, name, None)
        if cls is not None:
            allowed.append(cls)
    return allowed


def load_pth_safely(path: Path, what: str, fix: str = AGAIN) -> Any:
    """`torch.load` with weights_only and the numpy allow-list; every failure is a UserError."""
    try:
        # torch warns about a raw pickle's protocol before refusing it; our one line says it all
        with torch.serialization.safe_globals(numpy_safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise (_holds_code(path, what, str(exc)) or damaged_file(path, what, str(exc), fix)) from exc
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        detail = "it ends too early" if isinstance(exc, EOFError) else str(exc)
        raise damaged_file(path, what, detail, fix) from exc


def _holds_code(path: Path, what: str, torch_text: str) -> UserError | None:
    """The refusal of a file whose pickle would call something other than tensor/array builders."""
    suspects = [name for name in pickled_globals(path) if not name.startswith(_DATA_GLOBALS)]
    if not suspects and "GLOBAL" not in torch_text:  # the opcode torch names when it refuses one
        return None
    named = ", ".join(suspects[:3]) if suspects else "a callable that is not a tensor or array"
    return UserError(f"{what} {path} holds code ({named}), not just tensors and arrays; it was not "
                     "loaded and none of it ran - get a clean copy from its source")


def damaged_file(path: Path, what: str, detail: str, fix: str) -> UserError:
    """One line for a file that cannot be read: empty, truncated, damaged or of another kind."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return UserError(f"cannot read {what} {path} ({exc.strerror or exc})")
    if size == 0:
        return UserError(f"{what} {path} is empty (0 bytes); {fix}")
    if head.startswith((b"PK", b"\x80")) or path.suffix == ".safetensors":
        reason = _zip_problem(path) if head.startswith(b"PK") else None
        return UserError(f"{what} {path} is truncated or corrupt ({reason or _reason(detail)}); {fix}")
    return UserError(f"{what} {path} is not a PyTorch file (it starts with {head!r}); {fix}")


def _zip_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "the end of its zip archive is missing"
    return f"its part {bad} fails its checksum" if bad else None


def pickled_globals(path: Path) -> list[str]:
    """The callables a torch file's pickles would import, read from the opcodes, never run."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                streams = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
        else:
            with path.open("rb") as fh:
                streams = [fh.read(_SCAN_LIMIT)]
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return []
    names = {name for data in streams for name in _globals_in(data)}
    return sorted(name.replace("__builtin__.", "builtins.", 1) for name in names)  # pickle protocol 2


def _globals_in(data: bytes) -> list[str]:
    """GLOBAL/INST/STACK_GLOBAL names in back-to-back pickles (a legacy torch file has several)."""
    names: list[str] = []
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        last: str | None = None
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    memo[len(memo) if op.name == "MEMOIZE" else int(arg)] = last
                elif op.name in ("GET", "BINGET", "LONG_BINGET") and memo.get(int(arg)):
                    strings.append(memo[int(arg)])
                last = arg if isinstance(arg, str) and op.name.endswith(("UNICODE", "STRING")) else None
                if last is not None:
                    strings.append(last)
        except (ValueError, EOFError, UnicodeDecodeError, pickle.PickleError):
            break
    return names


def _reason(text: str) -> str:
    """The useful line of a torch.load error (its weights-only errors bury it mid-paragraph)."""
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if marker else text).splitlines() if line.strip()]
    return lines[0][:200] if lines else "unreadable"
