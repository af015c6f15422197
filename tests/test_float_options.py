"""Every float setting is checked where it is declared: finite, in its range, its flag named.

The fields are found by introspection, so a new float field of MethodOptions or TrainConfig is
covered without editing this file; a non-finite value must fail when the settings are built,
not epochs later inside a loss.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from amalgam.cli import train_cli
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import MethodOptions
from amalgam.distill.option_fields import Range, check_number, flag_name
from amalgam.errors import UserError
from tests.helpers.front_ends import assert_one_line_error, run_in_process

SETTINGS = (MethodOptions, TrainConfig)
FLOAT_FIELDS = [(cls, f.name) for cls in SETTINGS for name_type in [typing.get_type_hints(cls)]
                for f in fields(cls) if name_type[f.name] is float]
BAD = [math.nan, math.inf, -math.inf]


def test_both_settings_have_float_fields_to_check():
    names = {name for _, name in FLOAT_FIELDS}
    assert {"hint_weight", "dkd_beta", "cfl_weight", "simkd_weight", "weight_decay", "lr"} <= names


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("cls", "name"), FLOAT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FLOAT_FIELDS])
def test_a_non_finite_float_is_refused_naming_its_flag(cls: type, name: str, value: float):
    with pytest.raises(UserError) as caught:
        cls(**{name: value})
    message = str(caught.value)
    assert message.startswith(f"{flag_name(name)} must be a finite number"), message
    assert message.endswith(f"got {value}") and "\n" not in message


@pytest.mark.parametrize(("cls", "name"), FLOAT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FLOAT_FIELDS])
def test_every_float_default_passes_its_own_check(cls: type, name: str):
    field = next(f for f in fields(cls) if f.name == name)
    check_number(field.default, flag_name(name), field.metadata["range"])


@pytest.mark.parametrize(("cls", "name", "value", "expected"), [
    (MethodOptions, "hint_weight", -1.0, "--hint-weight must be >= 0, got -1.0"),
    (MethodOptions, "alpha", 1.5, "--alpha must be in [0, 1], got 1.5"),
    (MethodOptions, "temperature", 0.0, "--temperature must be > 0, got 0.0"),
    (TrainConfig, "scheduler_gamma", 0.0, "--scheduler-gamma must be in (0, 1], got 0.0"),
    (TrainConfig, "lr", -1e-3, "--lr must be > 0, got -0.001"),
])
def test_a_float_out_of_its_range_names_the_range(cls: type, name: str, value: float, expected: str):
    with pytest.raises(UserError) as caught:
        cls(**{name: value})
    assert str(caught.value) == expected


def test_the_message_names_the_range_of_a_non_finite_value():
    with pytest.raises(UserError) as caught:
        MethodOptions(hint_weight=math.nan)
    assert str(caught.value) == "--hint-weight must be a finite number >= 0, got nan"


def test_ranges_read_as_words():
    assert str(Range(low=0)) == ">= 0" and str(Range(low=0, low_open=True)) == "> 0"
    assert str(Range(low=0, high=1, low_open=True)) == "in (0, 1]" and str(Range(high=2)) == "<= 2"
    assert 0.5 in Range(low=0, high=1) and 1.0 not in Range(low=0, high=1, high_open=True)


@pytest.mark.parametrize(("argv", "flag"), [
    (["--hint-weight", "nan"], "--hint-weight"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["compare", "--dkd-beta", "-inf"], "--dkd-beta"),
    (["teachers", "--lr", "nan"], "--lr"),
    (["--simkd-weight", "inf"], "--simkd-weight"),
    (["--val-fraction", "nan"], "--val-fraction"),
])
def test_the_cli_refuses_a_non_finite_value_in_one_line(monkeypatch: pytest.MonkeyPatch, argv, flag):
    """Through the front end (`run_cli`, in process): exit code 2 and one `error:` line naming the
    flag, before any data or teacher is loaded (the workflows fail the test if they are reached)."""

    def never(*args, **kwargs):
        raise AssertionError("the settings were accepted")

    monkeypatch.setattr(train_cli, "distil", never)
    monkeypatch.setattr("amalgam.workflows.compare.run_compare", never)
    monkeypatch.setattr("amalgam.distill.teachers.training.train_task_teachers", never)
    result = run_in_process("train.py", [*argv, "--device", "cpu"])
    assert_one_line_error(result, f"error: {flag} must be a finite number")


def test_cli_runner_sees_the_user_error_of_a_bad_float():
    result = CliRunner().invoke(train_cli.app, ["--cfl-weight", "nan", "--device", "cpu"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception) == "--cfl-weight must be a finite number >= 0, got nan"


def test_a_number_setting_given_text_is_refused_by_name():
    """From Python (amalgam's API) nothing has parsed the value yet: text is not a number."""
    with pytest.raises(UserError, match=r"^--lr must be a number > 0, got '0.1'$"):
        TrainConfig(lr="0.1")
