"""User-defined tasks: task.toml parsing, both data kinds, and every command run on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amalgam.cli.tasks_cli import class_overlaps
from amalgam.errors import UserError
from amalgam.harness.report_dirs import latest_report_dir
from amalgam.tasks.builtin import get_task, load_task_toml
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.readers import read_raw_splits
from amalgam.tasks.toml_task import load_task_file
from tests.helpers.front_ends import assert_one_line_error, run_in_process
from tests.helpers.task_files import FOLDER_TOML, PTH_TOML, SHAPES, write_folder_task, write_pth_task

FAST = ["--img-size", "32", "--batch-size", "8", "--quiet", "--device", "cpu"]
STUDENT = ["--epochs", "1", "--student", "mobilenetv3_small", *FAST]


# --- in process: parsing and reading --------------------------------------------------------


def test_folder_task_parses_and_reads(tmp_path: Path):
    spec = get_task(str(write_folder_task(tmp_path)))
    assert spec.name == "shapes" and spec.classes == SHAPES and spec.img_size == 16
    assert spec.student_input_size == 56  # no student_img_size: small images are upsampled to 56 px
    assert [t.checkpoint for t in spec.teachers] == [str(tmp_path / "ckpt" / n) for n in ("round", "angular")]
    raw = read_raw_splits(spec, None)
    assert raw["train"].images.shape == (3 * 7, 3, 16, 16)  # 6 colour + 1 grayscale per class
    assert torch.bincount(raw["test"].labels).tolist() == [4, 4, 4]
    assert int(raw["train"].images[raw["train"].labels == 2][:6, 2].float().mean()) == 255


def test_student_img_size_is_the_students_default_input(tmp_path: Path):
    path = write_folder_task(tmp_path)
    path.write_text(path.read_text().replace("img_size = 16", "img_size = 16\nstudent_img_size = 24", 1))
    spec = load_task_file(path)
    assert spec.img_size == 16 and spec.student_input_size == 24


def test_pth_task_maps_original_labels_and_counts_test_once(tmp_path: Path):
    spec = load_task_file(write_pth_task(tmp_path))
    assert [t.format for t in spec.teachers] == ["cas771", "cas771"]  # "seed": the old spelling
    assert [t.arch for t in spec.teachers] == ["seed-cnn", "seed-cnn"]
    data = load_task_data(spec)
    raw = read_raw_splits(spec, None)
    assert torch.bincount(raw["train"].labels).tolist() == [12, 6, 6]  # hyena from both teachers
    assert torch.bincount(raw["test"].labels).tolist() == [3, 3, 3]  # hyena once, from savanna
    assert set(raw["test"].images[raw["test"].labels == 0][:, 0, 0, 0].tolist()) == {1}
    assert len(data.train) + len(data.val) == 24


def test_global_labels_need_no_table(tmp_path: Path):
    path = write_pth_task(tmp_path)
    text = path.read_text().split("[data.original_labels]")[0]
    path.write_text(text)
    with pytest.raises(UserError, match="label 34 is not a class index"):
        read_raw_splits(load_task_file(path), None)
    for name in ("train_1", "val_1", "train_2", "val_2"):
        payload = torch.load(tmp_path / "pth" / f"{name}.pth")
        payload["labels"] = torch.tensor([{34: 0, 80: 1, 201: 2}[int(v)] for v in payload["labels"]])
        torch.save(payload, tmp_path / "pth" / f"{name}.pth")
    assert len(read_raw_splits(load_task_file(path), None)["test"]) == 9


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('img_size = 16', 'img_size = 16\nclases = ["x"]', "clases"),
        ('img_size = 16', 'img_size = "big"', "img_size"),
        ('img_size = 16', 'img_size = 16\nstudent_img_size = 4', "student_img_size"),
        ('name = "shapes"', 'name = "A"', "name"),
        ('name = "shapes"', 'name = "TaskB"', "name"),
        ('name = "shapes"', 'name = "../escape"', "name"),
        ('classes = ["circle", "square"]\n', '', "classes"),
        ('arch = "cnn-small"', 'arch = "no-such-net"', "arch"),
        ('arch = "cnn-small"', 'format = "onnx"', "format"),
        ('checkpoint = "ckpt/round"', 'format = "seed"', "checkpoint"),
        ('kind = "folder"', 'kind = "csv"', "kind"),
        ('test = "images/test"', '', "test"),
        ('img_size = 16', 'img_size = 16\nmean = [0.5, 0.5]\nstd = [0.2, 0.2, 0.2]', "mean"),
    ],
)
def test_bad_toml_names_file_and_key(tmp_path: Path, old: str, new: str, key: str):
    path = tmp_path / "bad.toml"
    assert old in FOLDER_TOML
    path.write_text(FOLDER_TOML.replace(old, new, 1))
    with pytest.raises(UserError) as caught:
        load_task_toml(path)  # as --task and `tasks --check` read it
    assert "bad.toml" in str(caught.value) and f"'{key}'" in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('hunters = { train = "train_2.pth", test = "val_2.pth" }', "", "'files.hunters'"),
        ('lynx = 201', '', "'original_labels'"),
        ('lynx = 201', 'lynx = 201\ntiger = 3', "'original_labels.tiger'"),
        ('classes = ["hyena", "lynx"]', 'classes = ["hyena", "tiger"]', "tiger"),
    ],
)
def test_bad_pth_toml_names_file_and_key(tmp_path: Path, old: str, new: str, needle: str):
    path = tmp_path / "bad.toml"
    assert old in PTH_TOML
    path.write_text(PTH_TOML.replace(old, new, 1))
    with pytest.raises(UserError) as caught:
        load_task_file(path)
    assert "bad.toml" in str(caught.value) and needle in str(caught.value)


def test_folder_problems_are_user_errors(tmp_path: Path):
    spec = load_task_file(write_folder_task(tmp_path))
    (tmp_path / "images/train/triangle").mkdir()
    with pytest.raises(UserError, match="triangle"):
        read_raw_splits(spec, None)
    (tmp_path / "images/train/triangle").rmdir()
    (tmp_path / "images/train/cross/0.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*0.png"):
        read_raw_splits(spec, None)


# --- as a user runs it ----------------------------------------------------------------------


@pytest.mark.slow
def test_every_command_runs_on_a_folder_task(tmp_path: Path):
    home = tmp_path / "home"
    toml = write_folder_task(tmp_path)

    listed = run_in_process("train.py", ["tasks"], home)
    assert listed.returncode == 0, listed.stderr
    assert "fashion-mini" in listed.stdout and "CAS771 Task B" in listed.stdout

    checked = run_in_process("train.py", ["tasks", "--check", str(toml)], home)
    assert checked.returncode == 0, checked.stderr
    assert "shared class 'square': round, angular" in checked.stdout

    # "train me": teachers without a `checkpoint` line are trained into checkpoints/<task>/
    toml.write_text(toml.read_text().replace('checkpoint = "ckpt/round"\n', "")
                    .replace('checkpoint = "ckpt/angular"\n', ""))
    teachers = run_in_process("train.py", ["teachers", "--task", str(toml), "--epochs", "1", *FAST], home)
    assert teachers.returncode == 0, teachers.stderr
    for name in ("round", "angular"):
        card = json.loads((home / "checkpoints" / "shapes" / f"{name}.json").read_text())
        assert card["task"] == "shapes" and (home / "checkpoints" / "shapes" / f"{name}.safetensors").exists()
    assert not (tmp_path / "ckpt").exists()

    run_dir = home / "runs" / "shapes_kd"
    trained = run_in_process("train.py", [*STUDENT, "--task", str(toml), "--out", str(run_dir)], home)
    assert trained.returncode == 0, trained.stderr
    assert (run_dir / "best.safetensors").exists() and (run_dir / "config.json").exists()

    graded = run_in_process("evaluation.py", ["--task", str(toml), "--checkpoint", str(run_dir / "best"),
                                              "--out", str(home / "evaluation"), "--quiet"], home)
    assert graded.returncode == 0, graded.stderr
    results = json.loads((latest_report_dir(home / "evaluation" / "shapes") / "results.json").read_text())
    assert results["task"] == "shapes" and set(results["per_class_accuracy"]) == set(SHAPES)
    assert results["n_samples"] == 12
    assert not (Path(__file__).resolve().parent.parent / "checkpoints" / "shapes").exists()


@pytest.mark.slow
def test_distil_and_grade_a_pth_task_with_reference_app_teachers(tmp_path: Path):
    home = tmp_path / "home"
    toml = write_pth_task(tmp_path)

    assert class_overlaps(load_task_file(toml)) == {"hyena": ["savanna", "hunters"]}

    run_dir = home / "runs" / "animals_kd"
    trained = run_in_process("train.py", [*STUDENT, "--task", str(toml), "--out", str(run_dir)], home)
    assert trained.returncode == 0, trained.stderr

    graded = run_in_process("evaluation.py", ["--task", str(toml), "--checkpoint", str(run_dir / "best"),
                                              "--out", str(home / "evaluation"), "--quiet"], home)
    assert graded.returncode == 0, graded.stderr
    results = json.loads((latest_report_dir(home / "evaluation" / "animals") / "results.json").read_text())
    assert results["n_samples"] == 9 and set(results["per_class_accuracy"]) == {"hyena", "zebra", "lynx"}


def test_bad_toml_on_the_command_line_is_one_error_line(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text(FOLDER_TOML.replace('kind = "folder"', 'kind = "csv"'))
    result = run_in_process("train.py", ["tasks", "--check", str(path)], tmp_path / "home")
    assert result.returncode == 2
    assert_one_line_error(result, "broken.toml", "'kind'")

    path.write_text("name = [unclosed")
    result = run_in_process("evaluation.py", ["--task", str(path), "--quiet"], tmp_path / "home")
    assert result.returncode == 2
    assert_one_line_error(result, "broken.toml", "not valid TOML")
