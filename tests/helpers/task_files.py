"""Task files written into a tmp folder: a folder task and a `.pth` task (task.toml), and the
CAS771 Task A / Task B data in the exact released layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from amalgam.models.cas771_format import Cas771TeacherCNN, build_cas771_student
from amalgam.tasks.builtin import TASK_A_CLASSES, TASK_A_FILES, TASK_B_CLASSES, TASK_B_FILES, get_task

SHAPES = ("circle", "square", "cross")


FOLDER_TOML = """
name = "shapes"
description = "three hand-drawn shapes"
classes = ["circle", "square", "cross"]
img_size = 16

[[teacher]]
name = "round"
classes = ["circle", "square"]
checkpoint = "ckpt/round"

[[teacher]]
name = "angular"
classes = ["square", "cross"]
arch = "cnn-small"
checkpoint = "ckpt/angular"

[data]
kind = "folder"
train = "images/train"
test = "images/test"
"""


PTH_TOML = """
name = "animals"
classes = ["hyena", "zebra", "lynx"]
img_size = 16

[[teacher]]
name = "savanna"
classes = ["hyena", "zebra"]
format = "seed"  # the old spelling of cas771, still read
checkpoint = "reference-app/savanna.pth"

[[teacher]]
name = "hunters"
classes = ["hyena", "lynx"]
format = "cas771"
checkpoint = "reference-app/hunters.pth"

[data]
kind = "cas771-pth"
root = "pth"

[data.files]
savanna = { train = "train_1.pth", test = "val_1.pth" }
hunters = { train = "train_2.pth", test = "val_2.pth" }

[data.original_labels]
hyena = 34
zebra = 80
lynx = 201
"""


def write_folder_task(root: Path, train: int = 6, test: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for index, name in enumerate(SHAPES):
            folder = root / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
                pixels[:, :, index] = 255  # a colour cue, so the task is learnable at all
                Image.fromarray(pixels).save(folder / f"{i}.png")
            Image.fromarray(pixels[:, :, 0]).save(folder / "gray.png")  # mode L is converted
            (folder / ".DS_Store").write_bytes(b"\0junk")  # ignored: hidden, not an image
    path = root / "shapes.toml"
    path.write_text(FOLDER_TOML)
    return path


def write_pth_task(root: Path) -> Path:
    (root / "pth").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k, originals in ((1, [34, 80]), (2, [34, 201])):
        for split, count in (("train", 6), ("val", 3)):
            labels = np.repeat(np.asarray(originals), count)
            images = rng.integers(0, 256, size=(len(labels), 16, 16, 3), dtype=np.uint8)
            images[:, 0, 0, 0] = k
            torch.save({"data": torch.from_numpy(images), "labels": torch.from_numpy(labels)},
                       root / "pth" / f"{split}_{k}.pth")
    (root / "reference-app").mkdir()
    torch.manual_seed(0)
    for name in ("savanna", "hunters"):
        torch.save(Cas771TeacherCNN(2).state_dict(), root / "reference-app" / f"{name}.pth")
    path = root / "animals.toml"
    path.write_text(PTH_TOML)
    return path


# --- the CAS771 fakes: images per class in each split, and their side in pixels ------------

TRAIN_PER_CLASS, TEST_PER_CLASS, SIZE = 4, 2, 8


def originals_of(task: str) -> list[list[int]]:
    """Each teacher's original labels in local order (ascending), from the built-in roster."""
    table = dict(TASK_A_CLASSES if task == "A" else TASK_B_CLASSES)
    return [sorted(table[c] for c in t.classes) for t in get_task(task).teachers]


def fake_images(originals: list[int], per_class: int, teacher: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """NHWC uint8 images whose first pixel records (teacher, original label) for the checks."""
    labels = np.repeat(np.asarray(originals, dtype=np.int64), per_class)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), SIZE, SIZE, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = teacher
    images[:, 0, 0, 1] = labels
    return images, labels


def write_task_a(root: Path) -> Path:
    """data/TaskA/… as released; teacher 1 numpy HWC + indices, 2 a CHW tensor, 3 list labels."""
    folder = root / "data" / "TaskA"
    for k, (originals, files) in enumerate(zip(originals_of("A"), TASK_A_FILES, strict=True), start=1):
        splits = (("train", files[0], TRAIN_PER_CLASS), ("test", files[1], TEST_PER_CLASS))
        for split, rel, per_class in splits:
            images, labels = fake_images(originals, per_class, k, seed=10 * k + len(split))
            if k == 1:
                payload = {"data": images, "labels": labels, "indices": np.arange(len(labels))}
            elif k == 2:
                payload = {"data": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                           "labels": torch.from_numpy(labels), "indices": torch.arange(len(labels))}
            else:
                payload = {"data": images, "labels": [int(v) for v in labels]}
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, folder / rel)
    return folder


def write_task_b(root: Path, bad_label: int | None = None) -> Path:
    """data/TaskB/{train,val}_dataB_model_k.pth as released: uint8 tensor NHWC, tensor labels."""
    folder = root / "data" / "TaskB"
    folder.mkdir(parents=True, exist_ok=True)
    for k, (originals, files) in enumerate(zip(originals_of("B"), TASK_B_FILES, strict=True), start=1):
        for rel, per_class in ((files[0], TRAIN_PER_CLASS), (files[1], TEST_PER_CLASS)):
            images, labels = fake_images(originals, per_class, k, seed=k + per_class)
            if bad_label is not None and k == 2 and rel.startswith("train"):
                labels[-1] = bad_label
            torch.save({"data": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, folder / rel)
    return folder


def randomise_norm_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a mis-loaded buffer would change the predictions."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def cas771_layout_student(num_classes: int) -> nn.Module:
    """What the reference app's EfficientNetStudent saved: torchvision EfficientNet-B0 as `backbone`."""
    torch.manual_seed(1)
    return randomise_norm_stats(build_cas771_student(num_classes))
