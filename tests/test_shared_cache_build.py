"""Many workers build the teacher cache (teachers/shared_build.py): under a 2-rank gloo group each
rank runs its share of the blocks, and the entry holds the bytes one process writes.

Byte for byte, not within a tolerance: the ranks run exactly the blocks (batches) a one-process
build runs, on the same machine with one thread each, and the cache promises bit-equality for
the same batches, machine and thread count (teachers/cache.py); fp32 teachers."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp

from amalgam.distill.teachers.cache import teacher_cache_key
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.store import BUILD_BATCH, load_or_build
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from tests.helpers.tiny_teachers import BIG, CPU, MEAN, SIZE, STD, N, count_forwards, stems, tiny_task

VIEWS = ("plain", "mirrored")
HINT_SIZE = (1, 1)


def task_at(root: Path) -> tuple[TaskSpec, TaskData]:
    """`tiny_task`'s spec and data over checkpoints already saved under `root` (written by no rank)."""
    rosters = (("a", "b", "c"), ("c", "d"))
    teachers = tuple(TeacherSpec(f"t{k}", classes, checkpoint=str(root / "ckpt" / f"t{k}"))
                     for k, classes in enumerate(rosters, start=1))
    spec = TaskSpec("tiny", ("a", "b", "c", "d"), teachers, DataSpec("none"), img_size=SIZE)
    gen = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen),
                      torch.arange(N) % 4)
    held_out = images.subset(torch.arange(8))
    return spec, TaskData(spec, images, held_out, held_out, MEAN, STD)


def build_args(spec: TaskSpec, data: TaskData, root: Path, hints: bool):
    ensemble = load_ensemble(spec, CPU, root)
    features = "float32" if hints else None
    hint_size = HINT_SIZE if hints else None
    key = teacher_cache_key(stems(spec), data.train, ensemble.inputs, views=VIEWS, features=features,
                            hint_size=hint_size)
    return ensemble, key, features, hint_size


def _rank(rank: int, root: str, port: int, cache_dirs: list[str], hints: bool) -> None:
    os.environ.update({"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "2", "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch.distributed as dist

    from amalgam.distill.engine.distributed import init_distributed
    from amalgam.distill.teachers.shared_build import load_or_build_shared

    torch.set_num_threads(1)
    env = init_distributed("cpu")
    try:
        spec, data = task_at(Path(root))
        ensemble, key, features, hint_size = build_args(spec, data, Path(root), hints)
        calls = count_forwards(ensemble)
        entry = load_or_build_shared(env, ensemble, data.train, key, Path(cache_dirs[rank]), VIEWS, features,
                                     BIG, CPU, True, hint_size)
        assert entry.logits.shape == (N, 2, 2, 3)
        Path(root, f"rank{rank}.json").write_text(json.dumps({"images": calls[1], "key": key}))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def entry_files(directory: Path, key: str) -> dict[str, bytes]:
    """The entry's files by name, the index without its creation time."""
    files = {}
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        if path.suffix == ".json":
            index = json.loads(data)
            index.pop("created")
            data = json.dumps(index, sort_keys=True).encode()
        files[path.name] = data
    return files


# the shared build with every file kind (logits, hint reductions, energies); a disk of one's own
@pytest.mark.slow
@pytest.mark.parametrize("shared_disk, hints", [(True, True), (False, False)])
def test_two_ranks_build_the_bytes_one_process_builds(tmp_path, shared_disk, hints):
    spec, data, root = tiny_task(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ensemble, key, features, hint_size = build_args(spec, data, root, hints)
        load_or_build(ensemble, data.train, key, root / "alone", VIEWS, features, BIG, CPU, True, hint_size)
    finally:
        torch.set_num_threads(threads)
    expected = entry_files(root / "alone", key)
    assert any(name.endswith(".logits.bin") for name in expected) and (len(expected) > 2) == hints
    dirs = [str(root / "shared"), str(root / "shared" if shared_disk else root / "own1")]
    tmp_mp.spawn(_rank, args=(str(root), free_port(), dirs, hints), nprocs=2, join=True)
    for directory in sorted(set(dirs)):
        assert entry_files(Path(directory), key) == expected, directory  # no part or probe file left either
    images = [json.loads(Path(root, f"rank{r}.json").read_text())["images"] for r in range(2)]
    blocks = -(-N // BUILD_BATCH["cpu"])  # 40 images: blocks of 16, 16 and 8
    assert blocks == 3
    if shared_disk:  # rank 0 ran blocks 0 and 2, rank 1 block 1: each image once, per view
        assert images == [2 * (16 + 8), 2 * 16]
    else:  # a disk of its own: rank 1 built its own copy, whole; rank 0 did all of the shared one
        assert images == [2 * N, 2 * N]
