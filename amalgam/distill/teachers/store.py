"""One teacher-cache entry on disk: built in a single pass over the images, read back checked.

The build runs every teacher once per image per view (amalgam/distill/teachers/cache.py decides
which views and whether feature maps are kept) and streams the outputs to disk, so neither
building nor reading holds the feature maps in RAM. Before writing it checks the entry's size
against a budget and the free disk, and says why when it will not build one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from amalgam.distill.engine.views import mirror, to_unit_float
from amalgam.distill.losses.features import reduce_for_hint
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.mapped_rows import ArrayFile, MappedRows, RowWriter
from amalgam.errors import UserError
from amalgam.models.checkpoint import atomic_write_bytes
from amalgam.tasks.images import ImageSet
from amalgam.ui import say, track
from amalgam.writable import describe_write_failure, size_text

CACHE_FORMAT = "amalgam-teacher-outputs/3"  # part of the key: a format change invalidates all
# Images per teacher pass while building: on the CPU small enough that the teachers'
# activations stay under training's own peak (reference-app CNN teachers at 64 px, FitNet: a build in
# blocks of 32 peaked 15 MiB above training, in blocks of 16 about 200 MiB below it).
BUILD_BATCH = {"cpu": 16, "cuda": 256}
# Disk one entry may take before the teachers run online instead: the reference app CNN's feature maps
# for Task A (7,500 images, 3 teachers, 2 flip views) take 11 GiB.
DEFAULT_BUDGET_GIB = 16.0
BUDGET_ENV = "AMALGAM_TEACHER_CACHE_GB"
DISK_HEADROOM = 2**30  # never fill the disk: leave this much free


class CacheUnavailable(Exception):
    """Why no cache entry is used this time; the teachers then run on every batch."""


@dataclass
class CachedTeachers:
    """An entry read back: logits [N, V, K, L] float32 in RAM (small), feature maps memory-mapped
    ([N, V, C, H, W] per teacher, read a batch's rows at a time) or None."""

    views: tuple[str, ...]
    logits: torch.Tensor
    features: list[MappedRows] | None
    nbytes: int
    hints: HintIndex | None = None  # set when `features` hold hint reductions, not whole maps


@dataclass
class HintIndex:
    """What turns stored hint reductions back into `HintTarget`s: each image's map energy
    |f|^2 ([N, V, K] float32, small, in RAM) and each teacher's map size."""

    energy: torch.Tensor
    teacher_sizes: list[tuple[int, int]]


def cache_budget_bytes() -> int:
    """$AMALGAM_TEACHER_CACHE_GB GiB, else `DEFAULT_BUDGET_GIB`; 0 turns the cache off."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    try:
        gib = float(text) if text else DEFAULT_BUDGET_GIB
    except ValueError:
        gib = -1.0
    if not gib >= 0:
        raise UserError(f"{BUDGET_ENV} must be a number of GiB >= 0 (0 turns the teacher cache off), "
                        f"got {text!r}")
    return int(gib * 2**30)


def gib(nbytes: int) -> str:
    """A size for a message, never rounded to zero (a tiny task's logits take a few KiB)."""
    return size_text(nbytes)


def build_batch_size(device: torch.device) -> int:
    """Images per teacher pass while building on `device` (a block of the entry's rows)."""
    return BUILD_BATCH.get(device.type, 32)


def teacher_batches(
    ensemble: TeacherEnsemble, images: ImageSet, device: torch.device, views: Sequence[str],
    with_features: bool, quiet: bool, batch_size: int | None = None, shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor] | None]]:
    """All teachers on the whole set in index order, once per image per view: per block of
    images, logits [B, V, K, L] and (with features) each teacher's maps [B, V, C, H, W].
    `shard` (i, n): only blocks i, i + n, i + 2n, ... (the same blocks a whole build runs)."""
    batch_size = batch_size or build_batch_size(device)
    starts = range(0, len(images), batch_size)[shard[0]::shard[1]]
    label = f"teacher outputs, {len(views)} view{'s' if len(views) > 1 else ''}"
    for start in track(starts, len(starts), label, quiet):
        plain = to_unit_float(images.images[start : start + batch_size], device)
        outputs = []
        for name in views:
            view = mirror(plain) if name == "mirrored" else plain
            outputs.append(ensemble.forward_with_features(view) if with_features else (ensemble(view), None))
        logits = torch.stack([out[0].float().cpu() for out in outputs], dim=1)
        features = None
        if with_features:
            features = [torch.stack([out[1][k] for out in outputs], dim=1)
                        for k in range(len(ensemble.teachers))]
        yield logits, features


