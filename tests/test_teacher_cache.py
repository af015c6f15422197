"""The on-disk teacher cache: same targets as online teachers (both flip views, feature maps),
hit, miss, invalidation, corrupt files, the size budget and memory-mapped reads. Tiny
CompactCNN teachers and 16x16 images, all under tmp_path.

What "same" means is the promise in amalgam/distill/teachers/cache.py: within TARGET_TOLERANCE
of the largest logit (FEATURE_TOLERANCE of the largest feature) across batch compositions and
thread counts, bit-equal only when the very same batches run again in this process (a rebuilt
entry, an unchanged teacher).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.losses import covering_average_targets
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.cache import (
    cached_teacher_source,
    online_source,
    teacher_cache_key,
    teacher_source_for,
)
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.store import (
    compute_teacher_logits,
    load_or_build,
)
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.images import ImageSet
from tests.helpers.tiny_teachers import (
    BIG,
    CPU,
    MEAN,
    SIZE,
    STD,
    TARGET_TOLERANCE,
    N,
    assert_same_targets,
    count_forwards,
    save_teacher,
    stems,
    tiny_task,
)


@pytest.fixture
def tiny(tmp_path: Path):
    """A 4-class task with teachers of different widths (3 and 2 classes, sharing 'c')."""
    return tiny_task(tmp_path)


def build(spec, data, root) -> tuple[torch.Tensor, TeacherEnsemble, str, list[int]]:
    """The plain view's logits [N, K, L] through the store, as `--augment none` with KD gets them."""
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    key = teacher_cache_key(stems(spec), data.train, ensemble.inputs)
    cache = load_or_build(ensemble, data.train, key, root / "cache", ("plain",), None, BIG, CPU, quiet=True)
    return cache.logits[:, 0], ensemble, key, calls


def plain_source(logits: torch.Tensor):
    from amalgam.distill.teachers.store import CachedTeachers

    return cached_teacher_source(CachedTeachers(("plain",), logits[:, None], None, 0))


def test_cached_targets_equal_online_for_a_deterministic_view(tiny):
    spec, data, root = tiny
    logits, ensemble, _, _ = build(spec, data, root)
    assert logits.shape == (N, 2, 3) and logits.dtype == torch.float32
    index = torch.tensor([5, 0, 17, 33, 2, 39])
    view = to_unit_float(data.train.images[index], CPU)
    cached = plain_source(logits)(index, view).logits
    online = online_source(ensemble)(index, view).logits
    # the cache ran these images in batches of 16, online in one of 6: close, not bit-equal
    assert_same_targets(cached, online)
    labels = data.train.labels[index]
    # softmax(z / T) moves by at most 2 max|dz| / T (T = 4 here); averaging two teachers and
    # renormalising can at most double that, so the logits' bound carries over as 4 max|dz| / T
    bound = 4 * TARGET_TOLERANCE["fp32"] * float(online.abs().max()) / 4.0
    torch.testing.assert_close(covering_average_targets(cached, labels, spec.roster(), 4.0),
                               covering_average_targets(online, labels, spec.roster(), 4.0),
                               rtol=0.0, atol=bound)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_logits_agree_across_batch_sizes_and_threads_within_the_promise(tiny, precision):
    """The promise itself: any batch size or thread count gives the same logits to within
    TARGET_TOLERANCE; the same batches on the same threads give the same bits."""
    spec, data, root = tiny
    fast = load_ensemble(spec, CPU, root).for_inference(precision, channels_last=True)
    reference = compute_teacher_logits(fast, data.train, CPU, quiet=True, batch_size=32)
    assert torch.equal(compute_teacher_logits(fast, data.train, CPU, quiet=True, batch_size=32), reference)
    for batch_size in (1, 7, N):
        assert_same_targets(compute_teacher_logits(fast, data.train, CPU, True, batch_size), reference,
                            precision)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        other_threads = compute_teacher_logits(fast, data.train, CPU, quiet=True, batch_size=7)
    finally:
        torch.set_num_threads(threads)
    assert_same_targets(other_threads, reference, precision)
    with pytest.raises(AssertionError, match="targets differ"):  # looked up one image off: caught
        assert_same_targets(reference.roll(1, dims=0), reference, precision)


def test_training_with_cache_matches_online_teachers(tiny):
    """The whole point: a deterministic view gives the same run either way."""
    spec, data, root = tiny
    logits, ensemble, _, _ = build(spec, data, root)
    config = TrainConfig(epochs=1, batch_size=8, augment="none", quiet=True)
    histories = []
    for source in (plain_source(logits), online_source(ensemble)):
        torch.manual_seed(0)
        student = create_teacher("cnn-small", spec.num_classes)
        method = build_method("kd", spec.roster(), MethodOptions())
        trainer = Trainer(student, method, ModelInput(SIZE, MEAN, STD), data.train, data.val,
                          spec.num_classes, config, source)
        histories.append(trainer.train_epoch())
    # The targets agree to TARGET_TOLERANCE, not bit for bit (the cache ran batches of 16, the
    # online teachers batches of 8), so the runs agree to rounding: measured 3e-8 relative.
    # 1e-5 leaves room for other CPUs; targets looked up one image off move train_loss by 2e-4.
    # Accuracies are left out: a near-tie may flip either way on another machine.
    for metric in ("train_loss", "val_loss"):
        assert histories[0][metric] == pytest.approx(histories[1][metric], rel=1e-5), metric


