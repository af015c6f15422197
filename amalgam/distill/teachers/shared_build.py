"""The teacher cache built by every torchrun rank at once, byte for byte what one process builds.

A one-process build runs the teachers block by block (`build_batch_size` images) in index
order. Here the n ranks that see one cache directory split those same blocks, rank i taking
blocks i, i + n, i + 2n, ..., so every block runs in the batch a one-process build runs it in
(the same bits on the same hardware, build and thread count; the cache's tolerance elsewhere,
see teachers/cache.py), each into part files of its own. Rank 0 then copies the parts' rows
back into index order, so the entry's tensor files hold exactly the bytes one process writes,
and writes the index last, as `build_entry` does. A rank that cannot see rank 0's cache
directory (a node without the shared disk) builds a copy of its own, whole. Which ranks share
rank 0's disk is found by a probe: rank 0 writes a random token there; a rank that reads the
same token back shares it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from pathlib import Path

import torch

from amalgam.distill.engine.distributed import DistEnv, barrier, broadcast_from_main, gather_from_all
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.mapped_rows import ArrayFile, MappedRows, RowWriter
from amalgam.distill.teachers.store import (
    CachedTeachers,
    CacheUnavailable,
    build_batch_size,
    commit_entry,
    load_or_build,
    read_entry,
    write_outputs,
)
from amalgam.tasks.images import ImageSet
from amalgam.ui import say


def load_or_build_shared(
    env: DistEnv, ensemble: TeacherEnsemble, images: ImageSet, key: str, cache_dir: Path,
    views: Sequence[str], features: str | None, budget: int, device: torch.device, quiet: bool = False,
    hint_size: tuple[int, int] | None = None,
) -> CachedTeachers:
    """`load_or_build` for every rank of a torchrun at once (every rank must call it); alone,
    exactly `load_or_build`. Raises CacheUnavailable where that would, on every rank that shares
    the failing build."""
    if not env.active or env.world_size == 1:
        return load_or_build(ensemble, images, key, cache_dir, views, features, budget, device, quiet,
                             hint_size)
    cache_dir = Path(cache_dir)
    logit_shape = (len(ensemble.teachers), ensemble.roster.local_mask.shape[1])
    try:
        entry = read_entry(cache_dir, key, len(images), views, logit_shape, features, hint_size)
    except (OSError, ValueError, KeyError, TypeError):
        entry = None  # missing or unusable: built below
    have = gather_from_all(entry is not None, env)
    if all(have):
        return entry
    sharers = _ranks_sharing_main_disk(env, cache_dir, key)
    error = None
    if env.rank not in sharers or all(have[r] for r in sharers):
        if entry is None:  # a disk of its own: its own copy, whole
            try:
                entry = load_or_build(ensemble, images, key, cache_dir, views, features, budget, device,
                                      quiet, hint_size)
            except CacheUnavailable as exc:
                error = exc
        gather_from_all(None, env)  # the sharers' parts are exchanged
        broadcast_from_main(None, env)  # rank 0 has joined them
        if error is not None:
            raise error
        return entry
    shard = (sharers.index(env.rank), len(sharers))
    what = (" and feature hints" if hint_size else " and feature maps") if features else ""
    say(f"computing teacher logits{what} for {len(images)} images x {len(views)} view(s), shared by "
        f"{len(sharers)} ranks (cached in {cache_dir})", quiet)
    part, failure = None, None
    try:
        part = write_outputs(ensemble, images, f".{key}.shard{shard[0]}of{shard[1]}", cache_dir, views,
                             features, budget, device, quiet, hint_size, shard)
    except (CacheUnavailable, OSError) as exc:
        failure = str(exc)
    parts = [p for r, p in enumerate(gather_from_all((part, failure), env)) if r in sharers]
    failures = [f for _, f in parts if f is not None]
    joined = None
    if env.is_main and not failures:
        try:
            files = _join_parts(cache_dir, key, [p for p, _ in parts], len(images), build_batch_size(device))
            sizes = next((p[1] for p, _ in parts if p[1]), [])  # each teacher's map size, for hints
            commit_entry(cache_dir, key, len(images), views, logit_shape, features, hint_size, files, sizes)
        except (OSError, ValueError) as exc:
            joined = str(exc)
    joined = broadcast_from_main(joined, env)
    if part is not None:
        _remove(cache_dir, part[0])
    if failures or joined:
        raise CacheUnavailable((failures or [joined])[0])
    return read_entry(cache_dir, key, len(images), views, logit_shape, features, hint_size)


def _ranks_sharing_main_disk(env: DistEnv, cache_dir: Path, key: str) -> list[int]:
    """The ranks that see rank 0's `cache_dir` (rank 0 among them, unless it cannot write there)."""
    token = broadcast_from_main(secrets.token_hex(16) if env.is_main else None, env)
    probe = cache_dir / f".{key}.probe"
    if env.is_main:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text(token)
        except OSError:
            pass  # nobody will read the token: every rank builds its own copy (or finds it cannot)
    barrier(env)
    try:
        sees = probe.read_text() == token
    except OSError:
        sees = False
    seen = gather_from_all(sees, env)  # every rank has looked before the probe goes
    if env.is_main:
        probe.unlink(missing_ok=True)
    return [rank for rank, sees in enumerate(seen) if sees]


def _join_parts(cache_dir: Path, key: str, parts: list[tuple[list[ArrayFile], list]], n: int,
                block: int) -> list[ArrayFile]:
    """The entry's tensor files from the parts, rows back in index order (block j is block j // n
    of part j % n); the bytes are copied, never converted."""
    opened = [[MappedRows(cache_dir, spec) for spec in files] for files, _ in parts]
    first = next(i for i, (files, _) in enumerate(parts) if files)
    joined = []
    for f, spec in enumerate(parts[first][0]):
        suffix = spec.file.removeprefix(f".{key}.shard{first}of{len(parts)}")  # .logits.bin, ...
        writer = RowWriter(cache_dir / f"{key}{suffix}", spec.dtype)
        try:
            for j in range(math.ceil(n / block)):
                start = (j // len(parts)) * block
                rows = torch.arange(start, start + min(block, n - j * block))
                writer.append(opened[j % len(parts)][f].rows(rows))
            joined.append(writer.commit())
        except BaseException:
            writer.discard()
            raise
    return joined


def _remove(cache_dir: Path, files: list[ArrayFile]) -> None:
    for spec in files:
        (cache_dir / spec.file).unlink(missing_ok=True)
