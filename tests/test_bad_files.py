"""Bad input files (pickled code, truncated, empty, wrongly encoded, bad cards): one-line UserErrors."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from amalgam.errors import UserError
from amalgam.models.cas771_format import Cas771TeacherCNN, load_cas771_student, load_cas771_teacher
from amalgam.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.builtin import get_task
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.readers import read_raw_splits, register_reader
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from amalgam.tasks.toml_task import load_task_file
from tests.helpers.front_ends import assert_one_line_error, run_in_process
from tests.helpers.task_files import write_pth_task, write_task_b

CLASSES = ("hyena", "zebra")


def one_line(caught: pytest.ExceptionInfo) -> str:
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# --- 1. a pickle that would run code ---------------------------------------------------------


class _RunsAShell:
    """Unpickling this runs `os.system`; the loaders must refuse it without running it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def _zip_pth(payload: object, path: Path) -> None:
    torch.save(payload, path)


def _legacy_pth(payload: object, path: Path) -> None:
    torch.save(payload, path, _use_new_zipfile_serialization=False)


def _plain_pickle(payload: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))  # STACK_GLOBAL


@pytest.mark.parametrize("write", [_zip_pth, _legacy_pth, _plain_pickle])
@pytest.mark.parametrize("load", [load_cas771_student, load_cas771_teacher])
def test_pickled_code_is_refused_plainly_and_never_runs(tmp_path: Path, write, load):
    marker = tmp_path / "FILE"
    path = tmp_path / "student_model_epoch12_acc80.00.pth"
    write({"backbone.fc.weight": torch.zeros(2, 3), "payload": _RunsAShell(marker)}, path)

    with pytest.raises(UserError) as caught:
        load(path, CLASSES)

    message = one_line(caught)
    assert not marker.exists()
    assert str(path) in message and "holds code" in message and "was not loaded" in message
    assert "system" in message  # names what it would have called, read from the opcodes
    assert "weights_only" not in message and "Re-running" not in message


def test_pickled_code_in_a_data_file_is_refused(tmp_path: Path):
    folder = write_task_b(tmp_path)
    marker = tmp_path / "FILE"
    torch.save({"data": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "labels": _RunsAShell(marker)},
               folder / "train_dataB_model_1.pth")
    with pytest.raises(UserError) as caught:
        read_raw_splits(get_task("B"), str(tmp_path))
    message = one_line(caught)
    assert "train_dataB_model_1.pth holds code" in message and "weights_only" not in message
    assert not marker.exists()


# --- 2. model cards --------------------------------------------------------------------------


@pytest.fixture
def teacher_stem(tmp_path: Path) -> Path:
    from amalgam.models.checkpoint import ModelCard

    card = ModelCard(kind="teacher", arch="cnn-small", classes=list(CLASSES), img_size=16,
                     mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "teacher_1", create_teacher("cnn-small", 2).state_dict(), card)


@pytest.mark.parametrize(("field", "value"), [
    ("img_size", -5), ("img_size", "56"), ("img_size", True), ("img_size", 2.5),
    ("mean", "abc"), ("mean", [0.5, 0.5]), ("mean", [0.5, "x", 0.5]), ("mean", [0.5, float("nan"), 0.5]),
    ("std", [0.2, 0.0, 0.2]), ("std", [0.2, -1, 0.2]),
    ("classes", []), ("classes", ["hyena", "hyena"]), ("classes", "hyena zebra"), ("classes", [1, 2]),
    ("arch", 5), ("arch", "no-such-network"), ("kind", "teach"), ("in_chans", 2), ("in_chans", "3"),
    ("task", 3), ("metrics", [1]), ("trained_on", "yesterday"), ("format", "amalgam-checkpoint/9"),
])
def test_every_card_field_is_checked(teacher_stem: Path, field: str, value: object):
    sidecar = teacher_stem.with_suffix(".json")
    card = json.loads(sidecar.read_text())
    card[field] = value
    sidecar.write_text(json.dumps(card))

    with pytest.raises(UserError) as caught:
        load_model(teacher_stem, CLASSES)

    message = one_line(caught)
    assert str(sidecar) in message and f"field '{field}' must be" in message