def test_second_call_is_a_hit_and_runs_no_teacher(tiny):
    spec, data, root = tiny
    first, _, key, calls = build(spec, data, root)
    assert calls[0] > 0  # miss: teachers ran
    assert (root / "cache" / f"{key}.logits.bin").exists()
    index = json.loads((root / "cache" / f"{key}.json").read_text())
    assert index["key"] == key and index["logits"]["shape"] == [N, 1, 2, 3] and "created" in index
    second, _, key2, calls2 = build(spec, data, root)
    assert key2 == key and calls2[0] == 0
    assert torch.equal(first, second)  # read back from the file: the same bytes


def key_of(spec, data, inputs=None, **parts) -> str:
    inputs = inputs or [ModelInput(SIZE, MEAN, STD)] * len(spec.teachers)
    return teacher_cache_key(stems(spec), data.train, inputs, **parts)


def test_key_changes_with_every_part(tiny):
    spec, data, root = tiny
    base = key_of(spec, data)
    assert key_of(spec, data) == base  # stable

    pixels = data.train.images.clone()
    pixels[3, 0, 0, 0] ^= 1
    assert key_of(spec, replace(data, train=ImageSet(pixels, data.train.labels))) != base
    labels = data.train.labels.clone()
    labels[0] = 3
    assert key_of(spec, replace(data, train=ImageSet(data.train.images, labels))) != base
    resized = [ModelInput(SIZE * 2, MEAN, STD)] * 2
    assert key_of(spec, data, resized) != base
    other_parts = [{"numerics": "bf16-bn-folded"}, {"views": ("plain", "mirrored")}, {"features": "float16"},
                   {"features": "bfloat16"}]
    keys = {key_of(spec, data, **parts) for parts in other_parts}
    assert base not in keys and len(keys) == len(other_parts)
    save_teacher(stems(spec)[1], spec.teachers[1].classes, seed=99)  # retrained teacher
    assert key_of(spec, data) != base


def test_changed_teacher_misses_and_recomputes(tiny):
    spec, data, root = tiny
    first, _, key, _ = build(spec, data, root)
    save_teacher(stems(spec)[0], spec.teachers[0].classes, seed=123)
    second, ensemble, key2, calls = build(spec, data, root)
    assert key2 != key and calls[0] > 0
    assert not torch.equal(first[:, 0], second[:, 0])
    # the other teacher did not change; same weights, batches and threads in this process: same bits
    assert torch.equal(first[:, 1], second[:, 1])


def test_changed_img_size_misses(tiny):
    spec, data, root = tiny
    _, _, key, _ = build(spec, data, root)
    save_teacher(stems(spec)[1], spec.teachers[1].classes, seed=2, img_size=24)  # same weights
    logits, _, key2, calls = build(spec, data, root)
    assert key2 != key and calls[0] > 0


def corrupt(cache: Path, key: str, how: str) -> None:
    tensor, index = cache / f"{key}.logits.bin", cache / f"{key}.json"
    if how == "garbage tensor file":
        tensor.write_bytes(b"\x00not a tensor file")
    elif how == "truncated tensor file":
        tensor.write_bytes(tensor.read_bytes()[:50])
    elif how == "index names another key":
        index.write_text(json.dumps({**json.loads(index.read_text()), "key": "0" * 64}))
    elif how == "wrong shape":
        entry = json.loads(index.read_text())
        entry["logits"]["shape"] = [N - 1, 1, 2, 3]
        index.write_text(json.dumps(entry))
    elif how == "non-finite logits":
        tensor.write_bytes(np.full(N * 6, np.nan, np.float32).tobytes())
    elif how == "unreadable index":
        index.write_text("{not json")
    elif how == "missing index":
        index.unlink()


@pytest.mark.parametrize("how", ["garbage tensor file", "truncated tensor file", "index names another key",
                                 "wrong shape", "non-finite logits", "unreadable index", "missing index"])
def test_corrupt_cache_is_rebuilt_with_a_warning_never_used(tiny, capsys, how):
    spec, data, root = tiny
    good, _, key, _ = build(spec, data, root)
    corrupt(root / "cache", key, how)
    capsys.readouterr()
    rebuilt, _, _, calls = build(spec, data, root)
    assert "warning" in capsys.readouterr().out
    assert calls[0] > 0
    assert torch.equal(rebuilt, good)  # rebuilt in the same batches and process: the same bits
    again, _, _, calls = build(spec, data, root)  # the rebuilt entry is a clean hit
    assert calls[0] == 0 and torch.equal(again, good)


def test_single_file_checkpoints_are_hashed_whole(tiny, tmp_path):
    """The reference app's bare .pth teachers: the file's bytes are part of the key."""
    spec, data, _ = tiny
    pth = tmp_path / "seed_teacher.pth"
    pth.write_bytes(b"weights v1")
    inputs = [ModelInput(SIZE, MEAN, STD)] * 2
    base = teacher_cache_key([pth, stems(spec)[1]], data.train, inputs)
    pth.write_bytes(b"weights v2")
    assert teacher_cache_key([pth, stems(spec)[1]], data.train, inputs) != base


def test_default_cache_lives_under_the_project_root(tiny):
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    method = build_method("kd", spec.roster(), MethodOptions())
    teacher_source_for(spec, data, method, TrainConfig(augment="none", quiet=True), ensemble, root)
    assert len(list((root / ".cache" / "teachers" / "tiny").glob("*.json"))) == 1
    assert os.path.getsize(next((root / ".cache" / "teachers" / "tiny").glob("*.logits.bin"))) == N * 6 * 4
