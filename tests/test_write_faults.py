"""A read-only home, a full disk, a user's own file in the way: every command says so in one
`error:` line (exit 2) before it starts work, and nothing half-written is left behind.

A read-only folder cannot be made with chmod when the tests run as root (root writes anyway),
so the faults are real small tmpfs mounts: read-only, or filled to a few KiB. Those tests are
skipped, with the reason, where mounting is not permitted. The other cases need no mount.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer

from amalgam.cli.common import run_cli
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import MethodOptions
from amalgam.distill.runs import run as run_module
from amalgam.distill.runs.folders import claim_run_dir, release_unstarted
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.teachers.loading import load_teachers
from amalgam.distill.teachers.store import gib
from amalgam.distill.teachers.training import train_task_teachers
from amalgam.errors import UserError
from amalgam.harness.assets import fetch, fetch_asset
from amalgam.harness.grading import grade_released_tasks, grade_task
from amalgam.harness.hub_push import push_to_hub
from amalgam.models.checkpoint import read_checkpoint, save_checkpoint
from amalgam.models.export import export_student
from amalgam.models.timm_folder import write_timm_folder
from amalgam.tasks.builtin import get_task
from amalgam.tasks.pth_files import load_pth_safely
from amalgam.workflows.compare import run_compare
from amalgam.workflows.pipeline import run_pipeline
from amalgam.writable import describe_write_failure
from tests.helpers.file_server import FileServer, make_asset, make_zip, quiet_console, write_manifest
from tests.helpers.front_ends import TINY, assert_one_line_error, run_front_end, run_in_process
from tests.helpers.homes import copy_teachers

CPU = torch.device("cpu")
CE = DistilSettings(
    task="fashion-mini", student="mobilenetv3_small", method="ce",
    train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"),
    img_size=32, train_per_class=4,
)


# --- small file systems --------------------------------------------------------------------


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory):
    """`make(name, size, copy=None, leave_kib=None, read_only=False)`: a small tmpfs (holding a copy
    of `copy`, filled until `leave_kib` KiB are free, remounted read-only), unmounted at the end
    of the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (a chmod-ed folder does not stop root)")
    mounted: list[Path] = []

    def make(name: str, size: str = "8m", copy: Path | None = None, leave_kib: int | None = None,
             read_only: bool = False) -> Path:
        path = tmp_path_factory.mktemp(name)
        result = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        if result.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({result.stderr.strip()})")
        mounted.append(path)
        if copy is not None:
            shutil.copytree(copy, path, dirs_exist_ok=True, symlinks=True)
        if leave_kib is not None:
            spare = shutil.disk_usage(path).free - leave_kib * 1024
            with open(path / "filler", "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, max(spare, 1))
        if read_only:
            assert _run("mount", "-o", "remount,ro", str(path)).returncode == 0
        return path

    yield make
    for path in reversed(mounted):
        _run("umount", "-l", str(path))


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory) -> Path:
    """One tiny student run (ce: no teachers), trained in this process."""
    home = tmp_path_factory.mktemp("ce_home")
    return distil(CE, out_dir=home / "runs" / "ce_run", root=home).run_dir


@pytest.fixture
def full_home(tmpfs, home_with_teachers: Path) -> Path:
    """An artefact home with the tiny task's teachers on a disk with 256 KiB free."""
    return tmpfs("full_home", "16m", copy=home_with_teachers, leave_kib=256)


# --- a read-only home ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def readonly_home(tmpfs, trained_teachers: Path, ce_run: Path, tmp_path_factory) -> Path:
    """Teachers and one student run, on a read-only file system."""
    home = copy_teachers(trained_teachers, tmp_path_factory.mktemp("readonly_source"))
    shutil.copytree(ce_run, home / "runs" / ce_run.name)
    return tmpfs("readonly_home", "64m", copy=home, read_only=True)


EPOCH = ["--epochs", "1", "--batch-size", "16"]
TEACHER_CONFIG = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")


