"""A 4-class task at 16x16 with untrained CompactCNN teachers of different widths (3 and 2
classes, sharing 'c'), all under a tmp folder, and what "the same teacher targets" means.

What "same" means is the promise in amalgam/distill/teachers/cache.py: within TARGET_TOLERANCE
of the largest logit (FEATURE_TOLERANCE of the largest feature) across batch compositions and
thread counts.
"""

from __future__ import annotations

from pathlib import Path

import torch

from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.models.checkpoint import ModelCard, save_checkpoint
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

SIZE, N = 16, 40
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CPU = torch.device("cpu")
# Cached vs online logits, as a fraction of the largest |logit| (teachers/cache.py's promise).
# fp32: only the summation order differs with the batch (oneDNN picks kernels by shape and
# threads); measured <= 1e-6 on an AVX-512 Xeon, and bf16 teachers land ~5e-3 away, so 1e-4
# still tells a wrong precision or view apart. bf16: the logits themselves are rounded to bf16,
# so one flipped rounding is 2**-8 ~ 3.9e-3 of a logit; 1e-2 allows two or three.
TARGET_TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2}
# Cached vs online feature maps, as a fraction of the largest |feature|: fp32 teachers' maps are
# stored in float16 (one rounding is at most 2**-11 ~ 4.9e-4 of a value), bf16 teachers' maps in
# bfloat16, their own precision, so only the batch composition's bf16 rounding differs, as above.
FEATURE_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-2}


def assert_same_targets(got: torch.Tensor, expected: torch.Tensor, precision: str = "fp32",
                        tolerance: dict[str, float] = TARGET_TOLERANCE) -> None:
    """Equal up to the rounding a different batch composition or thread count may cause."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    bound = tolerance[precision] * float(expected.abs().max())
    worst = float((got - expected).abs().max())
    assert worst <= bound, f"{precision} targets differ by {worst:.3g} > {bound:.3g}"


def save_teacher(stem: Path, classes: tuple[str, ...], seed: int, img_size: int = SIZE) -> Path:
    torch.manual_seed(seed)
    model = create_teacher("cnn-small", len(classes))
    card = ModelCard(kind="teacher", arch="cnn-small", classes=list(classes), img_size=img_size,
                     mean=list(MEAN), std=list(STD), task="tiny")
    return save_checkpoint(stem, model.state_dict(), card)


def tiny_task(tmp_path: Path) -> tuple[TaskSpec, TaskData, Path]:
    rosters = (("a", "b", "c"), ("c", "d"))
    teachers = []
    for k, classes in enumerate(rosters, start=1):
        stem = save_teacher(tmp_path / "ckpt" / f"t{k}", classes, seed=k)
        teachers.append(TeacherSpec(f"t{k}", classes, checkpoint=str(stem)))
    spec = TaskSpec("tiny", ("a", "b", "c", "d"), tuple(teachers), DataSpec("none"), img_size=SIZE)
    gen = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen),
                      torch.arange(N) % 4)
    data = TaskData(spec, images, images.subset(torch.arange(8)), images.subset(torch.arange(8)), MEAN, STD)
    return spec, data, tmp_path


def stems(spec: TaskSpec) -> list[Path]:
    return [Path(t.checkpoint) for t in spec.teachers]


def count_forwards(ensemble: TeacherEnsemble) -> list[int]:
    """Teacher forward calls, and in [1 + k] the images teacher k ran on (copies keep the hooks)."""
    calls = [0] + [0] * len(ensemble.teachers)

    def hook_for(k: int):
        def hook(module, inputs, output):
            calls[0] += 1
            calls[1 + k] += inputs[0].shape[0]
        return hook

    for k, teacher in enumerate(ensemble.teachers):  # the first layer runs whether or not features are taken
        next(teacher.children()).register_forward_hook(hook_for(k))
    return calls


BIG = 2**40  # a budget nothing here reaches
