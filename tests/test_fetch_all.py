"""One asset that cannot be had does not stop the others, and the advice names the asset."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from amalgam.errors import UserError
from amalgam.harness.assets import fetch
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from tests.helpers.file_server import GOOD_TABLE, FileServer, make_zip, write_manifest
from tests.helpers.front_ends import assert_one_line_error, run_in_process


def dead_url(name: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/{name}"


def test_fetch_goes_on_after_a_failed_asset(server: FileServer, tmp_path: Path):
    root = tmp_path / "project"
    root.mkdir()
    dead = dead_url("models.zip")
    manifest = write_manifest(
        tmp_path / "manifest.toml",
        {**GOOD_TABLE, "name": '"models"', "url": f'"{dead}"', "dest": '"best_models"'},
        {**GOOD_TABLE, "name": '"data"', "url": f'"{server.publish("d.zip", make_zip({"x.pth": b"x"}))}"',
         "dest": '"data"'},
    )

    with pytest.raises(UserError) as caught:
        fetch(None, manifest, root, quiet=True)

    message = str(caught.value)
    assert (root / "data" / "x.pth").read_bytes() == b"x"  # the second asset arrived all the same
    assert message.startswith("1 of 2 assets failed: could not download models from " + dead)
    assert message.endswith("; ready: data") and "\n" not in message


def test_missing_cas771_data_names_the_asset_to_fetch(tmp_path: Path):
    with pytest.raises(UserError, match=r"`python evaluation\.py fetch cas771-data`"):
        load_task_data(get_task("B"), str(tmp_path))


def test_the_headline_command_without_data_says_which_asset_to_fetch(tmp_path: Path):
    result = run_in_process("train.py", ["--task", "B", "--quiet"], tmp_path / "home")
    assert_one_line_error(result, "train_dataB_model_1.pth is missing",
                          "run `python evaluation.py fetch cas771-data`")