def compute_teacher_logits(
    ensemble: TeacherEnsemble, images: ImageSet, device: torch.device, quiet: bool,
    batch_size: int | None = None,
) -> torch.Tensor:
    """All teachers' logits [N, K, L] on the plain view, exactly as the cache computes them."""
    blocks = teacher_batches(ensemble, images, device, ("plain",), False, quiet, batch_size)
    return torch.cat([logits[:, 0] for logits, _ in blocks])


def read_entry(cache_dir: Path, key: str, n: int, views: Sequence[str], logit_shape: tuple[int, int],
               features: str | None, hint_size: tuple[int, int] | None = None) -> CachedTeachers:
    """The entry `key`, or an exception saying why it cannot be trusted."""
    index = json.loads((cache_dir / f"{key}.json").read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"index is in format {index.get('format')!r}, not {CACHE_FORMAT!r}")
    if index.get("key") != key:
        raise ValueError(f"index names key {str(index.get('key'))[:12]}…, not {key[:12]}…")
    if tuple(index.get("views", ())) != tuple(views):
        raise ValueError(f"index holds views {index.get('views')}, expected {list(views)}")
    logit_file = ArrayFile.from_dict(index["logits"])
    expected = (n, len(views), *logit_shape)
    if logit_file.shape != expected or logit_file.dtype != "float32":
        raise ValueError(f"index says logits {logit_file.dtype} {list(logit_file.shape)}, "
                         f"expected float32 {list(expected)}")
    logits = MappedRows(cache_dir, logit_file).rows(torch.arange(n))
    if not torch.isfinite(logits).all():
        raise ValueError("stored logits hold non-finite values")
    stores = None
    if features is not None:
        files = [ArrayFile.from_dict(entry) for entry in index.get("features") or []]
        if len(files) != logit_shape[0] or any(f.dtype != features or f.shape[:2] != (n, len(views))
                                               for f in files):
            listed = [(f.dtype, list(f.shape)) for f in files]
            raise ValueError(f"index lists feature maps {listed}, expected {logit_shape[0]} "
                             f"in {features} with {n} x {len(views)} rows")
        # read as [N * V, C, H, W]: row = image * V + view, as the logits are looked up
        stores = [MappedRows(cache_dir, replace(f, shape=(n * len(views), *f.shape[2:]))) for f in files]
    hints = _read_hints(cache_dir, index, n, views, logit_shape[0], files, hint_size) if stores else None
    nbytes = logit_file.nbytes + sum(s.spec.nbytes for s in stores or [])
    nbytes += hints.energy.numel() * 4 if hints else 0
    return CachedTeachers(tuple(views), logits, stores, nbytes, hints)


def _read_hints(cache_dir: Path, index: dict, n: int, views: Sequence[str], k: int, files: list[ArrayFile],
                hint_size: tuple[int, int] | None) -> HintIndex | None:
    """The entry's hint index when it should have one (and it matches), else None."""
    stored = index.get("hint")
    if hint_size is None:
        if stored:
            raise ValueError("index holds hint reductions, expected whole feature maps")
        return None
    if not stored or tuple(stored.get("student_size", ())) != tuple(hint_size):
        raise ValueError(f"index holds no hint reductions for a {hint_size} student map")
    sizes = [tuple(int(x) for x in size) for size in stored["teacher_sizes"]]
    if len(sizes) != k or any(f.shape[-2:] != tuple(hint_size) for f in files):
        raise ValueError(f"index's hint reductions do not match {k} teachers at {hint_size}")
    energy_file = ArrayFile.from_dict(stored["energy"])
    if energy_file.shape != (n, len(views), k) or energy_file.dtype != "float32":
        raise ValueError(f"index says hint energies {energy_file.dtype} {list(energy_file.shape)}, "
                         f"expected float32 {[n, len(views), k]}")
    energy = MappedRows(cache_dir, energy_file).rows(torch.arange(n))
    if not torch.isfinite(energy).all() or bool((energy < 0).any()):
        raise ValueError("stored hint energies hold negative or non-finite values")
    return HintIndex(energy, sizes)


