"""The CAS771 `.pth` reader on tiny files written in the exact released layouts."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import pytest
import torch

from amalgam.errors import UserError
from amalgam.tasks.builtin import TASK_A_CLASSES, TASK_A_FILES, TASK_B_CLASSES, get_task
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.readers import read_raw_splits
from tests.helpers.task_files import (
    SIZE,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    fake_images,
    write_task_a,
    write_task_b,
)


def first_pixels(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[:, 0, 0, 0].long(), images[:, 1, 0, 0].long()  # (teacher, original label)


def check_labels_match_table(split, task: str) -> None:
    table = [label for _, label in (TASK_A_CLASSES if task == "A" else TASK_B_CLASSES)]
    _, original = first_pixels(split.images)
    assert torch.equal(torch.tensor(table)[split.labels], original)


def test_task_a_reads_every_layout(tmp_path: Path):
    write_task_a(tmp_path)
    spec = get_task("A")
    raw = read_raw_splits(spec, str(tmp_path))

    assert raw["train"].images.shape == (15 * TRAIN_PER_CLASS, 3, SIZE, SIZE)
    assert raw["train"].images.dtype == torch.uint8 and raw["train"].labels.dtype == torch.int64
    assert raw["test"].images.shape == (15 * TEST_PER_CLASS, 3, SIZE, SIZE)
    assert torch.bincount(raw["test"].labels, minlength=15).tolist() == [TEST_PER_CLASS] * 15
    check_labels_match_table(raw["train"], "A")
    check_labels_match_table(raw["test"], "A")
    # CHW and HWC files decode to the same picture: the teacher-2 test file was stored as CHW
    teacher, _ = first_pixels(raw["test"].images)
    assert set(teacher.tolist()) == {1, 2, 3}

    data = load_task_data(spec, data_dir=str(tmp_path))
    assert len(data.train) + len(data.val) == 15 * TRAIN_PER_CLASS
    assert len(data.mean) == 3 and len(data.test) == 15 * TEST_PER_CLASS


@pytest.mark.parametrize("data_dir", ["project", "data", "task"])
def test_data_dir_may_name_project_data_or_task_folder(tmp_path: Path, data_dir: str):
    folder = write_task_b(tmp_path)
    given = {"project": tmp_path, "data": tmp_path / "data", "task": folder}[data_dir]
    assert len(read_raw_splits(get_task("B"), str(given))["test"]) == 12 * TEST_PER_CLASS


def test_task_b_shared_classes_train_on_all_and_test_once(tmp_path: Path):
    write_task_b(tmp_path)
    spec = get_task("B")
    raw = read_raw_splits(spec, str(tmp_path))
    train, test = raw["train"], raw["test"]
    check_labels_match_table(train, "B")
    check_labels_match_table(test, "B")
    index = {name: i for i, name in enumerate(spec.classes)}

    train_teacher, _ = first_pixels(train.images)
    hyena = train.labels == index["hyena"]  # teachers 1 and 2
    assert int(hyena.sum()) == 2 * TRAIN_PER_CLASS
    assert set(train_teacher[hyena].tolist()) == {1, 2}
    assert len(train) == 15 * TRAIN_PER_CLASS  # 3 teachers x 5 classes, overlaps included

    assert torch.bincount(test.labels, minlength=12).tolist() == [TEST_PER_CLASS] * 12
    test_teacher, _ = first_pixels(test.images)
    for name, first_teacher in (("hyena", 1), ("Chihuahua", 1), ("African_hunting_dog", 2), ("zebra", 2),
                                ("collie", 3)):
        assert set(test_teacher[test.labels == index[name]].tolist()) == {first_teacher}, name


def test_unknown_label_names_file_and_label(tmp_path: Path):
    write_task_b(tmp_path, bad_label=999)
    with pytest.raises(UserError) as caught:
        read_raw_splits(get_task("B"), str(tmp_path))
    message = str(caught.value)
    assert "train_dataB_model_2.pth" in message and "999" in message


def test_missing_file_says_how_to_fetch(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        read_raw_splits(get_task("A"), str(tmp_path))
    message = str(caught.value)
    assert "model1_train_supercls.pth" in message and "python evaluation.py fetch" in message


def test_corrupt_file_is_a_user_error(tmp_path: Path):
    folder = write_task_b(tmp_path)
    (folder / "val_dataB_model_3.pth").write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(UserError, match="val_dataB_model_3.pth is not a PyTorch file"):
        read_raw_splits(get_task("B"), str(tmp_path))


class _Exploit:
    """Unpickling this would run code; the reader must refuse it without running it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickled_code_is_refused_not_run(tmp_path: Path):
    folder = write_task_b(tmp_path)
    marker = tmp_path / "pwned.txt"
    images, labels = fake_images([24, 34, 80, 135, 202], 2, 2, seed=0)
    torch.save({"data": torch.from_numpy(images), "labels": torch.from_numpy(labels), "x": _Exploit(marker)},
               folder / "val_dataB_model_2.pth")

    with pytest.raises(UserError) as caught:
        read_raw_splits(get_task("B"), str(tmp_path))

    message = str(caught.value)
    assert "holds code (builtins.exec)" in message and "val_dataB_model_2.pth" in message
    assert "was not loaded" in message
    assert not marker.exists()


def test_numpy_1_pickles_load_too(tmp_path: Path):
    """Files written by numpy 1 name `numpy.core.multiarray`; numpy 2 renamed it `numpy._core`."""
    folder = write_task_a(tmp_path)
    rel = TASK_A_FILES[0][1]
    payload = torch.load(folder / rel, weights_only=False)
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=False)
    old_style = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old_style
    (folder / rel).write_bytes(old_style)

    assert len(read_raw_splits(get_task("A"), str(tmp_path))["test"]) == 15 * TEST_PER_CLASS
