"""Every recipe in configs/ parses as a `--config` file and trains one epoch on the tiny task.

The docs tell users to pass these files, so a renamed flag or a method that no longer accepts a
setting must fail here, not in a user's first run. Generic over configs/*.toml: a new recipe is
tested by adding its file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from amalgam.cli.config_file import default_map_for, read_config_file
from amalgam.cli.train_cli import app
from tests.helpers.front_ends import REPO, TINY, run_front_end

TRAIN = typer.main.get_command(app)
CONFIGS = sorted((REPO / "configs").glob("*.toml"))
# What a tiny run must override whatever the recipe says, so that one epoch takes seconds.
FAST = [*TINY, "--epochs", "1", "--batch-size", "16"]


def test_there_are_recipes():
    assert CONFIGS, "configs/ holds no *.toml recipe"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_a_recipe_parses_and_sets_what_it_says(config: Path):
    table = read_config_file(config)
    defaults = default_map_for(TRAIN, table, str(config))
    params = TRAIN.make_context("train.py", ["--config", str(config)]).params
    top_level = {name: value for name, value in defaults.items() if name not in TRAIN.commands}
    assert top_level, f"{config.name} sets no flag of train.py"
    for name, value in top_level.items():
        assert params[name] == value, (config.name, name, params[name], value)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_a_recipe_trains_one_epoch_on_the_tiny_task(config: Path, trained_home: Path):
    out = trained_home / "config-runs" / config.stem
    result = run_front_end("train.py", ["--config", str(config), *FAST, "--out", str(out)], trained_home)
    assert result.returncode == 0, (result.stdout, result.stderr)
    recorded = json.loads((out / "config.json").read_text())
    settings = {**recorded.get("train", {}), **recorded.get("method_options", {}), **recorded}
    table = read_config_file(config)
    for key in ("method", "labels"):  # the recipe, not the default, is what ran
        if key in table:
            assert settings[key] == table[key], (config.name, key, settings.get(key))
    assert len(json.loads((out / "history.json").read_text())) == 1  # one epoch: the override won
