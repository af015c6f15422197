"""`train.py export --format timm` writes a folder timm itself loads, with our classes; `push`
hands that folder to huggingface_hub (faked here: no network at test time)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.harness.hub_push import push_to_hub
from amalgam.models.checkpoint import ModelCard, build_from_card, load_model, save_checkpoint
from amalgam.models.timm_folder import CONFIG_FILE, WEIGHTS_FILE, write_timm_folder
from amalgam.tasks.builtin import get_task
from tests.helpers.front_ends import assert_one_line_error, run_in_process

CLASSES = list(get_task("fashion-mini").classes)
MEAN, STD = [0.29, 0.29, 0.29], [0.35, 0.35, 0.35]
# timm rebuilds the same architecture with the same weights and runs the same kernels, so the
# logits should agree to float rounding; 1e-5 x max(1, |logit|) leaves room for other builds,
# while a wrong weight, head or BatchNorm buffer moves them by far more.
TIMM_TOLERANCE = 1e-5


def student_card(arch: str = "mobilenetv3_small", kind: str = "student") -> ModelCard:
    return ModelCard(kind=kind, arch=arch, classes=CLASSES, img_size=32, mean=MEAN, std=STD,
                     task="fashion-mini", metrics={"val_acc": 0.5})


def make_run(folder: Path, card: ModelCard | None = None) -> Path:
    """A run folder holding only `best` (a random student with non-trivial BatchNorm statistics)."""
    card = card or student_card()
    torch.manual_seed(0)
    model = build_from_card(card)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    save_checkpoint(folder / "best", model.state_dict(), card)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, str]:
    home = tmp_path_factory.mktemp("home")
    run = make_run(home / "run")
    result = run_in_process("train.py", ["export", str(run), "--format", "timm"], home)
    assert result.returncode == 0, result.stderr
    return run, run / "timm", result.stdout


def test_timm_loads_the_folder_with_our_classes_and_preprocessing(exported):
    run, folder, stdout = exported
    assert str(folder) in stdout and "local-dir:" in stdout
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert list(cfg["label_names"]) == CLASSES and model.num_classes == len(CLASSES)
    assert tuple(cfg["input_size"]) == (3, 32, 32)
    data = timm.data.resolve_data_config({}, model=model)  # what timm's own scripts feed it
    assert tuple(data["input_size"]) == (3, 32, 32) and data["crop_pct"] == 1.0
    assert data["interpolation"] == "bilinear"
    assert list(data["mean"]) == MEAN and list(data["std"]) == STD
    ours, _ = load_model(run / "best")
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, logits = ours(x), model(x)
    assert reference.std() > 1e-3  # a random student still separates its inputs
    bound = TIMM_TOLERANCE * max(1.0, reference.abs().max().item())
    assert (logits - reference).abs().max().item() <= bound


def test_config_is_timms_layout_and_names_us(exported):
    _, folder, _ = exported
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["architecture"] == "mobilenetv3_small_100"  # the timm name, not our alias
    assert config["num_classes"] == 10 and config["label_names"] == CLASSES
    assert config["pretrained_cfg"]["mean"] == MEAN and config["amalgam"]["task"] == "fashion-mini"


def test_reexport_replaces_our_folder_but_never_a_foreign_one(exported, tmp_path: Path):
    run, folder, _ = exported
    assert write_timm_folder(run) == folder  # ours: written again in place
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="did not write"):
        write_timm_folder(run, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (foreign / "config.json").write_text('{"architecture": "resnet18"}')  # someone else's timm folder
    with pytest.raises(UserError, match="did not write"):
        write_timm_folder(run, foreign)
    with pytest.raises(UserError, match="is a file"):
        write_timm_folder(run, foreign / "notes.txt")


def test_a_teacher_is_not_a_timm_model(tmp_path: Path):
    run = make_run(tmp_path / "run", student_card(arch="cnn-small", kind="teacher"))
    with pytest.raises(UserError, match="not a timm model"):
        write_timm_folder(run)
    assert not (run / "timm").exists()


class FakeApi:
    """Records what `push` asks of huggingface_hub; `fail` makes the upload raise."""

    calls: list[tuple[str, dict]] = []
    fail: Exception | None = None

    def create_repo(self, repo_id: str, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, **kwargs):
        if self.fail is not None:
            raise self.fail
        folder = Path(kwargs["folder_path"])
        self.calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in folder.iterdir())}))


@pytest.fixture
def fake_hub(monkeypatch):
    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(HfApi=FakeApi))
    return FakeApi


def test_push_builds_the_folder_and_uploads_it(fake_hub, tmp_path: Path):
    run = make_run(tmp_path / "run")
    url = push_to_hub(run, "me/fashion-student", private=True)
    assert url == "https://hub.example/me/fashion-student"
    (create, create_args), (upload, upload_args) = fake_hub.calls
    assert create == "create_repo" and create_args == {
        "repo_id": "me/fashion-student", "repo_type": "model", "private": True, "exist_ok": True}
    assert upload == "upload_folder" and upload_args["repo_id"] == "me/fashion-student"
    assert upload_args["folder_path"] == str(run / "timm") and upload_args["repo_type"] == "model"
    assert upload_args["files"] == ["README.md", CONFIG_FILE, WEIGHTS_FILE]


def test_push_errors_are_one_line(fake_hub, monkeypatch, tmp_path: Path):
    run = make_run(tmp_path / "run")
    fake_hub.fail = ConnectionError("Max retries exceeded\nwith url …")
    with pytest.raises(UserError, match="could not upload to the Hub repo me/x .*ConnectionError") as offline:
        push_to_hub(run, "me/x")
    assert "\n" not in str(offline.value)
    with pytest.raises(UserError, match="USER/NAME"):
        push_to_hub(run, "no-owner")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(UserError, match="needs huggingface_hub"):
        push_to_hub(run, "me/x")


def test_push_cli_never_writes_into_a_foreign_folder(tmp_path: Path):
    run = make_run(tmp_path / "run")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = run_in_process("train.py", ["push", str(run), "me/x", "--out", str(foreign)], tmp_path)
    assert_one_line_error(result, str(foreign), "did not write")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
