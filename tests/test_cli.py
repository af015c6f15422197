"""Each front-end command on the tiny embedded task, as a user runs it, and its bad inputs."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

import amalgam.cli.train_cli as train_cli
from amalgam.distill.methods import MethodOptions
from amalgam.errors import UserError
from amalgam.harness.report_dirs import latest_report_dir
from tests.helpers.front_ends import TINY, assert_one_line_error, run_front_end, run_in_process

STUDENT = ["--student", "mobilenetv3_small", "--epochs", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def distilled(trained_home: Path) -> Path:
    out = trained_home / "runs" / "cli_kd"
    result = run_front_end(
        "train.py", [*TINY, *STUDENT, "--temperature", "3", "--alpha", "0.5", "--out", str(out)], trained_home
    )
    assert result.returncode == 0, result.stderr
    assert "best epoch 1 (chosen on validation)" in result.stdout
    # the headline command means what it says: the default method reads both options
    assert "does not use" not in result.stdout + result.stderr
    assert json.loads((out / "config.json").read_text())["method_options"]["temperature"] == 3.0
    return out


def test_options_a_method_ignores_are_named(home_with_teachers: Path, tmp_path: Path):
    args = [*TINY, *STUDENT, "--method", "fitnet", "--temperature", "3", "--alpha", "0.5"]
    result = run_in_process("train.py", [*args, "--out", str(tmp_path / "fitnet")], home_with_teachers)
    assert result.returncode == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "method fitnet does not use --temperature, --alpha" in said


def test_options_a_method_reads_raise_no_warning(home_with_teachers: Path, tmp_path: Path):
    result = run_in_process("train.py", [*TINY, *STUDENT, "--method", "kd", "--temperature", "3",
                                         "--out", str(tmp_path / "kd")], home_with_teachers)
    assert result.returncode == 0, result.stderr
    assert "does not use" not in result.stdout + result.stderr


def test_teachers_command_saves_checkpoints_and_prints_accuracy(trained_home: Path):
    for k in (1, 2, 3):
        stem = trained_home / "checkpoints" / "fashion-mini" / f"teacher_{k}"
        card = json.loads(stem.with_suffix(".json").read_text())
        assert stem.with_suffix(".safetensors").stat().st_size > 0
        assert card["kind"] == "teacher" and len(card["classes"]) == 4
        assert 0.0 <= card["metrics"]["test_accuracy_own_classes"] <= 1.0


@pytest.mark.e2e
def test_distil_writes_a_complete_run_dir(distilled: Path):
    for name in (
        "config.json",
        "history.json",
        "learning_curve.png",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "last_state.pt",
    ):
        assert (distilled / name).exists(), name
    history = json.loads((distilled / "history.json").read_text())
    assert len(history) == 1
    assert set(history[0]) >= {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_macro_f1",
        "lr",
        "seconds",
    }
    config = json.loads((distilled / "config.json").read_text())
    assert config["method_options"]["temperature"] == 3.0 and config["method"] == "fitnet+uhc-ka"
    assert config["train"]["epochs"] == 1 and config["student"] == "mobilenetv3_small"
    assert config["train"]["teacher_precision"] in {"fp32", "bf16"}  # `auto` resolved for this machine
    # the default recipe: crops and flips for the student (cached targets), cosine decay, hint weight 15
    assert config["train"]["augment"] == "crop-flip-cached" and config["train"]["scheduler"] == "cosine"
    assert config["method_options"]["hint_weight"] == 15.0
    assert config["roster"]["teacher_1"] == ["T-shirt/top", "Trouser", "Pullover", "Dress"]  # for the reader


@pytest.mark.e2e
def test_evaluation_writes_reports(distilled: Path, trained_home: Path):
    result = run_front_end(
        "evaluation.py",
        ["--task", "fashion-mini", "--checkpoint", str(distilled / "best"), "--quiet"],
        trained_home,
    )
    assert result.returncode == 0, result.stderr
    out = latest_report_dir(trained_home / "evaluation" / "fashion-mini")  # runs/<run>/best's own folder
    assert out.name == distilled.name
    results = json.loads((out / "results.json").read_text())
    assert {
        "task",
        "model_path",
        "overall_accuracy",
        "per_class_accuracy",
        "macro_f1",
        "per_class_f1",
        "confusion_matrix",
        "n_samples",
        "params",
    } <= set(results)
    assert results["n_samples"] == 600 and len(results["per_class_accuracy"]) == 10
    assert sum(map(sum, results["confusion_matrix"])) == 600
    for png in ("sample_predictions.png", "confusion_matrix.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "fashion-mini" in result.stdout and f"reports in {out}" in result.stdout


@pytest.mark.e2e
def test_evaluation_defaults_to_the_newest_student(distilled: Path, trained_home: Path):
    result = run_front_end("evaluation.py", ["--task", "fashion-mini", "--quiet"], trained_home)
    assert result.returncode == 0, result.stderr
    out = latest_report_dir(trained_home / "evaluation" / "fashion-mini")
    results = json.loads((out / "results.json").read_text())
    assert Path(results["model_path"]).parent.parent == trained_home / "runs"


def test_existing_run_dir_is_never_overwritten(distilled: Path, home_with_teachers: Path):
    before = (distilled / "best.safetensors").read_bytes()
    result = run_in_process("train.py", [*TINY, *STUDENT, "--out", str(distilled)], home_with_teachers)
    assert_one_line_error(result, "already holds a run")
    assert (distilled / "best.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "nope"], "unknown task"),
        (["--student", "vgg17"], "unknown student 'vgg17'; close matches: vgg"),  # any timm name works
        (["--alpha", "1.5"], "--alpha"),
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "-2"], "--temperature"),
        (["--epochs", "0"], "--epochs"),
        (["--img-size", "3"], "--img-size"),
        (["--device", "tpu"], "--device"),
        (["--method", "magic"], "unknown method"),
    ],
)
def test_bad_flags_get_one_clear_line(args, needle):
    assert_one_line_error(run_in_process("train.py", args), needle)


def test_missing_teacher_checkpoint(tmp_path: Path):
    result = run_in_process("train.py", [*TINY, *STUDENT], tmp_path)
    assert_one_line_error(result, "teacher_1.safetensors", "python train.py teachers")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("best.json"))


def test_corrupt_teacher_checkpoint(home_with_teachers: Path):
    home = home_with_teachers
    (home / "checkpoints" / "fashion-mini" / "teacher_2.safetensors").write_bytes(b"not a checkpoint")
    assert_one_line_error(run_in_process("train.py", [*TINY, *STUDENT], home), "teacher_2", "corrupt")


def test_teacher_whose_classes_do_not_match_the_roster(home_with_teachers: Path):
    home = home_with_teachers
    card_path = home / "checkpoints" / "fashion-mini" / "teacher_3.json"
    card = json.loads(card_path.read_text())
    card["classes"] = list(reversed(card["classes"]))
    card_path.write_text(json.dumps(card))
    assert_one_line_error(run_in_process("train.py", [*TINY, *STUDENT], home), "teacher_3", "classes")


def test_head_that_does_not_fit_the_class_list(home_with_teachers: Path):
    home = home_with_teachers
    card_path = home / "checkpoints" / "fashion-mini" / "teacher_1.json"
    card = json.loads(card_path.read_text())
    card["arch"] = "cnn-large"
    card_path.write_text(json.dumps(card))
    assert_one_line_error(run_in_process("train.py", [*TINY, *STUDENT], home), "teacher_1", "do not fit")


def test_evaluation_without_any_student(tmp_path: Path):
    result = run_in_process("evaluation.py", ["--task", "fashion-mini"], tmp_path)
    assert_one_line_error(result, "no trained student")


@pytest.mark.slow
def test_reference_app_spellings_give_the_same_config_as_the_new_ones(tmp_path: Path):
    """The reference app's flags (README) are aliases: same config.json, nothing lost."""
    common = ["--task", "fashion-mini", "--train-per-class", "12", "--img-size", "32", "--quiet",
              "--method", "ce", "--device", "cpu"]  # ce: no teachers needed
    reference_app = [*common, "--batch_size", "8", "--num_epochs", "1", "--student_model", "ResNet18"]
    new = [*common, "--batch-size", "8", "--epochs", "1", "--student", "resnet18"]
    configs = []
    for name, args in (("reference-app", reference_app), ("new", new)):
        result = run_in_process("train.py", [*args, "--out", str(tmp_path / name)], tmp_path / "home")
        assert result.returncode == 0, result.stderr
        configs.append(json.loads((tmp_path / name / "config.json").read_text()))
    assert configs[0]["train"]["batch_size"] == 8 and configs[0]["train"]["epochs"] == 1
    assert configs[0]["student"] == "resnet18"
    assert configs[0] == configs[1]


