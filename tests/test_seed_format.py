"""The seed app's bare state_dicts load into models that predict exactly like the originals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.harness.evaluate import load_any_student
from amalgam.models.seed_format import (
    IMAGENET_MEAN,
    SeedTeacherCNN,
    build_seed_student,
    load_seed_student,
    load_seed_teacher,
)
from amalgam.models.teachers import create_teacher

CLASSES = tuple(f"class_{i}" for i in range(12))


def randomise_norm_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a mis-loaded buffer would change the predictions."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def seed_layout_student(num_classes: int) -> nn.Module:
    """What the seed's EfficientNetStudent saved: torchvision EfficientNet-B0 as `backbone`."""
    torch.manual_seed(1)
    return randomise_norm_stats(build_seed_student(num_classes))


def test_student_state_dict_has_the_seed_layout():
    keys = list(seed_layout_student(12).state_dict())
    assert all(k.startswith("backbone.") for k in keys)
    assert "backbone.features.0.0.weight" in keys and "backbone.classifier.1.weight" in keys


def test_seed_student_predicts_like_the_original(tmp_path: Path):
    original = seed_layout_student(len(CLASSES))
    path = tmp_path / "student_model_epoch12_acc80.00.pth"
    torch.save(original.state_dict(), path)

    loaded = load_any_student(path, CLASSES, "seed")

    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.predict(x), original(x), atol=1e-5)
    assert loaded.model_input.img_size == 64 and loaded.model_input.mean == IMAGENET_MEAN
    assert loaded.params == sum(p.numel() for p in original.parameters())
    assert load_any_student(path, CLASSES, "auto").path == path  # .pth → seed, detected


def test_seed_teacher_predicts_like_the_original(tmp_path: Path):
    torch.manual_seed(2)
    original = randomise_norm_stats(SeedTeacherCNN(5))
    path = tmp_path / "data1_86.40_epoch182.pth"
    torch.save(original.state_dict(), path)

    model, model_input = load_seed_teacher(path, CLASSES[:5], img_size=32)

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features), original(x), atol=1e-5)
    assert model_input.img_size == 32
    assert isinstance(create_teacher("seed-cnn", 5), SeedTeacherCNN)


def test_wrong_class_count_is_a_user_error(tmp_path: Path):
    path = tmp_path / "student.pth"
    torch.save(seed_layout_student(15).state_dict(), path)
    with pytest.raises(UserError, match="15-class head but 12 classes"):
        load_any_student(path, CLASSES, "seed")

    teacher = tmp_path / "teacher.pth"
    torch.save(SeedTeacherCNN(4).state_dict(), teacher)
    with pytest.raises(UserError, match="4-class head but 5 classes"):
        load_seed_teacher(teacher, CLASSES[:5])


def test_files_that_are_neither_get_a_clear_message(tmp_path: Path):
    teacher = tmp_path / "teacher.pth"
    torch.save(SeedTeacherCNN(5).state_dict(), teacher)
    with pytest.raises(UserError, match="seed teacher .* not a student"):
        load_seed_student(teacher, CLASSES[:5])

    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(UserError, match="not a seed student"):
        load_any_student(other, CLASSES, "seed")
    with pytest.raises(UserError, match="not a seed teacher"):
        load_seed_teacher(other, CLASSES[:5])

    with pytest.raises(UserError, match="does not exist"):
        load_seed_student(tmp_path / "missing.pth", CLASSES)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(UserError, match="not a state_dict"):
        load_seed_student(not_a_dict, CLASSES)


def test_damaged_weights_are_a_user_error(tmp_path: Path):
    state = seed_layout_student(12).state_dict()
    state["backbone.features.0.0.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="does not fit the seed's efficientnet_b0 student"):
        load_seed_student(path, CLASSES)
