"""The teacher cache for the views training uses: both flip views and the teachers' feature
maps, picked per sample as the student saw them; one teacher pass per image per view; the
size budget and its fallback; memory-mapped reads. Fixtures and tolerances are
tests/test_teacher_cache.py's (the promise in amalgam/distill/teachers/cache.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.engine.views import augment_with_flips, mirror, to_unit_float, view_for_teachers
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.cache import inference_ensemble, online_source, teacher_source_for
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.mapped_rows import ArrayFile, MappedRows, RowWriter
from amalgam.distill.teachers.store import BUDGET_ENV, BUILD_BATCH, cache_budget_bytes
from amalgam.errors import UserError
from amalgam.models.checkpoint import ModelCard, save_checkpoint
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from tests.helpers.tiny_teachers import (
    BIG,
    CPU,
    FEATURE_TOLERANCE,
    MEAN,
    SIZE,
    STD,
    N,
    assert_same_targets,
    count_forwards,
    stems,
    tiny_task,
)


@pytest.fixture
def tiny(tmp_path: Path):
    return tiny_task(tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_flip_views_and_feature_maps_equal_online_teachers(tiny, precision):
    """`--augment flip` with a feature method: per sample, the cached logits and feature maps are
    the online teachers' on the very view the student was shown (mirrored or not)."""
    spec, data, root = tiny
    config = TrainConfig(augment="flip", quiet=True, teacher_precision=precision)
    method = build_method("fitnet", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    cached = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    online = online_source(inference_ensemble(ensemble, config), with_features=True)
    index = torch.tensor([5, 0, 17, 33, 2, 39, 11, 20])
    view, mirrored = augment_with_flips(to_unit_float(data.train.images[index], CPU), "flip",
                                        torch.Generator().manual_seed(3))
    assert mirrored is not None and 0 < int(mirrored.sum()) < len(index)  # both views in one batch
    got, expected = cached(index, view, mirrored), online(index, view)
    assert_same_targets(got.logits, expected.logits, precision)
    assert got.features is not None and len(got.features) == len(spec.teachers)
    for got_map, expected_map in zip(got.features, expected.features, strict=True):
        assert_same_targets(got_map.contiguous(), expected_map.contiguous(), precision, FEATURE_TOLERANCE)
    # the other view of each sample is not within the bounds: the lookup really follows `mirrored`
    swapped = cached(index, view, ~mirrored)
    with pytest.raises(AssertionError, match="targets differ"):
        assert_same_targets(swapped.features[0].contiguous(), expected.features[0].contiguous(), precision,
                            FEATURE_TOLERANCE)


def views_the_teachers_are_asked_about(tiny, augment: str) -> list[tuple]:
    """(index, view, mirrored) of every batch one training epoch under `augment` hands the teachers."""
    spec, data, root = tiny
    seen = []

    def spy(index, view, mirrored=None):
        seen.append((index.clone(), view.clone(), mirrored))
        return online_source(ensemble)(index, view)

    ensemble = load_ensemble(spec, CPU, root)
    config = TrainConfig(epochs=1, batch_size=8, augment=augment, quiet=True)
    torch.manual_seed(0)
    trainer = Trainer(create_teacher("cnn-small", spec.num_classes), build_method("kd", spec.roster(),
                      MethodOptions()), ModelInput(SIZE, MEAN, STD), data.train, data.val, spec.num_classes,
                      config, spy)
    trainer.train_epoch()
    return seen


def test_the_trainer_shows_the_student_the_view_it_asks_targets_for(tiny):
    """The flip drawn per sample is the one passed with the batch: the student's view is the
    mirror of the image exactly where `mirrored` is set."""
    _, data, _ = tiny
    seen = views_the_teachers_are_asked_about(tiny, "flip")
    flips = torch.cat([m for _, _, m in seen])
    assert 0 < int(flips.sum()) < len(flips)
    for index, view, mirrored in seen:
        plain = to_unit_float(data.train.images[index], CPU)
        expected = torch.where(mirrored.view(-1, 1, 1, 1), mirror(plain), plain)
        assert torch.equal(view, expected)


def test_crop_flip_cached_shows_the_student_crops_and_asks_the_teachers_the_uncropped_flip(tiny):
    """`--augment crop-flip-cached`: the student's batch is crop-flip's, draw for draw; the
    teachers are asked about the same images flipped alike but not shifted, so the cached
    targets (both flip views, as `flip` caches them) are the online teachers' on that view."""
    spec, data, root = tiny
    index = torch.tensor([5, 0, 17, 33, 2, 39, 11, 20])
    original = to_unit_float(data.train.images[index], CPU)
    shown, mirrored = augment_with_flips(original, "crop-flip-cached", torch.Generator().manual_seed(3))
    as_crop_flip, flips = augment_with_flips(original, "crop-flip", torch.Generator().manual_seed(3))
    assert torch.equal(shown, as_crop_flip) and torch.equal(mirrored, flips)
    assert not torch.equal(shown, torch.where(mirrored.view(-1, 1, 1, 1), mirror(original), original))
    asked = view_for_teachers(original, shown, "crop-flip-cached", mirrored)
    assert torch.equal(asked, torch.where(mirrored.view(-1, 1, 1, 1), mirror(original), original))
    assert view_for_teachers(original, shown, "crop-flip", mirrored) is shown  # consistent: the crop itself

    config = TrainConfig(augment="crop-flip-cached", quiet=True, teacher_precision="fp32")
    method = build_method("fitnet", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    cached = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    online = online_source(inference_ensemble(ensemble, config), with_features=True)
    got, expected = cached(index, asked, mirrored), online(index, asked)
    assert_same_targets(got.logits, expected.logits, "fp32")
    for got_map, expected_map in zip(got.features, expected.features, strict=True):
        assert_same_targets(got_map.contiguous(), expected_map.contiguous(), "fp32", FEATURE_TOLERANCE)


def test_under_crop_flip_cached_the_trainer_asks_the_teachers_about_the_unshifted_view(tiny):
    _, data, _ = tiny
    for index, view, mirrored in views_the_teachers_are_asked_about(tiny, "crop-flip-cached"):
        plain = to_unit_float(data.train.images[index], CPU)
        assert torch.equal(view, torch.where(mirrored.view(-1, 1, 1, 1), mirror(plain), plain))


def test_a_flip_build_runs_each_teacher_once_per_image_per_view(tiny):
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    method = build_method("fitnet", spec.roster(), MethodOptions())
    teacher_source_for(spec, data, method, TrainConfig(augment="flip", quiet=True), ensemble, root,
                       cache_dir=root / "cache")
    assert calls[1:] == [2 * N] * len(spec.teachers)
    index = json.loads(next((root / "cache").glob("*.json")).read_text())
    assert index["views"] == ["plain", "mirrored"] and len(index["features"]) == 2
    assert index["features"][0]["shape"][:2] == [N, 2]
    assert index["features"][0]["dtype"] in {"float16", "bfloat16"}


def test_changed_views_features_or_precision_rebuild(tiny):
    """Each setting that changes what is cached has its own entry, built by a teacher pass."""
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    settings = [("none", "kd", "fp32"), ("flip", "kd", "fp32"), ("flip", "fitnet", "fp32"),
                ("flip", "fitnet", "bf16"), ("flip", "kd", "fp32")]  # the last one: a hit
    built = []
    for augment, method, precision in settings:
        before = calls[0]
        config = TrainConfig(augment=augment, quiet=True, teacher_precision=precision)
        teacher_source_for(spec, data, build_method(method, spec.roster(), MethodOptions()), config,
                           ensemble, root, cache_dir=root / "cache")
        built.append(calls[0] > before)
    assert built == [True, True, True, True, False]
    assert len(list((root / "cache").glob("*.json"))) == 4


@pytest.mark.parametrize(("augment", "method", "cached"), [
    ("none", "kd", True), ("none", "dkd", True), ("flip", "kd", True), ("flip", "fitnet", True),
    ("none", "simkd", True), ("crop-flip", "kd", False), ("crop-flip", "fitnet", False),
    ("crop-flip-cached", "kd", True), ("crop-flip-cached", "fitnet", True),
])
def test_source_is_cached_unless_the_views_are_random(tiny, capsys, augment, method, cached):
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    config = TrainConfig(augment=augment, quiet=True)
    built = build_method(method, spec.roster(), MethodOptions())
    source = teacher_source_for(spec, data, built, config, ensemble, root, cache_dir=root / "cache")
    assert any((root / "cache").glob("*.json")) == cached
    note = capsys.readouterr().out
    assert ("random crops" in note and note.count("\n") == 1) == (not cached)
    before = calls[0]
    index = torch.arange(4)
    mirrored = None if augment == "none" else torch.tensor([True, False] * 2)
    out = source(index, to_unit_float(data.train.images[index], CPU), mirrored)
    assert (calls[0] == before) == cached
    assert (out.features is not None) == built.needs_features


def test_over_budget_falls_back_to_online_teachers_and_says_why(tiny, capsys):
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    method = build_method("fitnet", spec.roster(), MethodOptions())
    config = TrainConfig(augment="flip", quiet=True)
    # logits alone (40 x 2 x 2 x 3 floats) fit in 4 KiB; the feature maps do not
    source = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache",
                                budget_bytes=4096)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "teachers run on every batch" in out
    assert "budget" in out and BUDGET_ENV in out
    assert not any((root / "cache").glob("*.json")) and not any((root / "cache").glob(".*.tmp"))
    assert calls[1:] == [2 * BUILD_PROBE] * 2  # only the first block ran (both views), to size the maps
    before = calls[0]
    source(torch.arange(4), to_unit_float(data.train.images[:4], CPU))
    assert calls[0] > before  # online
    # a zero budget turns the cache off before any teacher runs
    before = calls[0]
    teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache", budget_bytes=0)
    assert calls[0] == before and "budget" in capsys.readouterr().out


def test_a_zero_budget_reads_no_entry_already_on_disk(tiny, capsys, monkeypatch):
    """`AMALGAM_TEACHER_CACHE_GB=0` means off: a run beside one that built the entry still runs
    its teachers on every batch, and says so in one line."""
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    method = build_method("kd", spec.roster(), MethodOptions())
    config = TrainConfig(augment="flip", quiet=True)
    teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    assert any((root / "cache").glob("*.json"))
    capsys.readouterr()
    monkeypatch.setenv(BUDGET_ENV, "0")
    source = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "cache is off" in out and BUDGET_ENV in out
    before = calls[0]
    source(torch.arange(4), to_unit_float(data.train.images[:4], CPU), torch.tensor([True, False] * 2))
    assert calls[0] > before  # the teachers ran: nothing came from the entry on disk


BUILD_PROBE = BUILD_BATCH["cpu"]  # images in the build's first block


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "0.5")
    assert cache_budget_bytes() == 2**29
    monkeypatch.delenv(BUDGET_ENV)
    assert cache_budget_bytes() > 2**30
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(UserError, match=BUDGET_ENV):
            cache_budget_bytes()


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc (Linux)")
def test_mapped_rows_read_only_the_rows_asked_for(tmp_path):
    """A 64 MiB feature file read a batch at a time: only those rows come into memory, and the
    mapped pages are dropped again, so the process does not grow with the file."""
    rows, width = 1024, 32 * 1024  # 64 KiB per row in 16 bits
    writer = RowWriter(tmp_path / "maps.bin", "bfloat16")
    for start in range(0, rows, 128):
        block = torch.arange(start, start + 128, dtype=torch.float32)[:, None].expand(128, width)
        writer.append(block.to(torch.bfloat16))
    spec = writer.commit()
    assert spec == ArrayFile("maps.bin", (rows, width), "bfloat16")
    assert (tmp_path / "maps.bin").stat().st_size == 64 * 2**20 and not any(tmp_path.glob(".*.tmp"))
    store = MappedRows(tmp_path, spec)
    rss_before = vm_rss()
    picked = torch.tensor([1000, 3, 512, 3])
    got = store.rows(picked)
    assert got.dtype == torch.bfloat16 and got.shape == (4, width)
    assert torch.equal(got[:, 0].float(), picked.float()) and torch.equal(got[:, -1].float(), picked.float())
    assert store.resident_bytes() <= 2**20  # released: not even these rows stay mapped
    for start in range(0, rows, 64):  # a whole epoch of reads
        store.rows(torch.arange(start, start + 64))
    assert store.resident_bytes() <= 2**20
    assert vm_rss() - rss_before < 16 * 2**20  # well under the file's 64 MiB
    with pytest.raises(ValueError, match="bytes, expected"):
        MappedRows(tmp_path, ArrayFile("maps.bin", (rows + 1, width), "bfloat16"))


def test_features_out_of_float16_range_fall_back_to_online_teachers(tiny, capsys):
    """fp32 teachers' maps are stored in float16; one that overflows it is never cached as inf."""
    spec, data, root = tiny
    torch.manual_seed(1)
    model = create_teacher("cnn-small", len(spec.teachers[0].classes))
    with torch.no_grad():
        next(model.parameters()).mul_(1e9)  # the first conv: the last map reaches ~1e7
    card = ModelCard(kind="teacher", arch="cnn-small", classes=list(spec.teachers[0].classes), img_size=SIZE,
                     mean=list(MEAN), std=list(STD), task="tiny")
    save_checkpoint(stems(spec)[0], model.state_dict(), card)
    config = TrainConfig(augment="flip", quiet=True, teacher_precision="fp32")
    method = build_method("fitnet", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache", budget_bytes=BIG)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "teachers run on every batch" in out and "float16" in out
    assert not any((root / "cache").glob("*.json")) and not any((root / "cache").glob(".*.tmp"))
