"""FitNet's hint computed at the student's map size (`HintTarget`): the same loss and gradient
as resizing the guess to the teacher's whole map, within float32 rounding; the teacher cache
stores these reductions (both flip views, equal to online teachers' within the cache's
promise), and a training run takes them. Fixtures are tests/test_teacher_cache.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.views import augment_with_flips, to_unit_float
from amalgam.distill.losses.features import (
    HintTarget,
    hint_loss,
    hint_operators,
    match_spatial,
    reduce_for_hint,
)
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.teachers.cache import inference_ensemble, online_source, teacher_source_for
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from tests.helpers.tiny_teachers import CPU, TARGET_TOLERANCE, assert_same_targets, tiny_task

# The reduced loss sums |U r|^2 - 2 <r, U^T f> + |f|^2 instead of |U r - f|^2: in float32 that
# moves the loss by a few units in the last place of |f|^2 (measured <= 2e-7 relative, see the
# module docstring); 1e-5 of the loss, and of the largest gradient entry, is the promise.
REDUCED_TOLERANCE = 1e-5


@pytest.mark.parametrize(("student", "teacher"), [
    ((2, 2), (16, 16)),  # bilinear up, the bench's shapes
    ((2, 2), (7, 7)),
    ((4, 3), (9, 2)),  # up along one axis, down along the other: interpolation both ways
    ((7, 7), (3, 3)),  # the teacher's map is smaller: the guess is average-pooled
    ((3, 3), (3, 3)),  # same size: no resize at all
])
def test_the_reduced_hint_is_the_whole_map_hint(student, teacher):
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(5, 6, *teacher, generator=gen) * 3 + 1, torch.randn(5, 4, *teacher, generator=gen)]
    guesses = [torch.randn(5, m.shape[1], *student, generator=gen, requires_grad=True) for m in maps]
    whole = hint_loss(guesses, maps)
    reduced = hint_loss(guesses, [reduce_for_hint(m, student) for m in maps])
    assert abs(float((reduced - whole).detach())) <= REDUCED_TOLERANCE * float(whole.detach())
    for got, expected in zip(torch.autograd.grad(reduced, guesses), torch.autograd.grad(whole, guesses),
                             strict=True):
        assert float((got - expected).abs().max()) <= REDUCED_TOLERANCE * float(expected.abs().max())
    # and it is not trivially so: a different teacher map gives a different loss
    other = hint_loss(guesses, [reduce_for_hint(m.flip(-1), student) for m in maps])
    assert abs(float((other - whole).detach())) > 1e-3 * float(whole.detach())


def test_the_resize_operators_are_match_spatial():
    """U_h x U_w applied to any map is match_spatial's resize of it, in float64 to 1e-12."""
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    for size in [(16, 16), (9, 2), (2, 2), (4, 3)]:
        u_h, u_w, a, b = hint_operators((4, 3), size)
        assert torch.allclose(u_h @ x @ u_w.T, match_spatial(x, size), atol=1e-12)
        assert torch.allclose(a, u_h.T @ u_h) and torch.allclose(b, u_w.T @ u_w)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_hint_reductions_are_the_online_teachers_for_both_flip_views(tmp_path: Path, precision):
    spec, data, root = tiny_task(tmp_path)
    config = TrainConfig(augment="flip", quiet=True, teacher_precision=precision)
    method = build_method("fitnet", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    prepared = inference_ensemble(ensemble, config)
    whole = online_source(prepared, with_features=True)
    online = online_source(prepared, with_features=True, hint_size=(1, 1))
    cached = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache",
                                student_map_size=(1, 1))
    index = torch.tensor([5, 0, 17, 33, 2, 39, 11, 20])
    view, mirrored = augment_with_flips(to_unit_float(data.train.images[index], CPU), "flip",
                                        torch.Generator().manual_seed(3))
    assert mirrored is not None and 0 < int(mirrored.sum()) < len(index)
    got, expected, maps = cached(index, view, mirrored), online(index, view), whole(index, view).features
    for got_k, expected_k, map_k in zip(got.features, expected.features, maps, strict=True):
        assert isinstance(got_k, HintTarget) and got_k.teacher_size == tuple(map_k.shape[-2:])
        assert got_k.reduced.shape == (len(index), map_k.shape[1], 1, 1)
        assert_same_targets(got_k.reduced, expected_k.reduced, precision)
        assert_same_targets(got_k.energy, expected_k.energy, precision)
        assert_same_targets(got_k.energy, map_k.pow(2).flatten(1).sum(1), precision)
    swapped = cached(index, view, ~mirrored)  # the lookup follows `mirrored`
    with pytest.raises(AssertionError, match="targets differ"):
        assert_same_targets(swapped.features[0].reduced, expected.features[0].reduced, precision,
                            {precision: TARGET_TOLERANCE["fp32"]})


def test_a_hint_cache_is_its_own_smaller_entry(tmp_path: Path):
    """Hints for another student map size, or whole maps, are other entries; the index names
    the reduction and its files hold [N, V, C, h, w] float32 plus the energies [N, V, K]."""
    spec, data, root = tiny_task(tmp_path)
    config = TrainConfig(augment="flip", quiet=True, teacher_precision="fp32")
    method = build_method("fitnet", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    for map_size in [(1, 1), (2, 2), None, (1, 1)]:  # the last one: a hit
        teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache",
                           student_map_size=map_size)
    indexes = [json.loads(p.read_text()) for p in (root / "cache").glob("*.json")]
    assert len(indexes) == 3
    hinted = {tuple(i["hint"]["student_size"]): i for i in indexes if "hint" in i}
    whole = next(i for i in indexes if "hint" not in i)
    assert set(hinted) == {(1, 1), (2, 2)}
    n = len(data.train)
    for size, index in hinted.items():
        assert [f["shape"][-2:] for f in index["features"]] == [list(size)] * 2
        assert all(f["dtype"] == "float32" for f in index["features"])
        assert index["hint"]["energy"]["shape"] == [n, 2, 2]
        assert index["hint"]["teacher_sizes"] == [f["shape"][-2:] for f in whole["features"]]
    assert hinted[(1, 1)]["bytes"] < whole["bytes"]


def test_a_fitnet_run_trains_on_cached_hint_reductions(home_with_teachers: Path):
    """`distil` sizes the reduction from the student's map: the cache entry a run builds is a
    hint entry at that size, and the run's hint term is finite and positive."""
    home = home_with_teachers  # the session's teachers, copied; the run writes its cache here
    data = load_task_data(get_task("fashion-mini"), train_per_class=8)
    settings = DistilSettings(task="fashion-mini", student="mobilenetv3_small", method="fitnet+uhc-kd",
                              train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"),
                              img_size=32, train_per_class=8)
    run_dir = distil(settings, out_dir=home / "runs" / "hinted", root=home, data=data).run_dir
    indexes = [json.loads(p.read_text()) for p in home.glob(".cache/teachers/*/*.json")]
    assert [i["hint"]["student_size"] for i in indexes] == [[1, 1]]  # mobilenetv3 at 32 px: 1x1
    history = json.loads((run_dir / "history.json").read_text())
    assert 0 < history[0]["train_terms"]["loss_hint"] < float("inf")
