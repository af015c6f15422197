"""Each graded student keeps its reports in its own folder; latest.json names the newest;
nothing the app did not write is ever written into or replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.harness.evaluate import LoadedStudent
from amalgam.harness.grading import report_student
from amalgam.harness.report_dirs import LATEST_FILE, claim_report_dir, latest_report_dir, report_name
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

CPU = torch.device("cpu")
CLASSES = ("a", "b", "c")
SIZE = 8
REPORTS = {"results.json", "sample_predictions.png", "confusion_matrix.png", "reliability.png"}


def tiny_data() -> TaskData:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(12) % len(CLASSES)
    images = torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    split = ImageSet(images, labels)
    teachers = (TeacherSpec("t1", ("a", "b")), TeacherSpec("t2", ("b", "c")))
    spec = TaskSpec("tiny", CLASSES, teachers, DataSpec("none"), img_size=SIZE)
    return TaskData(spec, split, split, split, (0.5,) * 3, (0.25,) * 3)


def student(path: Path, seed: int) -> LoadedStudent:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, len(CLASSES))).eval()
    return LoadedStudent(model, ModelInput(SIZE, (0.5,) * 3, (0.25,) * 3), path, 0)


def run_folder(root: Path, name: str) -> Path:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_folder_names_say_which_student(tmp_path: Path):
    run = run_folder(tmp_path, "20261125-081500_task_TaskB_kd")
    assert report_name(run / "best") == "20261125-081500_task_TaskB_kd"
    assert report_name(run / "last") == "20261125-081500_task_TaskB_kd-last"
    assert report_name(run / "student.onnx") == "20261125-081500_task_TaskB_kd-student"
    seed_file = tmp_path / "best_models/TaskA/student_model_epoch57_acc81.27.pth"
    assert report_name(seed_file) == "student_model_epoch57_acc81.27"
    assert report_name(tmp_path / "we ird:name.pt") == "we_ird_name"


@pytest.mark.slow
def test_two_students_keep_their_reports_and_latest_names_the_newest(tmp_path: Path):
    data, task_root = tiny_data(), tmp_path / "evaluation" / "tiny"
    first_path = run_folder(tmp_path, "run_one") / "best"
    second_path = run_folder(tmp_path, "run_two") / "best"

    first, first_dir = report_student(student(first_path, 1), data, task_root, CPU)
    before = {p.name: p.read_bytes() for p in first_dir.iterdir()}
    second, second_dir = report_student(student(second_path, 2), data, task_root, CPU)

    assert (first_dir.name, second_dir.name) == ("run_one", "run_two")
    assert set(before) == REPORTS and {p.name for p in second_dir.iterdir()} == REPORTS
    assert {p.name: p.read_bytes() for p in first_dir.iterdir()} == before  # untouched
    assert latest_report_dir(task_root) == second_dir
    pointer = json.loads((task_root / LATEST_FILE).read_text())
    assert pointer["model_path"] == str(second_path) and pointer["results"] == "run_two/results.json"
    assert json.loads((second_dir / "results.json").read_text())["model_path"] == str(second_path)

    # grading the first student again refreshes its own folder and moves the pointer back
    _, again = report_student(student(first_path, 1), data, task_root, CPU)
    assert again == first_dir and latest_report_dir(task_root) == first_dir
    assert sorted(p.name for p in task_root.iterdir()) == [LATEST_FILE, "run_one", "run_two"]


@pytest.mark.slow
def test_a_folder_the_app_did_not_write_is_left_alone(tmp_path: Path):
    task_root = tmp_path / "evaluation" / "tiny"
    path = run_folder(tmp_path, "mine") / "best"
    theirs = task_root / "mine"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("keep me")
    (theirs / "results.json").write_text('{"model_path": "elsewhere"}')
    # a folder with another student's results.json is not this student's either
    other = task_root / "mine-2"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"model_path": str(tmp_path / "other")}))

    _, report_dir = report_student(student(path, 1), tiny_data(), task_root, CPU)

    assert report_dir.name == "mine-3"
    assert (theirs / "notes.txt").read_text() == "keep me"
    assert json.loads((theirs / "results.json").read_text()) == {"model_path": "elsewhere"}
    assert json.loads((other / "results.json").read_text())["model_path"] == str(tmp_path / "other")


def test_a_foreign_latest_json_stops_before_anything_is_written(tmp_path: Path):
    task_root = tmp_path / "evaluation" / "tiny"
    task_root.mkdir(parents=True)
    (task_root / LATEST_FILE).write_text('{"mine": true}')
    with pytest.raises(UserError, match="not written by amalgam"):
        claim_report_dir(task_root, tmp_path / "student")
    assert [p.name for p in task_root.iterdir()] == [LATEST_FILE]
    assert (task_root / LATEST_FILE).read_text() == '{"mine": true}'
