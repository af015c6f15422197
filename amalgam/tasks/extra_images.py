"""Training images a task's source holds beyond the task's own: more data for its teachers.

Users distil from teachers that know more than the student's labels teach (trained on more
images, or pretrained); a benchmark whose teachers saw only the student's training images cannot
show that case. The teacher recipe `more-data` adds images of each class from a source that has
them, never an image the student trains, validates or is scored on. One source today:
fashion-mini, whose 300 images per class are the head of Fashion-MNIST's training split.
"""

from __future__ import annotations

from collections.abc import Callable

from amalgam.errors import UserError
from amalgam.tasks.fashion import FASHION_CLASSES, beyond_held_out, locate_fashion_dir
from amalgam.tasks.images import ImageSet
from amalgam.tasks.spec import TaskSpec

ExtraSource = Callable[[TaskSpec, "str | None", int], ImageSet]


def _fashion_mini_extra(spec: TaskSpec, data_dir: str | None, per_class: int) -> ImageSet:
    if tuple(spec.classes) != FASHION_CLASSES:
        raise UserError(f"task {spec.name!r} reorders or drops Fashion-MNIST's classes, so no extra "
                        "images can be labelled for it; use the teachers' default recipe")
    return beyond_held_out(locate_fashion_dir(data_dir), per_class)


EXTRA_SOURCES: dict[str, ExtraSource] = {"fashion-mini": _fashion_mini_extra}


def extra_training_images(spec: TaskSpec, data_dir: str | None, per_class: int) -> ImageSet:
    """`per_class` more images of each class, labelled in task space."""
    source = EXTRA_SOURCES.get(spec.data.kind)
    if source is None:
        raise UserError(
            f"task {spec.name!r} (data kind {spec.data.kind!r}) has no images beyond its own training "
            f"split, so the teacher recipe `more-data` cannot train on more; train your teachers on "
            "your extra data and name their checkpoints in task.toml (docs/usage/tasks.md)"
        )
    return source(spec, data_dir, per_class)
