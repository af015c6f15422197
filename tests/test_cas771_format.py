"""The CAS771 reference app's bare state_dicts load into models that predict exactly like the originals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.harness.evaluate import load_any_student
from amalgam.models.cas771_format import (
    IMAGENET_MEAN,
    Cas771TeacherCNN,
    build_cas771_student,
    load_cas771_student,
    load_cas771_teacher,
)
from amalgam.models.teacher_archs import create_teacher
from tests.helpers.task_files import cas771_layout_student, randomise_norm_stats

CLASSES = tuple(f"class_{i}" for i in range(12))


def test_student_state_dict_has_the_reference_app_layout():
    keys = list(cas771_layout_student(12).state_dict())
    assert all(k.startswith("backbone.") for k in keys)
    assert "backbone.features.0.0.weight" in keys and "backbone.classifier.1.weight" in keys


def test_cas771_student_predicts_like_the_original(tmp_path: Path):
    original = cas771_layout_student(len(CLASSES))
    path = tmp_path / "student_model_epoch12_acc80.00.pth"
    torch.save(original.state_dict(), path)

    loaded = load_any_student(path, CLASSES, "cas771")  # the canonical spelling; "seed" below is its old one

    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.predict(x), original(x), atol=1e-5)
    assert loaded.model_input.img_size == 64 and loaded.model_input.mean == IMAGENET_MEAN
    assert loaded.params == sum(p.numel() for p in original.parameters())
    assert load_any_student(path, CLASSES, "auto").path == path  # .pth → cas771, detected


def test_cas771_teacher_predicts_like_the_original(tmp_path: Path):
    torch.manual_seed(2)
    original = randomise_norm_stats(Cas771TeacherCNN(5))
    path = tmp_path / "data1_86.40_epoch182.pth"
    torch.save(original.state_dict(), path)

    model, model_input = load_cas771_teacher(path, CLASSES[:5], img_size=32)

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features), original(x), atol=1e-5)
    assert model_input.img_size == 32
    assert isinstance(create_teacher("seed-cnn", 5), Cas771TeacherCNN)


def test_wrong_class_count_is_a_user_error(tmp_path: Path):
    path = tmp_path / "student.pth"
    torch.save(cas771_layout_student(15).state_dict(), path)
    with pytest.raises(UserError, match="15-class head but 12 classes"):
        load_any_student(path, CLASSES, "seed")

    teacher = tmp_path / "teacher.pth"
    torch.save(Cas771TeacherCNN(4).state_dict(), teacher)
    with pytest.raises(UserError, match="4-class head but 5 classes"):
        load_cas771_teacher(teacher, CLASSES[:5])


def test_files_that_are_neither_get_a_clear_message(tmp_path: Path):
    teacher = tmp_path / "teacher.pth"
    torch.save(Cas771TeacherCNN(5).state_dict(), teacher)
    with pytest.raises(UserError, match="cas771 teacher .* not a student"):
        load_cas771_student(teacher, CLASSES[:5])

    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(UserError, match="not a cas771 student"):
        load_any_student(other, CLASSES, "seed")
    with pytest.raises(UserError, match="not a cas771 teacher"):
        load_cas771_teacher(other, CLASSES[:5])

    with pytest.raises(UserError, match="does not exist"):
        load_cas771_student(tmp_path / "missing.pth", CLASSES)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(UserError, match="not a state_dict"):
        load_cas771_student(not_a_dict, CLASSES)


def test_damaged_weights_are_a_user_error(tmp_path: Path):
    state = cas771_layout_student(12).state_dict()
    state["backbone.features.0.0.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="does not fit the reference app's efficientnet_b0 student"):
        load_cas771_student(path, CLASSES)


# --- the reference app's layout, pinned independently of our builders -----------------------
# The reference app's teacher `CNN(num_classes=5)` (teacher_model_A.py / teacher_model_B.py):
# conv1 = ConvBlock(3, 64); residual1 = ResidualBlock(64, 128); residual2 =
# ResidualBlock(128, 256, num_convs=2); conv2 = ConvBlock(256, 512, kernel_size=1, padding=0);
# conv3 = Sequential(DepthwiseSeparableConv(512, 512), Dropout); classifier = Sequential(
# AdaptiveAvgPool2d, Flatten, Dropout, Linear(512, 5)). Its state_dict, written out by hand:


def _bn(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,), f"{prefix}.running_mean": (width,),
            f"{prefix}.running_var": (width,), f"{prefix}.num_batches_tracked": ()}


CAS771_TEACHER_LAYOUT: dict[str, tuple[int, ...]] = {
    "conv1.conv.weight": (64, 3, 3, 3), **_bn("conv1.bn", 64),
    "residual1.main_path.0.conv.weight": (128, 64, 3, 3), **_bn("residual1.main_path.0.bn", 128),
    "residual1.shortcut.weight": (128, 64, 1, 1),
    "residual2.main_path.0.conv.weight": (256, 128, 3, 3), **_bn("residual2.main_path.0.bn", 256),
    "residual2.main_path.1.conv.weight": (256, 256, 3, 3), **_bn("residual2.main_path.1.bn", 256),
    "residual2.shortcut.weight": (256, 128, 1, 1),
    "conv2.conv.weight": (512, 256, 1, 1), **_bn("conv2.bn", 512),
    "conv3.0.depthwise.weight": (512, 1, 3, 3), "conv3.0.pointwise.weight": (512, 512, 1, 1),
    **_bn("conv3.0.bn", 512),
    "classifier.3.weight": (5, 512), "classifier.3.bias": (5,),
}


def _reference_app_students(num_classes: int) -> dict[str, nn.Module]:
    """The reference app's student_model.py, rebuilt from torchvision alone (its heads, pretrained=False)."""
    from torchvision import models

    efficientnet = models.efficientnet_b0(weights=None)
    efficientnet.classifier = nn.Sequential(
        nn.Dropout(p=0.2, inplace=True), nn.Linear(efficientnet.classifier[1].in_features, num_classes))
    mobilenet = models.mobilenet_v3_small(weights=None)
    width = mobilenet.classifier[0].in_features
    mobilenet.classifier = nn.Sequential(nn.Linear(width, width), nn.Hardswish(inplace=True),
                                         nn.Dropout(p=0.2, inplace=True), nn.Linear(width, num_classes))
    resnet = models.resnet18(weights=None)
    resnet.fc = nn.Linear(resnet.fc.in_features, num_classes)
    return {"efficientnet_b0": efficientnet, "mobilenet_v3_small": mobilenet, "resnet18": resnet}


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


