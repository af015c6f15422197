"""`python evaluation.py` from nothing: fetch → verify → unpack → grade Task A and B.

Fixture archives in the exact released layouts stand in for Google Drive, served from a
server this test starts on 127.0.0.1; the released students are EfficientNet-B0 state_dicts in
the reference app's format, built here. Everything lands in a temporary AMALGAM_HOME.
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import pytest
import torch

from amalgam.harness import grading
from amalgam.harness.report_dirs import latest_report_dir
from amalgam.tasks.builtin import get_task
from tests.helpers.file_server import FileServer, sha
from tests.helpers.front_ends import assert_one_line_error, run_front_end, run_in_process
from tests.helpers.task_files import TEST_PER_CLASS, cas771_layout_student, write_task_a, write_task_b

STUDENTS = {
    "A": ("best_models/TaskA/student_model_epoch57_acc81.27.pth", 15),
    "B": ("best_models/TaskB/student_model_epoch12_acc80.00.pth", 12),
}
SEED_KEYS = {"task", "model_path", "overall_accuracy", "per_class_accuracy"}


def zip_tree(folder: Path, extra: dict[str, bytes]) -> bytes:
    """Every file under folder, named relative to it, plus extra entries (e.g. __MACOSX/)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
        for name, data in extra.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def release_archives(staging: Path) -> tuple[bytes, bytes, list[str]]:
    """The data archive and the best-models archive as the reference app released them."""
    data_root = staging / "data_release"
    write_task_a(data_root)
    write_task_b(data_root)
    provides = sorted(p.relative_to(data_root).as_posix() for p in data_root.rglob("*.pth"))
    data_zip = zip_tree(data_root, {"__MACOSX/data/TaskB/._train_dataB_model_1.pth": b"\0\x05\x16\x07"})
    models_root = staging / "models_release"
    for rel, classes in STUDENTS.values():
        (models_root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(cas771_layout_student(classes).state_dict(), models_root / rel)
    models_zip = zip_tree(models_root, {"__MACOSX/best_models/._TaskA": b"\0"})
    return data_zip, models_zip, provides


def write_manifest(path: Path, data: tuple[str, str], models: tuple[str, str], provides: list[str]) -> Path:
    listed = ", ".join(f'"{p}"' for p in provides)
    path.write_text(f"""
[[asset]]
name = "cas771-models"
url = "{models[0]}"
sha256 = "{models[1]}"
archive = "zip"
dest = "."
provides = ["{STUDENTS["A"][0]}", "{STUDENTS["B"][0]}"]
tasks = ["A", "B"]

[asset.students]
A = "{STUDENTS["A"][0]}"
B = "{STUDENTS["B"][0]}"

[[asset]]
name = "cas771-data"
url = "{data[0]}"
sha256 = "{data[1]}"
archive = "zip"
dest = "."
provides = [{listed}]
tasks = ["A", "B"]
""")
    return path


@pytest.mark.e2e
def test_grades_a_and_b_from_nothing(server: FileServer, tmp_path: Path):
    data_zip, models_zip, provides = release_archives(tmp_path / "staging")
    manifest = write_manifest(
        tmp_path / "manifest.toml",
        (server.publish("data.zip", data_zip), sha(data_zip)),
        (server.publish("best_models.zip", models_zip), sha(models_zip)),
        provides,
    )
    home = tmp_path / "home"

    result = run_front_end("evaluation.py", ["--manifest", str(manifest), "--quiet", "--device", "cpu"], home)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("evaluation on the test split") == 1
    assert not (home / "__MACOSX").exists()
    for task, (rel, classes) in STUDENTS.items():
        assert (home / rel).is_file()
        # the folder layout the reference app reports in, one per student
        report = latest_report_dir(home / "evaluation" / f"Task{task}")
        assert report.name == Path(rel).stem
        results = json.loads((report / "results.json").read_text())
        assert SEED_KEYS <= set(results) and {"macro_f1", "ece", "confusion_matrix"} <= set(results)
        assert results["task"] == task and results["model_path"] == str(home / rel)
        assert len(results["per_class_accuracy"]) == classes
        assert results["n_samples"] == classes * TEST_PER_CLASS  # each class counted once
        assert 0.0 <= results["overall_accuracy"] <= 100.0
        assert (report / "sample_predictions.png").exists() and (report / "confusion_matrix.png").exists()

    again = run_in_process("evaluation.py", ["--manifest", str(manifest), "--quiet", "--device", "cpu"], home)
    assert again.returncode == 0, again.stderr
    assert len([r for r in server.requests if r[0].endswith(".zip")]) == 2  # nothing fetched twice


@pytest.mark.e2e
def test_unreachable_assets_skip_both_tasks_and_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal must not cut the reasons
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    manifest = write_manifest(
        tmp_path / "manifest.toml",
        (f"{dead}/data.zip", ""),
        (f"{dead}/best_models.zip", ""),
        ["data/TaskB/train_dataB_model_1.pth"],
    )

    result = run_front_end(
        "evaluation.py", ["--manifest", str(manifest), "--quiet", "--device", "cpu"], tmp_path / "home"
    )

    assert_one_line_error(result, "no task could be graded")  # exit code 2: nothing was gradable
    assert result.stdout.count("evaluation on the test split") == 1
    reasons = [line for line in result.stdout.splitlines() if " skipped: " in line]
    assert [line.split(" skipped: ")[0] for line in reasons] == ["task A", "task B"]
    home = tmp_path / "home"
    for line in reasons:  # each reason whole on its own line, both downloads tried, the fix named
        assert f"could not download cas771-models from {dead}/best_models.zip" in line
        assert f"could not download cas771-data from {dead}/data.zip" in line
        assert f"put it at {home / '.cache' / 'downloads' / 'cas771-data.zip'}" in line


def test_a_task_fetches_the_assets_its_spec_names_and_those_listed_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tables = "".join(
        f'[[asset]]\nname = "{name}"\nurl = "http://127.0.0.1:9/{name}.zip"\nsha256 = ""\n'
        f'archive = "zip"\ndest = "."\n{extra}\n'
        for name, extra in (("cas771-data", ""), ("extra", 'tasks = ["A"]'), ("other", 'tasks = ["B"]'))
    )
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(tables)
    fetched = []
    monkeypatch.setattr(grading, "fetch_asset", lambda asset, root, quiet: fetched.append(asset.name))

    grading.ensure_task_assets(get_task("TaskA"), manifest, tmp_path / "home", quiet=True)

    assert fetched == ["cas771-data", "extra"]
