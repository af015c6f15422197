"""How the front ends fail before any work starts: Click's usage errors and an early Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from amalgam.cli import entry
from tests.helpers.front_ends import REPO, assert_one_line_error, run_front_end, run_in_process


@pytest.mark.parametrize(
    ("script", "args", "needle"),
    [
        ("train.py", ["--no-such-flag"], "--no-such-flag"),
        ("train.py", ["--epochs", "abc"], "--epochs"),
        ("train.py", ["export"], "run_dir"),
        ("evaluation.py", ["fetch", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_usage_errors_are_one_error_line_with_exit_code_2(script, args, needle):
    result = run_in_process(script, args)
    assert result.returncode == 2
    assert "╭" not in result.stderr and "Usage:" not in result.stderr, result.stderr
    assert_one_line_error(result, needle)


@pytest.mark.e2e
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


# Runs train.py as `python train.py tasks` would, but holds the import of torch until the
# test has sent SIGINT, so the signal lands mid-import on any machine, however fast.
HELD_IMPORT = """
import importlib.abc, runpy, sys, time
class HoldTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            print("importing torch", flush=True)
            time.sleep(60)
        return None
sys.meta_path.insert(0, HoldTorch())
sys.argv = [sys.argv[1], "tasks"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.e2e
def test_sigint_while_the_real_script_imports_torch(tmp_path):
    env = {**os.environ, "AMALGAM_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    # A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and Python then never
    # turns it into KeyboardInterrupt; a user's terminal has the default, so the child gets it too.
    proc = subprocess.Popen([sys.executable, "-c", HELD_IMPORT, str(REPO / "train.py")], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "importing torch"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 130 and err.strip() == "interrupted", (proc.returncode, err)
