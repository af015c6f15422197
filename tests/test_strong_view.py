"""`--augment strong` (consistency teaching): the teachers see the flip the cache holds, the
student a shifted, jittered and erased view of that same image; every random number comes from
the run's generator, so a resumed run draws the same views."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.engine.views import (
    ERASED_FRACTION,
    JITTER,
    augment_with_flips,
    erased,
    jittered,
    strong_view,
    training_views,
)
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.cache import online_source, teacher_source_for
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from tests.helpers.tiny_teachers import CPU, MEAN, SIZE, STD, count_forwards, tiny_task


def test_the_teachers_view_is_the_flip_and_the_student_sees_it_made_harder():
    images = torch.rand(16, 3, 12, 12)
    student, teachers, mirrored = training_views(images, "strong", torch.Generator().manual_seed(5))
    flipped, flip_drawn = augment_with_flips(images, "flip", torch.Generator().manual_seed(5))
    assert torch.equal(teachers, flipped) and torch.equal(mirrored, flip_drawn)
    assert 0 < int(mirrored.sum()) < 16
    assert student.shape == images.shape and not torch.allclose(student, teachers)
    # under every other augmentation both see the same view
    for kind in ("none", "flip", "crop-flip"):
        same_student, same_teachers, _ = training_views(images, kind, torch.Generator().manual_seed(5))
        assert same_student is same_teachers


def test_the_strong_view_depends_only_on_the_generator():
    images = torch.rand(8, 1, 10, 10)
    first = strong_view(images, torch.Generator().manual_seed(1))
    assert torch.equal(first, strong_view(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, strong_view(images, torch.Generator().manual_seed(2)))


def test_erasing_fills_one_clipped_square_with_the_image_mean():
    """On a 10 x 10 image the square's side is 5; wherever its centre falls, the erased pixels
    are the square cut at the borders, and they hold the image's per-channel mean."""
    n, side, size = 64, round(10 * ERASED_FRACTION), 10
    images = torch.rand(n, 2, size, size) + 1.0  # never equal to a mean by chance after erasing
    centre = (torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) * size).long()
    out = erased(images, torch.Generator().manual_seed(0))
    means = images.mean(dim=(2, 3), keepdim=True)
    for i in range(n):
        top, left = int(centre[i, 0]) - side // 2, int(centre[i, 1]) - side // 2
        rows = range(max(0, top), min(size, top + side))
        cols = range(max(0, left), min(size, left + side))
        expected = images[i].clone()
        for r in rows:
            for c in cols:
                expected[:, r, c] = means[i, :, 0, 0]
        torch.testing.assert_close(out[i], expected)


def test_jitter_scales_contrast_about_the_mean_and_brightness_by_hand():
    """Brightness b and contrast c drawn in [1 - JITTER, 1 + JITTER]: (x - m) c + m b, clipped."""
    images = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    drawn = torch.rand(2, 1, 1, 1, 1, generator=torch.Generator().manual_seed(9))
    factors = 1.0 + JITTER * (2.0 * drawn - 1.0)
    b, c = float(factors[0]), float(factors[1])
    assert 1 - JITTER <= b <= 1 + JITTER and 1 - JITTER <= c <= 1 + JITTER
    m = 0.5
    expected = torch.tensor([[[[(0.2 - m) * c + m * b, (0.4 - m) * c + m * b],
                               [(0.6 - m) * c + m * b, (0.8 - m) * c + m * b]]]]).clamp(0, 1)
    torch.testing.assert_close(jittered(images, torch.Generator().manual_seed(9)), expected)


@pytest.fixture
def tiny(tmp_path: Path):
    return tiny_task(tmp_path)


def test_strong_reads_the_flip_cache_and_the_teachers_get_the_flip(tiny):
    """The cache entry is the flip's (no second teacher pass), and during training the teacher
    source is asked for the flipped view while the student trains on another."""
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    calls = count_forwards(ensemble)
    method = build_method("kd", spec.roster(), MethodOptions())
    passes = []
    for augment in ("flip", "strong"):
        teacher_source_for(spec, data, method, TrainConfig(augment=augment, quiet=True), ensemble, root,
                           cache_dir=root / "cache")
        passes.append(list(calls))
    assert len(list((root / "cache").glob("*.json"))) == 1
    assert passes[0][0] > 0 and passes[1] == passes[0]  # `strong` ran no teacher: a hit

    seen, shown = [], []

    def spy(index, view, mirrored=None):
        seen.append(view.clone())
        return online_source(ensemble)(index, view)

    config = TrainConfig(epochs=1, batch_size=8, augment="strong", quiet=True, seed=3)
    torch.manual_seed(0)
    student_input = ModelInput(SIZE, MEAN, STD)
    trainer = Trainer(create_teacher("cnn-small", spec.num_classes), build_method("kd", spec.roster(),
                      MethodOptions()), student_input, data.train, data.val, spec.num_classes, config, spy)
    trainer.student_input = lambda view: (shown.append(view.clone()), student_input(view))[1]
    trainer.train_epoch()
    assert 0 < len(seen) < len(shown)  # validation batches come after the training steps
    for teachers_view, students_view in zip(seen, shown[:len(seen)], strict=True):
        assert not torch.allclose(teachers_view, students_view)
        # the teachers' view is an uint8 image, flipped or not: k / 255 exactly
        assert torch.equal((teachers_view * 255).round() / 255, teachers_view)