@pytest.mark.parametrize("arch", ["efficientnet_b0", "mobilenet_v3_small", "resnet18"])
def test_cas771_student_layout_is_torchvisions_under_backbone(tmp_path: Path, arch: str):
    torch.manual_seed(3)
    original = randomise_norm_stats(_reference_app_students(len(CLASSES))[arch])
    reference_state = {f"backbone.{key}": value for key, value in original.state_dict().items()}

    assert _shapes(build_cas771_student(len(CLASSES), arch).state_dict()) == _shapes(reference_state)

    path = tmp_path / f"{arch}.pth"
    torch.save(reference_state, path)
    loaded, _ = load_cas771_student(path, CLASSES)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), original(x), atol=1e-5)


def test_cas771_teacher_layout_matches_the_reference_apps_class():
    assert _shapes(Cas771TeacherCNN(5).state_dict()) == CAS771_TEACHER_LAYOUT


def test_a_state_dict_in_the_reference_apps_teacher_layout_loads(tmp_path: Path):
    generator = torch.Generator().manual_seed(4)
    state = {key: torch.rand(shape, generator=generator) + 0.5
             for key, shape in CAS771_TEACHER_LAYOUT.items()}
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        state[key] = torch.tensor(7)
    path = tmp_path / "data1_86.40_epoch182.pth"
    torch.save(state, path)

    model, _ = load_cas771_teacher(path, CLASSES[:5])

    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