def every_command(home: Path, run_dir: Path, out: Path) -> dict[str, Callable[[], object]]:
    """Each command's work, called as its front end calls it (the CLI adds only `run_cli`'s
    one-line rendering, pinned below through train.py and evaluation.py themselves)."""
    return {
        "train": lambda: distil(replace(CE, method="kd"), root=home),
        "teachers": lambda: train_task_teachers("fashion-mini", None, 0.1, 12, TEACHER_CONFIG, 32, root=home),
        "compare": lambda: run_compare("fashion-mini", ["ce"], 1, "mobilenetv3_small", MethodOptions(),
                                       TEACHER_CONFIG, 32, 4, None, root=home, out_dir=out / "compare"),
        "pipeline": lambda: run_pipeline("fashion-mini", "mobilenetv3_small", "kd", 1, 1, 32, 42, 4, None,
                                         "cpu", True, root=home),
        "export onnx": lambda: export_student(run_dir, "onnx", out / "student.onnx"),
        "export torchscript": lambda: export_student(run_dir, "torchscript", out / "student.pt"),
        "export timm": lambda: write_timm_folder(run_dir, out / "timm"),
        "push": lambda: push_to_hub(run_dir, "someone/student", out / "timm"),
        "evaluation": lambda: grade_task("fashion-mini", str(run_dir), "auto", None, None, out / "evaluation",
                                         CPU, True, root=home),
        "evaluation released": lambda: grade_released_tasks(["A", "B"], "auto", None, None,
                                                            out / "evaluation", CPU, True, root=home),
        "fetch": lambda: fetch(None, None, home, quiet=True),
    }


@pytest.mark.parametrize("command", list(every_command(Path(), Path(), Path())))
def test_a_read_only_home_is_refused_before_any_work(command: str, readonly_home: Path, ce_run: Path):
    before = listing(readonly_home)
    work = every_command(readonly_home, readonly_home / "runs" / ce_run.name, readonly_home)[command]
    with pytest.raises(UserError) as caught:
        work()
    message = str(caught.value)
    assert "cannot write" in message and "read-only file system" in message and "\n" not in message, message
    assert listing(readonly_home) == before


def test_train_py_on_a_read_only_home_is_one_line(readonly_home: Path):
    result = run_front_end("train.py", [*TINY, *EPOCH], readonly_home)
    assert_one_line_error(result, "cannot write the run into", "read-only file system", "AMALGAM_HOME")


# --- a full disk ---------------------------------------------------------------------------


FULL_DISK_COMMANDS = {"train": "cannot write the run", "teachers": "cannot write teacher checkpoints",
                      "compare": "cannot write the run", "pipeline": "cannot write teacher checkpoints"}


@pytest.mark.parametrize("command", FULL_DISK_COMMANDS)
def test_a_full_disk_is_refused_before_training(command: str, full_home: Path):
    checkpoints = {p: p.read_bytes() for p in (full_home / "checkpoints").rglob("*.*")}
    with pytest.raises(UserError) as caught:
        every_command(full_home, Path(), full_home)[command]()
    message = str(caught.value)
    assert FULL_DISK_COMMANDS[command] in message and "needs about" in message, message
    assert "free some space" in message
    assert not (full_home / "runs").exists()
    assert not list((full_home / "compare").rglob("*.*"))  # no report, no run file
    assert {p: p.read_bytes() for p in (full_home / "checkpoints").rglob("*.*")} == checkpoints


def test_train_py_on_a_full_disk_is_one_line_with_a_readable_cache_note(full_home: Path):
    result = run_front_end("train.py", ["--augment", "none", *TINY, *EPOCH], full_home)
    assert_one_line_error(result, "cannot write the run", "needs about", "free some space")
    assert "0.0 MiB" not in result.stdout + result.stderr  # the teacher cache's size note
    assert not (full_home / "runs").exists()


