"""Any timm model as the student: a registry name, a local model folder, and the offline errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.errors import UserError
from amalgam.models.checkpoint import load_model
from amalgam.models.students import canonical_student, create_student
from tests.helpers.front_ends import TINY, assert_one_line_error, run_front_end, run_in_process

CE_TINY = [*TINY, "--method", "ce", "--epochs", "1"]


def test_a_timm_model_that_is_no_alias_trains_one_epoch(tmp_path: Path):
    """test_vit has a fixed input size: the student is built for the task's 32 px, and the
    saved card rebuilds it from the timm architecture alone."""
    out = tmp_path / "runs" / "vit"
    args = [*CE_TINY, "--model", "test_vit", "-b", "16", "--out", str(out)]
    result = run_in_process("train.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["student"] == "test_vit"
    model, card = load_model(out / "best")
    assert card.arch == "test_vit" and card.img_size == 32
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, len(card.classes))


def test_the_short_names_stay_aliases():
    assert canonical_student("EfficientNet") == "efficientnet"  # the reference app's spelling
    assert canonical_student("efficientnet_b0") == "efficientnet"  # its timm name
    assert canonical_student("mobilenetv3_small") == "mobilenetv3_small"
    assert canonical_student("resnet10t") == "resnet10t"  # any other timm name as it is
    assert canonical_student("resnet18.a1_in1k") == "resnet18.a1_in1k"  # with a pretrained tag
    assert canonical_student("hf-hub:timm/resnet10t.c3_in1k") == "hf-hub:timm/resnet10t.c3_in1k"


def test_an_unknown_name_is_one_line_with_close_matches():
    with pytest.raises(UserError) as caught:
        canonical_student("resnet19")
    message = str(caught.value)
    assert "\n" not in message and "'resnet19'" in message and "resnet18" in message
    assert "timm.list_models" in message


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> tuple[Path, dict]:
    """A folder in timm's own layout (config.json + model.safetensors), written by timm."""
    folder = tmp_path_factory.mktemp("folder") / "tiny_effnet"
    torch.manual_seed(3)
    source = timm.create_model("test_efficientnet", num_classes=10)
    save_for_hf(source, str(folder), safe_serialization=True)
    return folder, {k: v.clone() for k, v in source.state_dict().items()}


def test_a_local_folder_is_a_student(model_folder, tmp_path: Path):
    folder, weights = model_folder
    assert canonical_student(str(folder)) == f"local-dir:{folder.resolve()}"
    assert canonical_student(f"local-dir:{folder}") == f"local-dir:{folder.resolve()}"
    loaded = create_student(str(folder), 10, pretrained=True).state_dict()
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    fresh = create_student(str(folder), 10, pretrained=False).state_dict()  # timm: the architecture only
    assert fresh.keys() == weights.keys()
    assert not torch.equal(fresh["conv_stem.weight"], weights["conv_stem.weight"])

    settings = DistilSettings(
        task="fashion-mini", student=canonical_student(str(folder)), method="ce", pretrained=True,
        train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"), img_size=32, train_per_class=4,
    )
    run = distil(settings, out_dir=tmp_path / "run", root=tmp_path)
    assert json.loads((run.run_dir / "config.json").read_text())["student"] == f"local-dir:{folder.resolve()}"
    model, card = load_model(run.run_dir / "best")  # rebuilt from the card, without the folder
    assert card.arch == "test_efficientnet" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_folder_without_config_or_weights_is_refused(model_folder, tmp_path: Path):
    with pytest.raises(UserError, match="has no config.json"):
        canonical_student(str(tmp_path))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((model_folder[0] / "config.json").read_text())
    with pytest.raises(UserError) as caught:
        create_student(str(no_weights), 10, pretrained=True)
    assert "\n" not in str(caught.value) and "model.safetensors" in str(caught.value)


@pytest.mark.e2e  # a subprocess: the Hub reads HF_HUB_OFFLINE when it is imported
def test_offline_pretrained_is_one_line_on_placing_the_weights(tmp_path: Path, monkeypatch):
    """No network is tried: the Hub is offline and its cache is an empty folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = run_front_end("train.py", [*CE_TINY, "--student", "mobilenetv3_small", "--pretrained"], tmp_path)
    assert_one_line_error(
        result, "mobilenetv3_small_100", "timm/mobilenetv3_small_100", "--student FOLDER --pretrained",
        str(tmp_path / "hf"), "drop --pretrained",
    )
    assert not (tmp_path / "runs").exists()
