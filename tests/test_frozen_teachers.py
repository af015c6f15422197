"""Faster frozen teachers (models/frozen.py, TeacherEnsemble.for_inference): BatchNorm folding
keeps the outputs, bf16 stays close to fp32, and the cache keys and serves the fast numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.cache import inference_ensemble, online_source, teacher_source_for
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.errors import UserError
from amalgam.models.frozen import fold_batchnorm, resolve_precision
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from tests.helpers.tiny_teachers import CPU, assert_same_targets, tiny_task


@pytest.fixture
def tiny(tmp_path: Path):
    return tiny_task(tmp_path)


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen))
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=gen))
            module.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


@pytest.mark.parametrize(("arch", "expected"), [("cnn-small", 6), ("seed-cnn", 6)])
def test_folding_removes_every_batchnorm_and_keeps_the_outputs(arch, expected):
    model = trained_looking(create_teacher(arch, 5))
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
        folded = fold_batchnorm(model)
        after = model(x)
    assert folded == expected
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_folding_is_safe_on_timm_models():
    """resnet18's shortcut Sequential(conv, bn) pairs fold; its conv1/bn1 attributes and
    timm's BatchNormAct2d (a BatchNorm that also applies an activation) are left alone."""
    x = torch.randn(2, 3, 32, 32)
    resnet = trained_looking(timm.create_model("resnet18", num_classes=3))
    with torch.inference_mode():
        before = resnet(x)
        assert fold_batchnorm(resnet) == 3
        torch.testing.assert_close(resnet(x), before, rtol=1e-3, atol=1e-3)
    mobilenet = trained_looking(timm.create_model("mobilenetv3_small_100", num_classes=3))
    assert fold_batchnorm(mobilenet) == 0


def test_training_mode_pairs_are_not_folded():
    training = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(training) == 0 and isinstance(training[1], nn.BatchNorm2d)


def ensemble_of(arch: str) -> TeacherEnsemble:
    teachers = (TeacherSpec("t1", ("a", "b", "c")), TeacherSpec("t2", ("c", "d")))
    roster = TaskSpec("tiny", ("a", "b", "c", "d"), teachers, DataSpec("none")).roster()
    teachers = [trained_looking(create_teacher(arch, n), seed=n) for n in (3, 2)]
    return TeacherEnsemble(teachers, [ModelInput(32, (0.5,) * 3, (0.25,) * 3)] * 2, roster)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_ensemble_matches_fp32_and_leaves_the_original_alone(channels_last):
    ensemble = ensemble_of("seed-cnn")
    view = torch.rand(6, 3, 32, 32)
    exact = ensemble(view)
    fp32 = ensemble.for_inference("fp32", channels_last)
    bf16 = ensemble.for_inference("bf16", channels_last)
    torch.testing.assert_close(fp32(view), exact, rtol=1e-4, atol=1e-4)
    fast = bf16(view)
    assert fast.dtype == torch.float32
    scale = exact.abs().max()
    assert (fast - exact).abs().max() < 0.05 * scale  # bf16 keeps ~3 significant digits
    # the original is untouched (evaluation, SimKD heads): the same batch through the same
    # unfolded fp32 modules in this process gives the same bits, so any edit would show
    assert torch.equal(ensemble(view), exact)
    assert any(isinstance(m, nn.BatchNorm2d) for m in ensemble.modules())
    assert {fp32.numerics, bf16.numerics, ensemble.numerics} == {
        f"fp32-bn-folded{'-nhwc' if channels_last else ''}",
        f"bf16-bn-folded{'-nhwc' if channels_last else ''}", "fp32"}


def test_precision_choice():
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", CPU) in {"fp32", "bf16"}
    with pytest.raises(ValueError, match="teacher precision"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UserError, match="--teacher-precision"):
        TrainConfig(teacher_precision="int8")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_targets_equal_the_fast_online_teachers(tiny, precision):
    """Cache and online path run the same prepared teachers, so targets agree to rounding even
    in bf16: within teachers/cache.py's promise (1e-4 of the largest logit in fp32, 1e-2 in bf16),
    not bit for bit, because the cache is built in batches of 16 and the online pass sees 6."""
    spec, data, root = tiny
    config = TrainConfig(augment="none", quiet=True, teacher_precision=precision)
    method = build_method("kd", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    cached = teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    online = online_source(inference_ensemble(ensemble, config))
    index = torch.tensor([5, 0, 17, 33, 2, 39])
    view = to_unit_float(data.train.images[index], CPU)
    assert_same_targets(cached(index, view).logits, online(index, view).logits, precision)


def test_each_precision_has_its_own_cache_entry(tiny):
    spec, data, root = tiny
    method = build_method("kd", spec.roster(), MethodOptions())
    ensemble = load_ensemble(spec, CPU, root)
    for precision in ("fp32", "bf16", "fp32"):
        config = TrainConfig(augment="none", quiet=True, teacher_precision=precision)
        teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache")
    assert len(list((root / "cache").glob("*.json"))) == 2
