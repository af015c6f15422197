"""Training-side mistakes and damage: one line each, and nothing the app did not write is replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.runs.run import DistilSettings, distil, resume
from amalgam.distill.teachers.training import train_all_teachers
from amalgam.errors import UserError
from amalgam.harness.evaluate import calibrated_test_scores
from amalgam.models.metrics import NonFiniteLogits, fit_temperature
from amalgam.models.model_input import ModelInput
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.workflows.pipeline import run_pipeline
from tests.helpers.front_ends import assert_one_line_error, run_in_process
from tests.helpers.task_files import write_folder_task

CE = DistilSettings(
    task="fashion-mini", student="mobilenetv3_small", method="ce",
    train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"),
    img_size=32, train_per_class=4,
)
TEACHER_TRAINING = TrainConfig(epochs=1, batch_size=8, quiet=True, device="cpu")


def message_of(caught: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(caught.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished 1-epoch `ce` run (no teachers needed); tests damage copies of it."""
    root = tmp_path_factory.mktemp("ce_home")
    return distil(CE, out_dir=root / "runs" / "done", root=root).run_dir


def copy_run(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where / "copy"))


# --- 1. `train.py teachers` writes only under checkpoints/<task>/ ---------------------------


def shapes_task(tmp_path: Path, teachers: str) -> Path:
    """The tiny folder task of test_task_toml with our own [[teacher]] tables."""
    toml = write_folder_task(tmp_path / "task")
    text = toml.read_text()
    head, tail = text.split("[[teacher]]", 1)[0], text[text.index("[data]"):]
    toml.write_text(head + teachers + tail)
    return toml


OUTSIDE = """
[[teacher]]
name = "round"
classes = ["circle", "square"]
checkpoint = "../outside/round"

[[teacher]]
name = "angular"
classes = ["square", "cross"]

"""


def test_teachers_never_write_to_a_checkpoint_the_task_names(tmp_path: Path):
    toml = shapes_task(tmp_path, OUTSIDE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "round.json").write_text('{"mine": "a file the app did not write"}')
    home = tmp_path / "home"
    result = run_in_process(
        "train.py", ["teachers", "--task", str(toml), "--epochs", "1", "--img-size", "16",
                     "--batch-size", "8", "--quiet", "--device", "cpu"], home,
    )
    assert_one_line_error(result, "round", "does not exist", "checkpoints")
    assert (outside / "round.json").read_text() == '{"mine": "a file the app did not write"}'
    assert sorted(p.name for p in outside.iterdir()) == ["round.json"]
    assert not (home / "checkpoints").exists()  # refused before any teacher trained


def test_teachers_train_into_checkpoints_and_only_read_named_ones(tmp_path: Path):
    home = tmp_path / "home"
    train_me = OUTSIDE.replace('checkpoint = "../outside/round"\n', "")
    toml = shapes_task(tmp_path, train_me)
    train_all_teachers(load_task_data(get_task(str(toml))), TEACHER_TRAINING, 16, root=home)
    trained = home / "checkpoints" / "shapes"
    released = tmp_path / "released"  # the round teacher becomes a released one the task names
    released.mkdir()
    for suffix in (".json", ".safetensors"):
        (trained / f"round{suffix}").rename(released / f"round{suffix}")
    before = {p.name: p.read_bytes() for p in released.iterdir()}
    named = OUTSIDE.replace("../outside/round", "../released/round")
    toml.write_text(toml.read_text().replace(train_me, named))

    reports = train_all_teachers(load_task_data(get_task(str(toml))), TEACHER_TRAINING, 16, root=home)
    assert [r.name for r in reports] == ["angular"]
    assert reports[0].checkpoint == trained / "angular"
    assert {p.name: p.read_bytes() for p in released.iterdir()} == before
    assert not (trained / "round.json").exists()


def test_teachers_never_replace_a_foreign_file_in_checkpoints(tmp_path: Path):
    home = tmp_path / "home"
    toml = shapes_task(tmp_path, OUTSIDE.replace('checkpoint = "../outside/round"\n', ""))
    folder = home / "checkpoints" / "shapes"
    folder.mkdir(parents=True)
    (folder / "angular.json").write_text("my notes, not a card")
    with pytest.raises(UserError) as caught:
        train_all_teachers(load_task_data(get_task(str(toml))), TEACHER_TRAINING, 16, root=home)
    message_of(caught, "angular.json", "not an amalgam checkpoint card")
    assert (folder / "angular.json").read_text() == "my notes, not a card"
    assert sorted(p.name for p in folder.iterdir()) == ["angular.json"]  # round was not trained either


# --- 4. --resume on damaged or foreign folders ----------------------------------------------


