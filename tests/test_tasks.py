"""Task specs, rosters and splits: what every command trusts about its data."""

from __future__ import annotations

import pytest
import torch

from amalgam.errors import UserError
from amalgam.harness.manifest import load_manifest
from amalgam.tasks import readers
from amalgam.tasks.builtin import builtin_tasks, get_task, released_tasks, reserved_task_names
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

CLASSES = ("a", "b", "c", "d")


def make_task(teachers, classes=CLASSES, kind="none"):
    return TaskSpec("t", classes, tuple(TeacherSpec(f"t{i}", tuple(c)) for i, c in enumerate(teachers)),
                    DataSpec(kind))


@pytest.mark.parametrize(
    ("teachers", "needle"),
    [
        ([("a", "b"), ("c", "x")], "'x'"),
        ([("a", "b"), ("b", "c")], "covered by no teacher"),
        ([("a",), ("b", "c", "d")], "fewer than 2"),
        ([("a", "a", "b"), ("c", "d")], "twice"),
        ([], "no teachers"),
    ],
)
def test_bad_rosters_are_rejected_with_the_reason(teachers, needle):
    with pytest.raises(UserError, match=needle):
        make_task(teachers)


def test_duplicate_task_classes_rejected():
    with pytest.raises(UserError, match="twice"):
        make_task([("a", "b")], classes=("a", "b", "a"))


def test_builtin_rosters_follow_the_spec():
    b = get_task("B")
    assert b.classes[1] == "hyena" and b.num_classes == 12
    assert [t.classes for t in b.teachers][0] == ("hyena", "baboon", "Arctic_fox", "Chihuahua", "lynx")
    shared = b.roster().coverage.sum(dim=0)
    assert {b.classes[i] for i in torch.nonzero(shared > 1).flatten().tolist()} == {
        "hyena", "Chihuahua", "African_hunting_dog"}
    a = get_task("TaskA")
    assert a.roster().coverage.sum(dim=0).tolist() == [1] * 15
    fashion = get_task("fashion-mini")
    assert fashion.teacher_global_indices(fashion.teachers[1]) == [3, 4, 5, 6]


def test_every_name_of_a_builtin_task_selects_it():
    for spec in builtin_tasks().values():
        for name in spec.names:
            assert get_task(name).name == spec.name
    assert get_task("a").name == "A" and get_task("TaskB").name == "B"


def test_task_folders_keep_the_names_existing_artefacts_use():
    # checkpoints/TaskA, evaluation/TaskA, runs/…_task_TaskA: where earlier runs put them
    assert {n: s.dir_name for n, s in builtin_tasks().items()} == {
        "fashion-mini": "fashion-mini", "fashion": "fashion", "A": "TaskA", "B": "TaskB"}
    assert make_task([("a", "b"), ("c", "d")]).dir_name == "t"


def test_released_tasks_and_reserved_names_derive_from_the_specs():
    assert released_tasks() == ["A", "B"]
    assert reserved_task_names() == {"fashion-mini", "fashion", "A", "B", "a", "b", "TaskA", "TaskB"}
    shipped = {asset.name: asset for asset in load_manifest(None)}
    for name in released_tasks():
        spec = get_task(name)
        assert set(spec.released_assets) <= set(shipped)
        assert any(name in shipped[asset].students for asset in spec.released_assets)


def test_unknown_task_names_the_choices():
    with pytest.raises(UserError, match="fashion-mini"):
        get_task("C")


def test_fashion_mini_splits_are_fixed_and_disjoint():
    spec = get_task("fashion-mini")
    first, second = load_task_data(spec), load_task_data(spec)
    assert (len(first.train), len(first.val), len(first.test)) == (2700, 300, 600)
    assert torch.equal(first.val.labels, second.val.labels)
    assert torch.equal(first.val.images, second.val.images)
    assert torch.bincount(first.val.labels).tolist() == [30] * 10
    assert first.train.images.dtype == torch.uint8 and first.train.images.shape[1:] == (1, 28, 28)
    # no validation image is also a training image
    train_keys = {bytes(x.numpy()) for x in first.train.images}
    assert not any(bytes(x.numpy()) in train_keys for x in first.val.images)


def test_train_per_class_limits_before_the_validation_carve():
    data = load_task_data(get_task("fashion-mini"), train_per_class=20)
    assert torch.bincount(data.train.labels).tolist() == [18] * 10
    assert torch.bincount(data.val.labels).tolist() == [2] * 10
    assert len(data.test) == 600


def test_teacher_view_uses_local_labels_of_its_own_classes():
    spec = get_task("fashion-mini")
    data = load_task_data(spec, train_per_class=20)
    second = data.for_teacher(spec.teachers[1], "train")  # Dress, Coat, Sandal, Shirt
    assert len(second) == 4 * 18
    assert sorted(second.labels.unique().tolist()) == [0, 1, 2, 3]


def test_labels_outside_the_task_are_an_error(monkeypatch):
    images = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    bad = ImageSet(images, torch.tensor([0, 1, 2, 3, 0, 7]))
    good = ImageSet(images, torch.tensor([0, 1, 2, 3, 0, 1]))
    monkeypatch.setitem(readers.READERS, "fake", lambda spec, d: {"train": bad, "test": good})
    with pytest.raises(UserError, match="label 7 outside"):
        load_task_data(make_task([("a", "b"), ("c", "d")], kind="fake"))


def test_impossible_val_fraction():
    with pytest.raises(UserError, match="val-fraction"):
        load_task_data(get_task("fashion-mini"), val_fraction=1.5)
