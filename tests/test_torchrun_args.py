"""train.py's options pass through torchrun's own parser untouched.

torchrun parses its arguments with argparse, which also reads options after the script name
and accepts any unambiguous prefix of its own: `--run` is refused as ambiguous with
`--run-path`, and a prefix of exactly one torchrun option would be taken by torchrun. So the
run name is spelled `--run-name` (the reference app's `--run` stays, for plain `python train.py`)."""

from __future__ import annotations

import pytest
import typer
from torch.distributed.run import get_args_parser

from amalgam.cli.train_cli import app

# spellings torchrun refuses (ambiguous prefixes of its own options) -> the one that passes
RUN_ONLY_WITHOUT_TORCHRUN = {"--run": "--run-name", "--log": "--logger"}


def torchrun_script_args(args: list[str]) -> list[str]:
    parsed = get_args_parser().parse_args(["--nproc-per-node", "2", "train.py", *args])
    assert parsed.training_script == "train.py"
    return parsed.training_script_args


def main_command_options() -> list[str]:
    command = typer.main.get_command(app)
    return sorted({opt for param in command.params if param.param_type_name == "option"
                   for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")})


def test_every_training_option_but_the_seeds_run_passes_through_torchrun():
    options = main_command_options()
    assert {"--run", "--run-name", "--task"} <= set(options)
    for option in options:
        if option in RUN_ONLY_WITHOUT_TORCHRUN:
            continue
        args = ["--task", "B", option, "1"]
        assert torchrun_script_args(args) == args, f"torchrun takes {option} for itself"


@pytest.mark.parametrize(("refused", "passes"), RUN_ONLY_WITHOUT_TORCHRUN.items())
def test_each_spelling_torchrun_refuses_has_one_it_passes(refused: str, passes: str, capsys):
    options = main_command_options()
    if refused not in options:
        pytest.skip(f"train.py has no {refused}")
    with pytest.raises(SystemExit):
        torchrun_script_args(["--task", "B", refused, "x"])
    assert f"ambiguous option: {refused}" in capsys.readouterr().err
    assert passes in options and torchrun_script_args([passes, "x"]) == [passes, "x"]


def test_the_training_cli_reads_run_name_as_the_run_suffix():
    command = typer.main.get_command(app)
    for spelling in ("--run-name", "--run"):
        args = torchrun_script_args(["--task", "B", "--run-name", "nightly"]) if spelling == "--run-name" \
            else ["--task", "B", "--run", "nightly"]
        with command.make_context("train.py", list(args), resilient_parsing=True) as ctx:
            assert ctx.params["run"] == "nightly", spelling