@pytest.mark.parametrize(("content", "needle"), [
    ("", "is empty"), ("[1, 2]", "not a model card"), ("{\"kind\": ", "is corrupt"),
])
def test_card_that_is_not_a_card(teacher_stem: Path, content: str, needle: str):
    teacher_stem.with_suffix(".json").write_text(content)
    with pytest.raises(UserError) as caught:
        read_checkpoint(teacher_stem)
    assert needle in one_line(caught)


def test_a_valid_card_still_loads(teacher_stem: Path):
    model, card = load_model(teacher_stem, CLASSES)
    assert card.img_size == 16 and card.classes == list(CLASSES)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 2)


# --- 3. task.toml encodings ------------------------------------------------------------------


def test_task_toml_with_a_latin1_byte_names_file_and_offset(tmp_path: Path):
    path = write_pth_task(tmp_path)
    text = path.read_text().replace('name = "animals"', 'name = "animals"\ndescription = "caf\u00e9"', 1)
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")

    with pytest.raises(UserError) as caught:
        load_task_file(path)

    message = one_line(caught)
    assert str(path) in message and f"offset {offset}" in message and "0xe9" in message
    assert "save it as UTF-8" in message


def test_task_toml_with_a_byte_order_mark_loads(tmp_path: Path):
    path = write_pth_task(tmp_path)
    plain = load_task_file(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_task_file(path) == plain


def test_task_toml_with_non_finite_statistics(tmp_path: Path):
    path = write_pth_task(tmp_path)
    path.write_text(path.read_text().replace("img_size = 16", "img_size = 16\nmean = [0.5, nan, 0.5]\n"
                                             "std = [0.2, 0.2, 0.2]", 1))
    with pytest.raises(UserError) as caught:
        load_task_file(path)
    assert "key 'mean'" in one_line(caught)


# --- 4 and 6. empty data files and classes with no training images ---------------------------


EMPTY_PAYLOADS = {
    "numpy": lambda: {"data": np.zeros((0, 16, 16, 3), np.uint8), "labels": np.zeros(0, np.int64)},
    "tensor": lambda: {"data": torch.zeros(0, 16, 16, 3, dtype=torch.uint8), "labels": torch.zeros(0)},
    "list": lambda: {"data": [], "labels": []},
}


@pytest.mark.parametrize("kind", sorted(EMPTY_PAYLOADS))
def test_empty_training_file_whose_class_is_nowhere_else(tmp_path: Path, kind: str):
    spec = load_task_file(write_pth_task(tmp_path))
    empty = tmp_path / "pth" / "train_2.pth"  # hunters: hyena (also savanna's) and lynx (only here)
    torch.save(EMPTY_PAYLOADS[kind](), empty)

    with pytest.raises(UserError) as caught:
        load_task_data(spec)

    message = one_line(caught)
    assert "['lynx']" in message and "no training images" in message
    assert f"{empty} (holds no images)" in message and "bytes" not in message


def test_empty_test_file_is_read_as_no_images(tmp_path: Path):
    spec = load_task_file(write_pth_task(tmp_path))
    torch.save(EMPTY_PAYLOADS["numpy"](), tmp_path / "pth" / "val_2.pth")
    raw = read_raw_splits(spec, None)
    assert torch.bincount(raw["test"].labels, minlength=3).tolist() == [3, 3, 0]


def test_training_file_missing_a_class(tmp_path: Path):
    folder = write_task_b(tmp_path)
    spec = get_task("B")
    first, second, third = spec.teachers
    lost = next(c for c in third.classes if c not in first.classes + second.classes)
    path = folder / "train_dataB_model_3.pth"
    raw = torch.load(path, weights_only=True)
    keep = raw["labels"] != spec.data.options["original_labels"][lost]
    torch.save({"data": raw["data"][keep], "labels": raw["labels"][keep]}, path)

    with pytest.raises(UserError) as caught:
        read_raw_splits(spec, str(tmp_path))

    message = one_line(caught)
    assert f"['{lost}']" in message and f"{path} (has none of them)" in message


def test_any_reader_with_a_class_without_training_images(tmp_path: Path):
    def reader(spec: TaskSpec, data_dir: str | None) -> dict[str, ImageSet]:
        images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
        return {"train": ImageSet(images, torch.tensor([0, 0, 1, 1])),
                "test": ImageSet(images, torch.tensor([0, 1, 2, 2]))}

    register_reader("test-no-class-2", reader)
    spec = TaskSpec("three", ("a", "b", "c"), (TeacherSpec("t", ("a", "b", "c")),),
                    DataSpec("test-no-class-2"))
    with pytest.raises(UserError, match=r"\['c'\] of task 'three' have no training images"):
        load_task_data(spec)


# --- 5. truncated, empty and foreign files ---------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_data_file(tmp_path: Path, legacy: bool):
    folder = write_task_b(tmp_path)
    path = folder / "train_dataB_model_2.pth"
    if legacy:
        _legacy_pth(torch.load(path, weights_only=True), path)
    _truncate(path)

    with pytest.raises(UserError) as caught:
        read_raw_splits(get_task("B"), str(tmp_path))

    message = one_line(caught)
    assert f"{path} is truncated or corrupt" in message and "download it again" in message
    assert "Errno" not in message


def test_truncated_reference_app_checkpoint(tmp_path: Path):
    path = tmp_path / "teacher.pth"
    torch.save(Cas771TeacherCNN(2).state_dict(), path)
    _truncate(path)
    with pytest.raises(UserError) as caught:
        load_cas771_teacher(path, CLASSES)
    message = one_line(caught)
    assert f"{path} is truncated or corrupt" in message and "Errno" not in message


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "is empty (0 bytes)"), (b"<!DOCTYPE html><html>quota exceeded</html>", "is not a PyTorch file"),
])
def test_empty_or_foreign_reference_app_checkpoint(tmp_path: Path, content: bytes, needle: str):
    path = tmp_path / "student.pth"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_cas771_student(path, CLASSES)
    assert f"{path} {needle}" in one_line(caught)


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_truncated_amalgam_checkpoint(teacher_stem: Path, cut: str):
    weights = teacher_stem.with_suffix(".safetensors")
    if cut == "half":
        _truncate(weights)
    else:
        weights.write_bytes(b"")
    with pytest.raises(UserError) as caught:
        load_model(teacher_stem, CLASSES)
    message = one_line(caught)
    expected = "is truncated or corrupt" if cut == "half" else "is empty (0 bytes)"
    assert f"{weights} {expected}" in message and "retrain it" in message


