"""A non-editable install works away from the checkout: built wheel, console scripts, package data.

The wheel goes into a fresh virtualenv; its third-party packages (torch alone is
gigabytes) are borrowed from the running environment through a `.pth` line, which adds
that site-packages to `sys.path` without running its `.pth` files, so an editable
`amalgam` installed there stays invisible and only the wheel's copy can be imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _sources(dest: Path) -> Path:
    """The tracked files only, so a developer's runs/ or build/ never reach the wheel."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to list the project's own files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv holding the project's wheel; returns its bin/ folder."""
    work = tmp_path_factory.mktemp("install")
    source = _sources(work / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-q", "-w", str(work / "dist"), str(source)], cwd=work)
    wheel = next((work / "dist").glob("amalgam-*.whl"))
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=work).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", str(wheel)], cwd=work)
    return venv / "bin"


def _outside_env(home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AMALGAM_HOME", "PYTHONPATH")}
    if home is not None:
        env["AMALGAM_HOME"] = str(home)
    return env


@pytest.mark.e2e
def test_the_wheel_imports_its_own_copy_with_the_manifest_and_embedded_task(installed, tmp_path):
    code = (
        "import amalgam, importlib.resources as r; print(amalgam.__file__); "
        "h = r.files('amalgam.harness'); "
        "print(sorted(p.name for p in h.iterdir() if p.name.endswith('.toml'))); "
        "print((r.files('amalgam.tasks') / 'data' / 'fashion_mini' / 'fashion_mini.npz').is_file())"
    )
    out = _run([str(installed / "python"), "-c", code], cwd=tmp_path, env=_outside_env()).stdout.split("\n")
    assert str(installed.parent) in out[0] and str(REPO) not in out[0]
    assert out[1] != "[]", "the release manifest is not shipped as package data"
    assert out[2] == "True"


@pytest.mark.e2e
def test_console_script_writes_its_artefacts_in_the_current_directory(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    _run([str(installed / "amalgam-train"), "teachers", "--task", "fashion-mini", "--train-per-class", "4",
          "--img-size", "32", "--epochs", "1", "--quiet"], cwd=work, env=_outside_env())
    cards = sorted(p.name for p in (work / "checkpoints").rglob("teacher_*.json"))
    assert len(cards) == 3, cards
    site = Path(_run([str(installed / "python"), "-c", "import amalgam; print(amalgam.__file__)"],
                     cwd=work, env=_outside_env()).stdout.strip()).parent.parent
    assert not any(site.glob("checkpoints")) and not any(site.glob("runs"))


@pytest.mark.e2e
def test_amalgam_home_overrides_the_current_directory(installed, tmp_path):
    home, work = tmp_path / "home", tmp_path / "cwd"
    work.mkdir()
    _run([str(installed / "amalgam-evaluate"), "--help"], cwd=work, env=_outside_env(home))
    result = subprocess.run([str(installed / "python"), "-c", "import amalgam; print(amalgam.PROJECT_ROOT)"],
                            cwd=work, env=_outside_env(home), capture_output=True, text=True)
    assert Path(result.stdout.strip()) == home.resolve()