class Payload:
    """Pickles to a call of `exec`: what a hostile last_state.pt could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_resume_refuses_a_state_file_holding_code(finished_run: Path, tmp_path: Path):
    run_dir = copy_run(finished_run, tmp_path)
    marker = tmp_path / "code_ran"
    torch.save({"student": Payload(marker), "optimizer": {}, "epoch": 0}, run_dir / "last_state.pt")
    config_before = (run_dir / "config.json").read_text()
    with pytest.raises(UserError) as caught:
        resume(run_dir, epochs=2)
    message_of(caught, "last_state.pt", "was not loaded", "last.safetensors")
    assert not marker.exists()
    assert (run_dir / "config.json").read_text() == config_before  # --epochs 2 was not recorded


def test_resume_refuses_a_truncated_state_file(finished_run: Path, tmp_path: Path):
    run_dir = copy_run(finished_run, tmp_path)
    state = (run_dir / "last_state.pt").read_bytes()
    (run_dir / "last_state.pt").write_bytes(state[: len(state) // 2])
    result = run_in_process("train.py", ["--resume", str(run_dir), "--quiet"], tmp_path / "home")
    assert_one_line_error(result, "damaged", "was not loaded", "last.safetensors")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(UserError) as caught:
        resume(tmp_path / "somewhere")
    message_of(caught, "not a run folder", "config.json")


def test_resume_of_a_run_that_never_saved_state(finished_run: Path, tmp_path: Path):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "last_state.pt").unlink()
    with pytest.raises(UserError) as caught:
        resume(run_dir)
    message_of(caught, "before saving any state", "start a new run")


# --- 5. a student with NaN weights ----------------------------------------------------------


def test_temperature_fit_refuses_non_finite_logits():
    logits = torch.tensor([[1.0, float("nan")], [0.5, 0.2]])
    with pytest.raises(NonFiniteLogits):
        fit_temperature(logits, torch.tensor([0, 1]))


def test_scoring_a_student_with_non_finite_logits_is_one_line():
    data = load_task_data(get_task("fashion-mini"), train_per_class=4)
    model_input = ModelInput(32, data.mean, data.std)

    def broken(x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), data.spec.num_classes), float("nan"))

    with pytest.raises(UserError) as caught:
        calibrated_test_scores(broken, model_input, data, torch.device("cpu"))
    message_of(caught, "not finite", "validation", "damaged")


def test_evaluation_of_a_nan_checkpoint_is_one_line(finished_run: Path, tmp_path: Path):
    weights = load_file(str(finished_run / "best.safetensors"))
    damaged = {k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()}
    save_file(damaged, str(tmp_path / "best.safetensors"))
    shutil.copy(finished_run / "best.json", tmp_path / "best.json")
    args = ["--task", "fashion-mini", "--checkpoint", str(tmp_path / "best"),
            "--out", str(tmp_path / "reports")]
    result = run_in_process("evaluation.py", [*args, "--quiet"], tmp_path)
    assert_one_line_error(result, "not finite", "damaged")
    assert not (tmp_path / "reports" / "fashion-mini" / "results.json").exists()


# --- 6. flags named as the user typed them, checked before any work --------------------------


def pipeline(root: Path, **changes):
    options = dict(task="fashion-mini", student="mobilenetv3_small", method="kd", epochs=1,
                   teacher_epochs=1, img_size=32, seed=1, train_per_class=4, data_dir=None,
                   device="cpu", quiet=True, root=root)
    return run_pipeline(**{**options, **changes})


@pytest.mark.parametrize(
    ("changes", "flag"),
    [({"teacher_epochs": 0}, "--teacher-epochs"), ({"epochs": 0}, "--epochs"),
     ({"method": "magic"}, "unknown method")],
)
def test_pipeline_checks_its_flags_before_training_teachers(tmp_path: Path, changes: dict, flag: str):
    with pytest.raises(UserError) as caught:
        pipeline(tmp_path, **changes)
    message = message_of(caught, flag)
    if flag == "--epochs":
        assert "--teacher-epochs" not in message
    assert not (tmp_path / "checkpoints").exists()


def test_pipeline_teacher_epochs_zero_names_its_flag(tmp_path: Path):
    args = ["pipeline", "--task", "fashion-mini", "--teacher-epochs", "0"]
    result = run_in_process("train.py", args, tmp_path)
    assert_one_line_error(result, "--teacher-epochs")


def test_compare_out_naming_a_file_is_one_line(tmp_path: Path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    result = run_in_process("train.py", ["compare", "--task", "fashion-mini", "--methods", "ce",
                                        "--out", str(target)], tmp_path / "home")
    assert_one_line_error(result, "--out", "is a file")
    assert target.read_text() == "keep me"


def test_compare_refuses_a_foreign_report_folder(tmp_path: Path):
    from amalgam.workflows.compare import check_report_dir

    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.md").write_text("draft")
    with pytest.raises(UserError) as caught:
        check_report_dir(folder)
    message_of(caught, "not empty", "holds no comparison")