def _check_size(nbytes: int, budget: int, cache_dir: Path) -> None:
    if nbytes > budget:
        raise CacheUnavailable(f"their cache would take {gib(nbytes)}, over the {gib(budget)} budget "
                               f"(set {BUDGET_ENV} to raise it)")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheUnavailable(unwritable_cache(exc)) from exc
    free = shutil.disk_usage(cache_dir).free
    if nbytes > free - DISK_HEADROOM:
        raise CacheUnavailable(f"their cache would take {gib(nbytes)} but {cache_dir} has {gib(free)} free, "
                               f"less than that plus the {gib(DISK_HEADROOM)} it leaves for everything else")


def unwritable_cache(exc: OSError) -> str:
    """Why the cache cannot be written (a read-only home, a disk that filled while building);
    any other OSError is a real fault and propagates."""
    message = describe_write_failure(exc)
    if message is None:
        raise exc
    return message.split('; ')[0]


def _as_hints(maps: list[torch.Tensor],
              hint_size: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each teacher's maps [B, V, C, H, W] as hint reductions [B, V, C, h, w], plus the
    energies [B, V, K] (amalgam/distill/losses/features.py, `HintTarget`)."""
    reduced, energies = [], []
    for feature_map in maps:
        target = reduce_for_hint(feature_map.flatten(0, 1), hint_size)
        reduced.append(target.reduced.unflatten(0, feature_map.shape[:2]))
        energies.append(target.energy.unflatten(0, feature_map.shape[:2]))
    return reduced, torch.stack(energies, dim=-1)


def build_entry(
    ensemble: TeacherEnsemble, images: ImageSet, key: str, cache_dir: Path, views: Sequence[str],
    features: str | None, budget: int, device: torch.device, quiet: bool,
    hint_size: tuple[int, int] | None = None,
) -> CachedTeachers:
    """Run the teachers once per image per view and stream their outputs to disk; tensor
    files first, the index last, so an index only ever points at complete files. With
    `hint_size` the feature maps are stored as their hint reductions for a student map of
    that size (float32, plus one energy per image, view and teacher)."""
    files, teacher_sizes = write_outputs(ensemble, images, key, cache_dir, views, features, budget, device,
                                         quiet, hint_size)
    logit_shape = (len(ensemble.teachers), ensemble.roster.local_mask.shape[1])
    return commit_entry(cache_dir, key, len(images), views, logit_shape, features, hint_size, files,
                        teacher_sizes)


def write_outputs(
    ensemble: TeacherEnsemble, images: ImageSet, stem: str, cache_dir: Path, views: Sequence[str],
    features: str | None, budget: int, device: torch.device, quiet: bool,
    hint_size: tuple[int, int] | None = None, shard: tuple[int, int] = (0, 1),
) -> tuple[list[ArrayFile], list[list[int]]]:
    """`build_entry`'s tensor files `<stem>.*.bin` (logits, maps, energies; none when the shard
    has no block) and each teacher's map size; `shard` as in `teacher_batches`."""
    k, width = len(ensemble.teachers), ensemble.roster.local_mask.shape[1]
    logit_bytes = len(images) * len(views) * k * width * 4
    _check_size(logit_bytes, budget, cache_dir)  # before any teacher runs, when even logits do not fit
    writers: list[RowWriter] = []
    teacher_sizes: list[list[int]] = []
    try:
        for logits, maps in teacher_batches(ensemble, images, device, views, features is not None, quiet,
                                            shard=shard):
            energy = None
            if maps is not None and hint_size is not None:
                teacher_sizes = [list(m.shape[-2:]) for m in maps]
                maps, energy = _as_hints(maps, hint_size)
            if not writers:  # the first block tells the feature maps' size
                per_image = sum(m[0].numel() for m in maps or []) * (4 if features == "float32" else 2)
                per_image += 0 if energy is None else energy[0].numel() * 4
                _check_size(logit_bytes + len(images) * per_image, budget, cache_dir)
                writers = [RowWriter(cache_dir / f"{stem}.logits.bin", "float32")]
                writers += [RowWriter(cache_dir / f"{stem}.features{i}.bin", features)
                            for i in range(len(maps or []))]
                if energy is not None:
                    writers.append(RowWriter(cache_dir / f"{stem}.hint_energy.bin", "float32"))
            writers[0].append(logits)
            for writer, feature_map in zip(writers[1 : 1 + len(maps or [])], maps or [], strict=True):
                stored = feature_map.to(torch.float16) if features == "float16" else feature_map
                if not torch.isfinite(stored).all():
                    raise CacheUnavailable(f"a teacher's feature map does not fit in {features}")
                writer.append(stored)
            if energy is not None:
                writers[-1].append(energy)
        files = [writer.commit() for writer in writers]
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
    return files, teacher_sizes