def test_a_run_that_fills_the_disk_in_its_first_save_leaves_nothing(tmpfs, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """The up-front estimate is only an estimate: when best.* and last.* fit but the trainer
    state does not, the half run is removed, not left without a state to resume from."""
    disk = tmpfs("small_disk", "6m")
    monkeypatch.setattr(run_module, "run_bytes", lambda trainer: 0)  # as if the estimate were wrong
    with pytest.raises(OSError) as caught:
        distil(CE, out_dir=disk / "run", root=tmp_path / "home")
    assert caught.value.errno == errno.ENOSPC
    message = describe_write_failure(caught.value)
    assert message is not None and str(disk / "run") in message and "the disk is full" in message
    assert listing(disk) == []


@pytest.mark.parametrize("with_state", [False, True])
def test_a_run_without_a_state_is_removed_whole(with_state: bool, tmp_path: Path):
    """What the first epoch's save leaves when the disk fills before last_state.pt: removed (no
    half run to trip over); once a state is saved the run is resumable, so everything stays."""
    claim = claim_run_dir(None, tmp_path / "runs" / "run")
    written = ["best.safetensors", "best.json", "last.safetensors", "last.json", "history.json",
               ".last_state.pt.abc123.tmp"] + (["last_state.pt"] if with_state else [])
    for name in written:
        (claim.path / name).write_bytes(b"x")
    release_unstarted(claim)
    assert listing(tmp_path / "runs") == (sorted(["run", *(f"run/{n}" for n in [*written, "config.json"])])
                                           if with_state else [])


def test_an_os_error_reaches_the_user_as_one_line(capsys: pytest.CaptureFixture, monkeypatch):
    app = typer.Typer()

    @app.command()
    def fill() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/last_state.pt")

    monkeypatch.setattr("sys.argv", ["train.py"])
    with pytest.raises(SystemExit) as caught:
        run_cli(app)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: cannot write /data/runs/x/last_state.pt: the disk is full; free some "
                           "space or set AMALGAM_HOME (or --out) to a folder you can write")


