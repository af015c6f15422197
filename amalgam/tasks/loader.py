"""From a task spec to train/val/test image sets, with validation carved once and for good."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amalgam.errors import UserError
from amalgam.tasks.images import ImageSet, check_labels, limit_per_class, stratified_split
from amalgam.tasks.readers import read_raw_splits
from amalgam.tasks.spec import TaskSpec, TeacherSpec
from amalgam.tasks.unlabeled import read_unlabeled

SPLIT_SEED = 0  # the validation split never moves with --seed, so runs stay comparable
UNLABELED = -1  # the label every image of a label-free training set carries; never read


@dataclass(frozen=True)
class TaskData:
    """The three splits in task space, the training set's per-channel statistics, and the
    task's unlabeled images (uint8 [N, C, H, W]; None if it names none)."""

    spec: TaskSpec
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    std: tuple[float, ...]
    unlabeled: torch.Tensor | None = None

    def label_free_train(self) -> ImageSet:
        """What `--labels none` trains on: the labeled training images, then the unlabeled ones,
        every label replaced by UNLABELED, so nothing downstream can read one."""
        extra = [] if self.unlabeled is None else [self.unlabeled]
        images = torch.cat([self.train.images, *extra])
        return ImageSet(images, torch.full((len(images),), UNLABELED, dtype=torch.long))

    def for_teacher(self, teacher: TeacherSpec, split: str) -> ImageSet:
        """The images of `split` whose class the teacher knows, labelled in its local order."""
        images = getattr(self, split)
        global_idx = torch.tensor(self.spec.teacher_global_indices(teacher))
        keep = torch.isin(images.labels, global_idx)
        to_local = torch.full((self.spec.num_classes,), -1, dtype=torch.long)
        to_local[global_idx] = torch.arange(len(global_idx))
        subset = images.subset(torch.nonzero(keep).flatten())
        return ImageSet(subset.images, to_local[subset.labels])


def channel_stats(images: torch.Tensor, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std in [0, 1] units, replicated to the model's channels for grayscale data."""
    x = images.float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    if len(mean) == 1 and channels == 3:
        mean, std = mean.expand(3), std.expand(3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def check_every_class_trains(train: ImageSet, spec: TaskSpec) -> None:
    """A class without training images would be learnt from nothing, silently: refuse it."""
    counts = torch.bincount(train.labels, minlength=spec.num_classes).tolist()
    missing = [name for name, count in zip(spec.classes, counts, strict=True) if count == 0]
    if missing:
        raise UserError(f"class(es) {missing} of task {spec.name!r} have no training images; "
                        "add images for them or drop them from the task")


def load_task_data(
    spec: TaskSpec,
    data_dir: str | None = None,
    val_fraction: float = 0.1,
    train_per_class: int | None = None,
) -> TaskData:
    raw = read_raw_splits(spec, data_dir)
    for split, images in raw.items():
        check_labels(images.labels, spec.num_classes, f"the {split} data of task {spec.name!r}")
    check_every_class_trains(raw["train"], spec)
    train = raw["train"]
    if train_per_class is not None:
        train = train.subset(limit_per_class(train.labels, train_per_class, SPLIT_SEED))
    if "val" in raw:
        val = raw["val"]
    else:
        keep, held = stratified_split(train.labels, val_fraction, SPLIT_SEED)
        train, val = train.subset(keep), train.subset(held)
    if len(val) == 0:
        raise UserError("the validation split is empty; raise --val-fraction or add data")
    given = spec.data.options
    if "mean" in given and "std" in given:  # a task may pin its normalisation (task.toml)
        mean, std = tuple(given["mean"]), tuple(given["std"])
    else:
        mean, std = channel_stats(train.images, spec.channels)
    # statistics from the labeled images alone, so labeled and label-free runs see the same input
    unlabeled = read_unlabeled(spec, tuple(train.images.shape[1:]))
    return TaskData(spec, train, val, raw["test"], mean, std, unlabeled)
