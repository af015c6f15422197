"""The CAS771 reference app's plain `state_dict` checkpoints: its students and its teacher CNN.

The reference app saved bare `torch.save(model.state_dict())` files with no record of the
architecture, classes or preprocessing, so this module recognises them by their keys:

- student: a torchvision model under a `backbone.` prefix (EfficientNet-B0 with a
  `Dropout, Linear` head by default; MobileNetV3-Small and ResNet-18 were its other choices);
- teacher: its custom residual CNN (`conv1.conv.weight` … `classifier.3.weight`),
  rebuilt here as `Cas771TeacherCNN` with the same parameter names so released weights load.

Preprocessing: the reference app resized to 64x64 and normalised with its training set's mean/std,
which the files do not carry. Unless the caller passes the task's statistics we use the
ImageNet mean/std (close to the CIFAR/ImageNet training sets and what the reference app's own plotting
code assumed), and say so in the model card.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from amalgam.errors import UserError, one_of
from amalgam.models.checkpoint import ModelCard
from amalgam.models.model_input import ModelInput
from amalgam.models.registry import register_teacher
from amalgam.tasks.architectures import CAS771_CNN
from amalgam.tasks.cas771 import CAS771_MODELS_ASSET
from amalgam.tasks.pth_files import load_pth_safely
from amalgam.tasks.spec import CAS771_FORMAT

CAS771_IMG_SIZE = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEACHER_HEAD = "classifier.3.weight"


# --- the reference app's teacher CNN, parameter names kept ----------------------------------


class _ConvBNReLU(nn.Module):
    FOLDABLE_CONV_BN = (("conv", "bn"),)  # forward is relu(bn(conv(x))): see models/frozen.py

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int):
        super().__init__()
        self.main_path = nn.Sequential(*[_ConvBNReLU(c_in if i == 0 else c_out, c_out) for i in range(depth)])
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main_path(x) + self.shortcut(x))


class _SeparableConv(nn.Module):
    FOLDABLE_CONV_BN = (("pointwise", "bn"),)

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.pointwise(self.depthwise(x))))


class Cas771TeacherCNN(nn.Module):
    """The reference app's teacher: conv → 2 residual stages with pooling → 1x1 → separable conv → head.

    Fully convolutional up to global pooling, so it accepts any input size. Exposes timm's
    `forward_features` / `forward_head` split like our own teachers.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = _ConvBNReLU(3, 64)
        self.residual1 = _Residual(64, 128, depth=1)
        self.residual2 = _Residual(128, 256, depth=2)
        self.conv2 = _ConvBNReLU(256, 512, kernel=1, padding=0)
        self.conv3 = nn.Sequential(_SeparableConv(512), nn.Dropout(0.5))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, num_classes)
        )
        self.num_features = 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.residual1(self.conv1(x)), 2)
        x = F.max_pool2d(self.residual2(x), 2)
        return F.relu(self.conv3(self.conv2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:3](x)
        return x if pre_logits else self.classifier[3](x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_teacher(CAS771_CNN)
def cas771_cnn(num_classes: int, in_chans: int = 3) -> Cas771TeacherCNN:
    """RGB only, as the reference app built it; `in_chans` is the registry's signature."""
    return Cas771TeacherCNN(num_classes)


# --- the reference app's students: torchvision models under `backbone.` ---------------------


class Cas771Student(nn.Module):
    """Wrapper that gives a torchvision model the reference app's `backbone.` key prefix."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _efficientnet_b0(num_classes: int) -> nn.Module:
    from torchvision.models import efficientnet_b0

    model = efficientnet_b0(weights=None)
    model.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(1280, num_classes))
    return model


def _mobilenet_v3_small(num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    model = mobilenet_v3_small(weights=None)
    width = model.classifier[0].in_features
    model.classifier = nn.Sequential(nn.Linear(width, width), nn.Hardswish(inplace=True),
                                     nn.Dropout(0.2, inplace=True), nn.Linear(width, num_classes))
    return model


def _resnet18(num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


# head key → (name, builder); checked in order, the head key alone tells them apart
CAS771_STUDENTS: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "backbone.classifier.1.weight": ("efficientnet_b0", _efficientnet_b0),
    "backbone.classifier.3.weight": ("mobilenet_v3_small", _mobilenet_v3_small),
    "backbone.fc.weight": ("resnet18", _resnet18),
}


def build_cas771_student(num_classes: int, arch: str = "efficientnet_b0") -> Cas771Student:
    """A fresh reference-app-layout student (tests and converters build the exact released layout)."""
    builders = {name: build for name, build in CAS771_STUDENTS.values()}
    if arch not in builders:
        raise UserError(f"unknown cas771 student {arch!r}; use {one_of(sorted(builders))}")
    return Cas771Student(builders[arch](num_classes))


# --- loading ---------------------------------------------------------------------------------


def read_cas771_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A bare state_dict from a .pth, without unpickling anything but tensors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path (or run "
                        f"`python evaluation.py fetch {CAS771_MODELS_ASSET}` for the released students)")
    state = load_pth_safely(path, "checkpoint")
    for wrapper in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    tensors_only = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors_only or not state:
        raise UserError(f"{path} is not a state_dict (a dict of tensors); "
                        "it cannot be a cas771 (reference app) checkpoint")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def cas771_kind(state: dict[str, torch.Tensor]) -> str | None:
    """'student', 'teacher' or None, from the keys alone."""
    if any(k.startswith("backbone.") for k in state):
        return "student"
    if "conv1.conv.weight" in state and TEACHER_HEAD in state:
        return "teacher"
    return None


def _head_size_check(path: Path, head: torch.Tensor, classes: tuple[str, ...] | list[str]) -> None:
    if head.ndim != 2:
        raise UserError(f"{path} has a classifier weight of shape {tuple(head.shape)}, not "
                        "[classes, features]; the file is damaged or not a cas771 checkpoint")
    width = head.shape[0]
    if width != len(classes):
        raise UserError(
            f"{path} has a {width}-class head but {len(classes)} classes were expected "
            f"({', '.join(classes)}); grade it with the task it was trained for"
        )


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{path} does not fit the reference app's {what} ({detail})") from exc
    return model.eval()


def cas771_model_input(img_size: int | None = None, mean: tuple[float, ...] | list[float] | None = None,
                     std: tuple[float, ...] | list[float] | None = None) -> ModelInput:
    """The reference app's preprocessing: 64x64, normalised (ImageNet statistics unless given)."""
    return ModelInput(img_size or CAS771_IMG_SIZE, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD))


def load_cas771_student(path: Path, classes: tuple[str, ...] | list[str], img_size: int | None = None,
                      mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None) -> tuple[nn.Module, ModelInput]:
    """A reference-app student checkpoint as an eval-mode model plus the input it expects."""
    path = Path(path)
    state = read_cas771_state_dict(path)
    kind = cas771_kind(state)
    if kind == "teacher":
        raise UserError(f"{path} is a cas771 teacher (custom CNN) checkpoint, not a student; "
                        "use it as a teacher with format = \"cas771\" in a task.toml")
    head = next((key for key in CAS771_STUDENTS if key in state), None)
    if kind is None or head is None:
        raise UserError(
            f"{path} is not a cas771 student checkpoint (expected keys like "
            "'backbone.classifier.1.weight'); for an amalgam checkpoint use --format amalgam"
        )
    _head_size_check(path, state[head], classes)
    name, build = CAS771_STUDENTS[head]
    model = _load_into(Cas771Student(build(len(classes))), state, path, f"{name} student")
    return model, cas771_model_input(img_size, mean, std)


def load_cas771_teacher(path: Path, classes: tuple[str, ...] | list[str], img_size: int | None = None,
                      mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None) -> tuple[nn.Module, ModelInput]:
    """A reference-app teacher checkpoint (its custom CNN) as an eval-mode model plus its input."""
    path = Path(path)
    state = read_cas771_state_dict(path)
    if cas771_kind(state) != "teacher":
        raise UserError(
            f"{path} is not a cas771 teacher checkpoint (expected keys 'conv1.conv.weight' … "
            f"'{TEACHER_HEAD}'); for an amalgam checkpoint drop format = \"cas771\""
        )
    _head_size_check(path, state[TEACHER_HEAD], classes)
    model = _load_into(Cas771TeacherCNN(len(classes)), state, path, "teacher CNN")
    return model, cas771_model_input(img_size, mean, std)


def cas771_teacher_card(
    classes: tuple[str, ...] | list[str], model_input: ModelInput, task: str
) -> ModelCard:
    """A card describing a loaded reference-app teacher, so callers can treat it like our own."""
    return ModelCard(
        kind="teacher", arch=CAS771_CNN, classes=list(classes), img_size=model_input.img_size,
        mean=list(model_input.mean), std=list(model_input.std), task=task,
        trained_on={"source": "CAS771 reference app state_dict", "normalisation": "given or ImageNet"},
        format=CAS771_FORMAT,
    )
