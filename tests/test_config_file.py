"""`--config FILE` sets flag defaults (the command line wins), and a run's config.json re-runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from amalgam.cli import config_file
from amalgam.cli.config_file import default_map_for, read_config_file
from amalgam.cli.train_cli import app
from amalgam.errors import UserError
from tests.helpers.front_ends import TINY, assert_one_line_error, run_in_process

TRAIN = typer.main.get_command(app)


def parsed(*args: str) -> dict:
    """The values `train.py ARGS` would run with, parsed without running anything."""
    return TRAIN.make_context("train.py", list(args)).params


def test_a_toml_file_sets_defaults_and_the_command_line_wins(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "resnet10t"\nepochs = 3\nbatch-size = 8\nopt = "sgd"\nlr = 1\n'
                    'temperature = 3\npretrained = true\n')
    params = parsed("--config", str(toml), "-b", "16", "--sched", "step")
    assert params["student"] == "resnet10t" and params["epochs"] == 3 and params["opt"] == "sgd"
    assert params["batch_size"] == 16 and params["scheduler"] == "step"  # given on the command line
    assert params["lr"] == 1.0 and params["temperature"] == 3.0 and params["pretrained"] is True
    assert parsed()["epochs"] == 12  # nothing leaks into the next parse


def test_yaml_and_subcommand_tables(tmp_path: Path):
    pytest.importorskip("yaml")
    yaml = tmp_path / "run.yaml"
    yaml.write_text("num_epochs: 2\nteachers:\n  epochs: 4\n  lr: 0.01\n")
    assert parsed("--config", str(yaml))["epochs"] == 2
    defaults = default_map_for(TRAIN, read_config_file(yaml), str(yaml))
    assert defaults["teachers"] == {"epochs": 4, "lr": 0.01}
    teachers = TRAIN.commands["teachers"]
    own = tmp_path / "teachers.toml"
    own.write_text("epochs = 5\n")
    assert teachers.make_context("teachers", ["--config", str(own), "-b", "8"]).params["epochs"] == 5


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("batch_sise = 8\n", ["unknown key 'batch_sise'", "batch_size"]),
        ('epochs = "3"\n', ["epochs must be a whole number", "'3'"]),
        ("epochs = 2.5\n", ["epochs must be a whole number"]),
        ("student = 18\n", ["student must be quoted text"]),
        ('pretrained = "yes"\n', ["pretrained must be true or false"]),
        ("epochs = \n", ["is not valid TOML"]),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_key(tmp_path: Path, text: str, needles: list[str]):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(UserError) as caught:
        parsed("--config", str(toml))
    message = str(caught.value)
    assert "\n" not in message and str(toml) in message
    for needle in needles:
        assert needle in message, message


def test_unreadable_kinds_of_file(tmp_path: Path, monkeypatch):
    with pytest.raises(UserError, match="no such file"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "run.ini").write_text("")
    with pytest.raises(UserError, match=r"use a \.toml, \.yaml/\.yml or \.json file"):
        read_config_file(tmp_path / "run.ini")
    (tmp_path / "run.yml").write_text("epochs: 2\n")
    monkeypatch.setattr(config_file.importlib.util, "find_spec", lambda name: None)  # no PyYAML
    with pytest.raises(UserError, match="pip install pyyaml, or write the file as TOML"):
        read_config_file(tmp_path / "run.yml")


@pytest.mark.slow
def test_a_runs_config_json_re_runs_it(tmp_path: Path):
    """Written with timm's spellings; the re-run from its config.json records the same settings."""
    first, again = tmp_path / "runs" / "first", tmp_path / "runs" / "again"
    args = [*TINY, "--method", "ce", "--epochs", "1", "-b", "16", "--opt", "sgd", "--lr", "0.01",
            "--sched", "step", "--decay-epochs", "2", "--warmup-epochs", "1", "--seed", "3",
            "--no-amp", "--out", str(first)]
    result = run_in_process("train.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads((first / "config.json").read_text())
    assert settings["train"] | {"batch_size": 16, "opt": "sgd", "scheduler": "step", "scheduler_step": 2,
                                "warmup_epochs": 1, "amp": False} == settings["train"]
    rerun = ["--config", str(first / "config.json"), "--out", str(again)]
    result = run_in_process("train.py", rerun, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((again / "config.json").read_text()) == settings


def test_a_bad_config_on_the_command_line_is_one_line(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text("epochz = 3\n")
    result = run_in_process("train.py", ["--config", str(toml)], tmp_path)
    assert_one_line_error(result, str(toml), "unknown key 'epochz'", "epochs")
    assert not (tmp_path / "runs").exists()