def test_reference_app_head_of_the_wrong_rank(tmp_path: Path):
    state = Cas771TeacherCNN(2).state_dict()
    state["classifier.3.weight"] = torch.zeros(())
    path = tmp_path / "teacher.pth"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="classifier weight of shape"):
        load_cas771_teacher(path, CLASSES)


def test_front_end_refuses_a_reference_app_checkpoint_holding_code(tmp_path: Path):
    write_task_b(tmp_path)
    marker = tmp_path / "FILE"
    checkpoint = tmp_path / "student_model_epoch12_acc80.00.pth"
    _zip_pth({"backbone.classifier.1.weight": torch.zeros(12, 1280), "x": _RunsAShell(marker)}, checkpoint)

    args = ["--task", "B", "--data-dir", str(tmp_path), "--checkpoint", str(checkpoint), "--format", "cas771"]
    result = run_in_process("evaluation.py", [*args, "--quiet"], tmp_path / "home")

    assert_one_line_error(result, "holds code", "was not loaded", checkpoint.name)
    assert "weights_only" not in result.stderr and not marker.exists()


def test_teachers_whose_names_differ_after_a_dot_keep_separate_files(tmp_path):
    """task.toml allows `v1.1` and `v1.2`; `with_suffix` once saved both as `v1.json`."""
    from amalgam.models.checkpoint import ModelCard

    for name, classes in (("v1.1", ["a", "b"]), ("v1.2", ["c", "d"])):
        card = ModelCard(kind="teacher", arch="cnn-small", classes=classes, img_size=8,
                         mean=[0.5] * 3, std=[0.25] * 3)
        save_checkpoint(tmp_path / name, {"w": torch.full((2,), float(len(name)))}, card)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "v1.1.json", "v1.1.safetensors", "v1.2.json", "v1.2.safetensors"]
    assert read_checkpoint(tmp_path / "v1.1")[1].classes == ["a", "b"]
    assert read_checkpoint(tmp_path / "v1.2.json")[1].classes == ["c", "d"]
