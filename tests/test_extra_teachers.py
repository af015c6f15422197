"""`--extra-teacher`: a trained model (a first round's label-free student) teaches a second
round beside the task's teachers, or alone; recorded so a resume finds it; bad paths and
class lists are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import typer

from amalgam.cli import train_cli
from amalgam.cli.config_file import default_map_for
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.methods import MethodOptions
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.runs.settings import read_settings
from amalgam.distill.teachers.extra import resolve_extra_teachers, with_extra_teachers
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.errors import UserError
from amalgam.harness.compare_report import markdown
from amalgam.models.checkpoint import load_model
from amalgam.models.model_input import model_input_for
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.workflows.compare import run_compare
from tests.helpers.front_ends import TINY, assert_one_line_error, run_in_process

# The extra teacher's logits come out of the ensemble exactly as the model computes them on its
# own, up to the kernels chosen for a batch of another shape: within this of each other.
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def first_round(trained_home: Path):
    """A label-free student of the tiny task (1 epoch): what a second round learns from."""
    data = load_task_data(get_task("fashion-mini"), train_per_class=12)
    settings = tiny_settings()
    run_dir = distil(settings, out_dir=trained_home / "runs" / "round1", root=trained_home, data=data).run_dir
    return trained_home, data, run_dir


def tiny_settings(extra: tuple[str, ...] = (), only: bool = False) -> DistilSettings:
    return DistilSettings(
        task="fashion-mini", student="mobilenetv3_small", method="fitnet+amalgam-kd",
        method_options=MethodOptions(class_prior="uniform"),
        train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu", labels="none"),
        img_size=32, train_per_class=12, extra_teachers=extra, extra_teachers_only=only,
    )


def test_the_first_rounds_student_teaches_the_second_alone_and_a_resume_finds_it(first_round):
    home, data, round1 = first_round
    extra = resolve_extra_teachers([str(round1)], only=True)
    assert extra == (str((round1 / "best").resolve()),)
    result = distil(tiny_settings(extra, only=True), out_dir=home / "runs" / "round2", root=home, data=data)
    config = json.loads((result.run_dir / "config.json").read_text())
    classes = list(get_task("fashion-mini").classes)
    assert config["roster"] == {"extra_1": classes}
    assert config["extra_teachers"] == list(extra) and config["extra_teachers_only"] is True
    resumed = read_settings(result.run_dir)
    assert (resumed.extra_teachers, resumed.extra_teachers_only) == (extra, True)
    assert resumed.task_spec() == tiny_settings(extra, only=True).task_spec()
    # its config.json, given as --config, sets the same flags (a re-run of the second round)
    train_command = typer.main.get_command(train_cli.app)
    defaults = default_map_for(train_command, config, "config.json")
    assert defaults["extra_teachers"] == list(extra) and defaults["extra_teachers_only"] is True
    with pytest.raises(UserError, match="extra_teachers must be a list of quoted text"):
        default_map_for(train_command, {"extra_teachers": str(round1)}, "bad.toml")
    # the teacher it learned from is the first round's student: the same logits on the same images
    ensemble = load_ensemble(tiny_settings(extra, only=True).task_spec(), torch.device("cpu"), home)
    student, card = load_model(round1 / "best", classes)
    view = to_unit_float(data.train.images[:8], "cpu")
    with torch.no_grad():
        expected = student(model_input_for(card)(view))
    torch.testing.assert_close(ensemble(view)[:, 0], expected, rtol=0, atol=LOGIT_TOLERANCE)


def test_an_extra_teacher_joins_the_tasks_teachers(first_round):
    home, _, round1 = first_round
    task = get_task("fashion-mini")
    spec = with_extra_teachers(task, [str(round1 / "best.json")])
    assert spec.teachers[:-1] == task.teachers
    assert spec.teachers[-1].name == "extra_1" and spec.teachers[-1].classes == task.classes
    assert spec.teachers[-1].checkpoint == str((round1 / "best").resolve())
    assert spec.roster().coverage.shape == (len(task.teachers) + 1, len(task.classes))
    teacher = home / "checkpoints" / "fashion-mini" / "teacher_2"  # a partial model also teaches
    partial = with_extra_teachers(task, [str(teacher)])
    assert partial.teachers[-1].classes == task.teachers[1].classes
    with pytest.raises(UserError, match=r"--extra-teacher-only: no extra teacher knows \['T-shirt/top'"):
        tiny_settings((str(teacher),), only=True).task_spec()


def test_bad_extra_teachers_are_one_line_errors(first_round, tmp_path: Path):
    home, _, round1 = first_round
    missing = run_in_process("train.py", [*TINY, "--labels", "none", "--method", "amalgam-kd",
                                          "--extra-teacher", str(tmp_path / "nowhere")], home)
    assert_one_line_error(missing, "--extra-teacher", "nowhere")
    alien = tmp_path / "alien"
    for suffix in (".safetensors", ".json"):
        shutil.copy(round1 / f"best{suffix}", alien.with_suffix(suffix))
    card = json.loads(alien.with_suffix(".json").read_text())
    card["classes"][0] = "Zebra"
    alien.with_suffix(".json").write_text(json.dumps(card))
    runs_before = sorted((home / "runs").iterdir())
    wrong = run_in_process("train.py", [*TINY, "--labels", "none", "--method", "amalgam-kd",
                                        "--extra-teacher", str(alien)], home)
    assert_one_line_error(wrong, "--extra-teacher", "Zebra")
    assert sorted((home / "runs").iterdir()) == runs_before  # nothing written
    with pytest.raises(UserError, match="--extra-teacher-only needs"):
        resolve_extra_teachers([], only=True)
    alien.with_suffix(".safetensors").unlink()
    with pytest.raises(UserError, match="alien.safetensors is missing"):
        resolve_extra_teachers([str(alien)])
    unused = run_in_process("train.py", [*TINY, "--method", "ce", "--epochs", "1",
                                         "--extra-teacher", str(round1), "--out", str(tmp_path / "ce")], home)
    assert unused.returncode == 0, unused.stderr
    assert "method ce reads no teacher; --extra-teacher is not used" in unused.stdout + unused.stderr
    rosters = run_in_process("train.py", ["compare", *TINY, "--task", "fashion-mini", "--rosters", "1",
                                          "--extra-teacher", str(round1)], home)
    assert_one_line_error(rosters, "--extra-teacher", "--rosters")


def test_compare_runs_every_arm_with_the_extra_teacher_and_records_it(first_round, tmp_path: Path):
    home, _, round1 = first_round
    extra = resolve_extra_teachers([str(round1)])
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")
    report = run_compare("fashion-mini", ["amalgam-kd:none"], 1, "mobilenetv3_small", MethodOptions(), config,
                         32, 12, None, root=home, out_dir=tmp_path / "report", extra_teachers=extra)
    assert report["extra_teachers"] == list(extra) and "amalgam-kd:none" in report["methods"]
    assert list(report["roster"]) == ["teacher_1", "teacher_2", "teacher_3", "extra_1"]
    assert "extra_1" in report["teachers_own_classes_accuracy"]
    text = (tmp_path / "report" / "compare.md").read_text()
    assert f"(`--extra-teacher`): extra_1 = `{extra[0]}`; they taught beside the task's teachers" in text
    assert "they taught alone (`--extra-teacher-only`)" in markdown({**report, "extra_teachers_only": True})
    assert "Extra teachers" not in markdown({**report, "extra_teachers": []})
    (run_config,) = (tmp_path / "report" / "runs").glob("*/*/config.json")
    assert json.loads(run_config.read_text())["extra_teachers"] == list(extra)