def test_which_os_errors_are_the_users_to_fix():
    assert describe_write_failure(PermissionError(errno.EACCES, "Permission denied", "/x/y")) == (
        "cannot use /x/y: permission denied; fix its permissions or set AMALGAM_HOME (or --out) to a "
        "folder you can write")
    assert "read-only file system" in describe_write_failure(OSError(errno.EROFS, "Read-only", "/x"))
    assert describe_write_failure(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None  # a bug


def test_export_to_a_full_disk_is_one_line_and_leaves_no_file(tmpfs, ce_run: Path, trained_home: Path):
    disk = tmpfs("full_out", "2m", leave_kib=16)
    result = run_front_end("train.py", ["export", str(ce_run), "--format", "torchscript", "--no-report",
                                        "--out", str(disk / "student.pt")], trained_home)
    assert_one_line_error(result, f"cannot write {disk / 'student.pt'}", "the disk is full")
    assert listing(disk) == ["filler"]


def test_timm_export_to_a_full_disk_leaves_no_folder(tmpfs, ce_run: Path):
    disk = tmpfs("full_timm", "2m", leave_kib=16)
    with pytest.raises(OSError) as caught:
        write_timm_folder(ce_run, disk / "timm")
    assert caught.value.errno == errno.ENOSPC
    assert listing(disk) == ["filler"]


def test_grading_onto_a_full_disk_leaves_no_report_folder(tmpfs, ce_run: Path):
    disk = tmpfs("full_reports", "2m", leave_kib=16)
    with pytest.raises(OSError) as caught:
        grade_task("fashion-mini", str(ce_run), "auto", None, None, disk / "evaluation", CPU, True,
                   root=ce_run.parent.parent)
    assert describe_write_failure(caught.value) is not None
    assert listing(disk) in (["filler"], ["evaluation", "filler"])  # no task or student folder


def test_fetch_onto_a_full_disk_names_the_disk_not_the_network(tmpfs, server: FileServer):
    disk = tmpfs("full_fetch", "2m", leave_kib=64)
    asset = make_asset(server.publish("pack.zip", make_zip({"a.bin": os.urandom(2**20)})))
    with pytest.raises(UserError) as caught:
        fetch_asset(asset, disk, console=quiet_console())
    message = str(caught.value)
    assert "the disk is full" in message and "by hand" not in message, message


@pytest.mark.e2e
def test_fetch_cli_on_a_read_only_home_with_a_local_manifest(tmpfs, server: FileServer, tmp_path: Path):
    url = server.publish("pack.zip", make_zip({"a.bin": b"x"}))
    manifest = write_manifest(tmp_path / "m.toml", {"name": '"pack"', "url": f'"{url}"', "sha256": '""',
                                                    "archive": '"zip"', "dest": '"data/pack"'})
    home = tmpfs("ro_fetch", "1m", read_only=True)
    result = run_front_end("evaluation.py", ["fetch", "--manifest", str(manifest)], home)
    assert_one_line_error(result, "cannot write the download of pack", "read-only file system")
    assert server.requests == []  # refused before a byte was downloaded


# --- export never replaces a file it did not write -----------------------------------------


@pytest.mark.parametrize("fmt, name", [("onnx", "user.onnx"), ("torchscript", "user.pt")])
def test_export_never_replaces_a_users_file(fmt: str, name: str, ce_run: Path, tmp_path: Path):
    mine = tmp_path / name
    mine.write_bytes(b"the user's own model")
    with pytest.raises(UserError, match="was not written by `train.py export`; name a new file"):
        export_student(ce_run, fmt, mine)
    assert mine.read_bytes() == b"the user's own model"


def test_export_replaces_its_own_file(ce_run: Path, tmp_path: Path):
    out = tmp_path / "student.pt"
    export_student(ce_run, "torchscript", out)
    first = out.stat().st_mtime_ns
    export_student(ce_run, "torchscript", out)
    assert out.stat().st_mtime_ns >= first


def test_export_refuses_a_folder_as_the_file(ce_run: Path, tmp_path: Path):
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    with pytest.raises(UserError, match="is a folder; name the file"):
        export_student(ce_run, "onnx", folder)


@pytest.mark.parametrize("make_it", ["file", "folder"])
def test_timm_export_never_replaces_a_users_file(make_it: str, ce_run: Path, tmp_path: Path):
    out = tmp_path / "timm"
    if make_it == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        write_timm_folder(ce_run, out)
    assert (out.read_text() if make_it == "file" else (out / "notes.txt").read_text()) == "mine"


# --- the remarks ---------------------------------------------------------------------------


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_bytes(b"epochs = 1\n# caf\xe9 in Latin-1\n")
    result = run_in_process("train.py", ["--config", str(config)])
    assert_one_line_error(result, "is not UTF-8 text", "0xe9", "save it as UTF-8")


def test_teachers_reads_its_own_table_either_way_round(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text('[teachers]\nepochs = "many"\n')
    before = run_in_process("train.py", ["--config", str(config), "teachers"])
    after = run_in_process("train.py", ["teachers", "--config", str(config)])
    assert_one_line_error(before, "[teachers]: epochs must be a whole number")
    assert_one_line_error(after, "[teachers]: epochs must be a whole number")


def test_evaluation_out_naming_a_file_is_one_line(tmp_path: Path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    result = run_in_process("evaluation.py", ["--task", "fashion-mini", "--out", str(target)])
    assert_one_line_error(result, f"--out {target} is a file, not a folder")
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_evaluation_grades_a_run_folder(ce_run: Path, tmp_path: Path):
    outcome = grade_task("fashion-mini", str(ce_run), "auto", None, None, tmp_path / "evaluation", CPU,
                         True, root=ce_run.parent.parent)
    assert outcome.results is not None
    assert outcome.results["model_path"] == str(ce_run / "best")


def test_evaluation_of_a_folder_without_a_student_says_so(tmp_path: Path):
    with pytest.raises(UserError, match="has no best student"):
        grade_task("fashion-mini", str(tmp_path), "auto", None, None, tmp_path / "evaluation", CPU, True,
                   root=tmp_path)


def test_non_finite_teacher_weights_name_the_teacher(home_with_teachers: Path):
    stem = home_with_teachers / "checkpoints" / "fashion-mini" / "teacher_2"
    weights, card = read_checkpoint(stem)
    save_checkpoint(stem, {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                           for k, v in weights.items()}, card)
    with pytest.raises(UserError) as caught:
        load_teachers(get_task("fashion-mini"), home_with_teachers)
    message = str(caught.value)
    assert "teacher teacher_2" in message and "non-finite weights" in message and "--lr" not in message


def test_a_raw_pickle_is_refused_without_torchs_warning(tmp_path: Path):
    class Calls:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"data": Calls()}, protocol=4))  # a raw pickle, not torch's zip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="holds code"):
            load_pth_safely(path, "data file")
    assert [str(w.message) for w in seen] == []


def test_a_small_cache_size_never_reads_as_zero():
    assert gib(9216) == "9.0 KiB"
    assert gib(3 * 2**20) == "3.0 MiB"
    assert gib(5 * 2**30) == "5.00 GiB"