@pytest.mark.parametrize("subcommand", [None, "compare"])
def test_every_method_option_is_a_flag_with_its_default(subcommand):
    """`MethodOptions` is the one place a method hyper-parameter is declared; both commands offer it."""
    group = typer.main.get_command(train_cli.app)
    command = group.commands[subcommand] if subcommand else group
    params = {param.name: param for param in command.params}
    for field in fields(MethodOptions):
        assert params[field.name].opts[0] == "--" + field.name.replace("_", "-")
        assert params[field.name].default == field.default, field.name
        assert params[field.name].help == field.metadata["help"]
    assert "-T" in params["temperature"].opts


def test_method_flags_reach_both_commands_as_method_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = {}
    best = {"epoch": 1, "val_acc": 0.5, "val_macro_f1": 0.5}

    def fake_distil(settings, out_dir):
        seen["distil"] = settings
        return SimpleNamespace(best=best, run_dir=out_dir)

    def fake_compare(task, methods, seeds, student, options, *args, **kwargs):
        seen["compare"] = options
        return {"methods": {}, "teachers_union_accuracy": 0.0, "teachers_uhc_accuracy": 0.0,
                "teachers_uhc_balanced_accuracy": 0.0, "failed": {}}

    monkeypatch.setattr(train_cli, "distil", fake_distil)
    monkeypatch.setattr("amalgam.workflows.compare.run_compare", fake_compare)
    flags = ["-T", "2", "--dkd-beta", "3", "--confidence-weighting", "--teacher-filter", "covering",
             "--device", "cpu", "--out", str(tmp_path / "out")]
    expected = MethodOptions(temperature=2.0, dkd_beta=3.0, confidence_weighting=True,
                             teacher_filter="covering")
    runner = CliRunner()
    for args in (["--method", "kd", *flags], ["compare", *flags]):
        result = runner.invoke(train_cli.app, args)
        assert result.exit_code == 0, result.output
    assert seen["distil"].method_options == expected and seen["distil"].method == "kd"
    assert seen["compare"] == expected
    assert runner.invoke(train_cli.app, ["--alpha", "0", "--device", "cpu"]).exit_code == 0
    assert seen["distil"].method == "ce" and seen["distil"].method_options.alpha == 0.0


def test_compare_takes_the_optimiser_flags_train_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = {}

    def fake_compare(task, methods, seeds, student, options, config, *args, **kwargs):
        seen["config"] = config
        return {"methods": {}, "teachers_union_accuracy": 0.0, "teachers_uhc_accuracy": 0.0,
                "teachers_uhc_balanced_accuracy": 0.0, "failed": {}}

    monkeypatch.setattr("amalgam.workflows.compare.run_compare", fake_compare)
    flags = ["compare", "--opt", "sgd", "--warmup-epochs", "2", "--weight-decay", "0.01", "--device", "cpu",
             "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(train_cli.app, flags)
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.opt, config.warmup_epochs, config.weight_decay) == ("sgd", 2, 0.01)
    refused = CliRunner().invoke(train_cli.app, ["compare", "--opt", "telepathy", "--device", "cpu"])
    assert refused.exit_code != 0 and isinstance(refused.exception, UserError)
    assert "telepathy" in str(refused.exception)