def commit_entry(
    cache_dir: Path, key: str, n: int, views: Sequence[str], logit_shape: tuple[int, int],
    features: str | None, hint_size: tuple[int, int] | None, files: list[ArrayFile],
    teacher_sizes: list[list[int]],
) -> CachedTeachers:
    """Write the index of complete tensor `files` (`write_outputs`' order), then read it back."""
    hinted = hint_size is not None and features is not None  # the last file holds the energies
    map_files = files[1 : len(files) - hinted]
    index = {"format": CACHE_FORMAT, "key": key, "views": list(views), "images": n,
             "logits": files[0].to_dict(), "features": [f.to_dict() for f in map_files],
             "bytes": sum(f.nbytes for f in files), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if hinted:
        index["hint"] = {"student_size": list(hint_size), "teacher_sizes": teacher_sizes,
                         "energy": files[-1].to_dict()}
    text = json.dumps(index, indent=2)
    atomic_write_bytes(cache_dir / f"{key}.json", lambda p: p.write_text(text))
    return read_entry(cache_dir, key, n, views, logit_shape, features, hint_size)


def load_or_build(
    ensemble: TeacherEnsemble, images: ImageSet, key: str, cache_dir: Path, views: Sequence[str],
    features: str | None, budget: int, device: torch.device, quiet: bool = False,
    hint_size: tuple[int, int] | None = None,
) -> CachedTeachers:
    """The entry `key`; built (and stored) when missing or untrustworthy. Raises CacheUnavailable
    when it may not be built (over the budget, too little disk, features out of range)."""
    cache_dir = Path(cache_dir)
    logit_shape = (len(ensemble.teachers), ensemble.roster.local_mask.shape[1])
    if any(cache_dir.glob(f"{key}.*")):
        try:
            return read_entry(cache_dir, key, len(images), views, logit_shape, features, hint_size)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # never quiet: a rebuilt cache costs time the user should know about
            say(f"[yellow]warning:[/] teacher cache {cache_dir / key}.* is unusable ({exc}); rebuilding it")
    what = (" and feature hints" if hint_size else " and feature maps") if features else ""
    say(f"computing teacher logits{what} for {len(images)} images x {len(views)} view(s) "
        f"(cached in {cache_dir})", quiet)
    try:
        return build_entry(ensemble, images, key, cache_dir, views, features, budget, device, quiet,
                           hint_size)
    except OSError as exc:  # the partial files are gone (build_entry discards them)
        raise CacheUnavailable(unwritable_cache(exc)) from exc
