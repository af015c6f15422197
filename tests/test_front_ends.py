"""How the front ends fail before any work starts: Click's usage errors and an early Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from amalgam.cli import entry
from tests.conftest import REPO, assert_one_line_error, run_front_end


@pytest.mark.parametrize(
    ("script", "args", "needle"),
    [
        ("train.py", ["--no-such-flag"], "--no-such-flag"),
        ("train.py", ["--epochs", "abc"], "--epochs"),
        ("train.py", ["export"], "run_dir"),
        ("evaluation.py", ["fetch", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_usage_errors_are_one_error_line_with_exit_code_2(tmp_path, script, args, needle):
    result = run_front_end(script, args, tmp_path)
    assert result.returncode == 2
    assert "╭" not in result.stderr and "Usage:" not in result.stderr, result.stderr
    assert_one_line_error(result, needle)


def test_help_still_prints_and_exits_0(tmp_path):
    result = run_front_end("train.py", ["--help"], tmp_path)
    assert result.returncode == 0 and "--temperature" in result.stdout


def test_ctrl_c_while_the_command_modules_import_is_exit_130_without_traceback(monkeypatch, capsys):
    def interrupted_import(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry.importlib, "import_module", interrupted_import)
    with pytest.raises(SystemExit) as stopped:
        entry.train()
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_sigint_during_start_up_of_the_real_script(tmp_path):
    """SIGINT half a second in lands while torch and timm are still importing."""
    env = {**os.environ, "AMALGAM_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "tasks"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
