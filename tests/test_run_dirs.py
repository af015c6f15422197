"""Run folders: a run name is a plain name, a folder is claimed by exactly one run, and a run
that never started leaves nothing behind for the next one to trip over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.runs import folders as run_dirs
from amalgam.distill.runs import run as run_module
from amalgam.distill.runs.folders import check_run_name, claim_run_dir, default_run_dir
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.runs.state import TrainingInterrupted
from amalgam.errors import UserError
from tests.helpers.front_ends import assert_one_line_error, run_in_process

# `ce` needs no teachers, so these runs need no trained home
CE = DistilSettings(
    task="fashion-mini", student="mobilenetv3_small", method="ce",
    train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"),
    img_size=32, train_per_class=4,
)


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    "name", ["x/../../../../tmp/escaped", "../up", "/tmp/abs", "", "..", "a b", "a\\b", ".hidden", "é"]
)
def test_a_run_name_is_a_plain_name(name: str):
    with pytest.raises(UserError) as caught:
        check_run_name(name)
    one_line(caught, "--run")


def test_plain_run_names_pass():
    assert check_run_name("kd_T4.seed-1") == "kd_T4.seed-1"


def test_run_name_that_climbs_out_of_runs_is_refused(tmp_path: Path):
    home = tmp_path / "home"
    result = run_in_process(
        "train.py", ["--task", "fashion-mini", "--method", "ce", "--run", "x/../../../escaped"], home
    )
    assert_one_line_error(result, "--run", "plain name")
    assert not (tmp_path / "escaped").exists() and not (home / "runs").exists()


def test_out_on_a_foreign_folder_replaces_nothing(tmp_path: Path):
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "history.json").write_text('["my own notes"]')
    (mine / "best.safetensors").write_bytes(b"my own weights")
    with pytest.raises(UserError) as caught:
        distil(CE, out_dir=mine, root=tmp_path / "home")
    one_line(caught, "not empty", str(mine))
    assert (mine / "history.json").read_text() == '["my own notes"]'
    assert (mine / "best.safetensors").read_bytes() == b"my own weights"
    assert sorted(p.name for p in mine.iterdir()) == ["best.safetensors", "history.json"]


def test_out_naming_a_file_is_one_line(tmp_path: Path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(UserError) as caught:
        distil(CE, out_dir=target, root=tmp_path / "home")
    one_line(caught, "is a file")
    assert target.read_text() == "keep me"


def test_a_folder_is_claimed_once_even_past_the_early_check(tmp_path: Path, monkeypatch):
    """Two runs that both passed the early check race to the claim: only one may win."""
    out = tmp_path / "shared"
    first = claim_run_dir(out, tmp_path / "unused")
    monkeypatch.setattr(run_dirs, "check_out_dir", lambda _: None)  # as if both checked at once
    with pytest.raises(UserError) as caught:
        claim_run_dir(out, tmp_path / "unused")
    one_line(caught, "already holds a run")
    assert first.path == out and (out / "config.json").exists()


def test_an_existing_empty_folder_can_be_claimed_and_is_kept_on_release(tmp_path: Path):
    out = tmp_path / "empty"
    out.mkdir()
    claim = claim_run_dir(out, tmp_path / "unused")
    assert not claim.created and (out / "config.json").exists()
    run_dirs.release_unstarted(claim)
    assert out.is_dir() and not any(out.iterdir())  # the user's folder stays, emptied of ours


def test_default_run_dirs_started_in_the_same_second_are_distinct(tmp_path: Path):
    base = default_run_dir(tmp_path / "runs", "fashion-mini", "same")
    claims = [claim_run_dir(None, base) for _ in range(3)]
    paths = [c.path for c in claims]
    assert len(set(paths)) == 3 and paths[0] == base
    assert [p.name for p in paths[1:]] == [f"{base.name}-2", f"{base.name}-3"]
    assert all((p / "config.json").exists() for p in paths)


def test_ctrl_c_during_start_up_is_one_line_and_writes_no_run(tmp_path: Path, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "load_task_data", interrupted)
    out = tmp_path / "run"
    with pytest.raises(BaseException) as caught:  # noqa: PT011  (a raw KeyboardInterrupt is the bug)
        distil(CE, out_dir=out, root=tmp_path / "home")
    assert isinstance(caught.value, TrainingInterrupted), repr(caught.value)
    assert caught.value.exit_code == 130
    one_line(caught, "start-up", "no run folder")
    assert not out.exists() and not (tmp_path / "home" / "runs").exists()


def test_a_run_stopped_before_its_first_state_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C just after the folder was claimed

    original = run_module.train_epochs
    monkeypatch.setattr(run_module, "train_epochs", stopped)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        distil(CE, out_dir=out, root=tmp_path / "home")
    assert not out.exists()
    monkeypatch.setattr(run_module, "train_epochs", original)
    again = distil(CE, out_dir=out, root=tmp_path / "home")  # the same --out is free again
    assert again.run_dir == out and (out / "last_state.pt").exists()
    assert json.loads((out / "config.json").read_text())["method"] == "ce"
