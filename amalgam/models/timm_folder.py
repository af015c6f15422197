"""A student as a folder in timm's pretrained layout, which timm and the Hugging Face Hub load.

`timm.create_model("local-dir:FOLDER", pretrained=True)` (or `"hf-hub:USER/REPO"` once the
folder is pushed) reads two files, and this module writes exactly those, in the shape timm's
own `save_for_hf` gives them (timm/models/_hub.py; read by `load_model_config_from_path`,
the same in every timm we support):

- `config.json`: `architecture` (a timm model name), `num_classes`, `label_names` (our
  classes, in logit order) and `pretrained_cfg` with the preprocessing: `input_size`,
  `mean`, `std`, `interpolation` and `crop_pct` 1.0 (we resize the whole image to the input
  size, never crop). Our provenance sits under an extra top-level `amalgam` key, which timm
  ignores and which marks the folder as ours.
- `model.safetensors`: the student's state_dict, keys as timm names them.

A README.md (the Hub's model card) says the same for people. The folder is written only when
it is new, empty or written by us before: a folder we did not create is never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import timm
import torch.nn as nn

from amalgam import __version__
from amalgam.errors import UserError
from amalgam.models.checkpoint import ModelCard, atomic_write_bytes, load_model, safetensors_writer
from amalgam.models.export import resolve_source
from amalgam.writable import check_writable

TIMM_FORMAT = "amalgam-timm/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MARKER = "amalgam"  # top-level key of config.json that says we wrote the folder


def default_folder(source: Path) -> Path:
    """RUN_DIR/timm for a run directory; STEM-timm beside a checkpoint stem."""
    stem, home = resolve_source(Path(source))
    return home / "timm" if Path(source).is_dir() else stem.with_name(f"{stem.name}-timm")


def is_our_folder(folder: Path) -> bool:
    """A folder whose config.json carries our marker: written by this module before."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and isinstance(config.get(MARKER), dict) \
        and config[MARKER].get("format") == TIMM_FORMAT


def check_writable_folder(folder: Path) -> None:
    """Refuse a file, or a non-empty folder that is not one of our timm exports."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; the timm format writes a folder, name a new one")
    if folder.is_dir() and any(folder.iterdir()) and not is_our_folder(folder):
        raise UserError(
            f"--out {folder} is a non-empty folder that `train.py export --format timm` did not write; "
            "name a new or empty folder (nothing there was touched)"
        )


def timm_architecture(model: nn.Module, card: ModelCard) -> str:
    """The timm model name that rebuilds the student; only timm-built students have one."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if card.kind != "student" or not isinstance(arch, str) or not timm.is_model(arch):
        raise UserError(
            f"{card.arch} ({card.kind}) is not a timm model, so timm cannot rebuild it; "
            "only students export to --format timm (use --format onnx for any model)"
        )
    return arch


def timm_config(model: nn.Module, card: ModelCard, arch: str, source: Path) -> dict:
    """config.json in the layout timm's `save_for_hf` writes and `load_model_config_from_path` reads."""
    own = model.pretrained_cfg
    pretrained_cfg = {
        "input_size": [card.in_chans, card.img_size, card.img_size],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": list(card.mean),
        "std": list(card.std),
        "num_classes": len(card.classes),
        "fixed_input_size": bool(own.get("fixed_input_size", False)),
    }
    for key in ("first_conv", "classifier", "license"):
        if own.get(key):
            pretrained_cfg[key] = own[key]
    return {
        "architecture": arch,
        "num_classes": len(card.classes),
        "num_features": int(getattr(model, "num_features", 0)) or None,
        "label_names": list(card.classes),
        "pretrained_cfg": pretrained_cfg,
        MARKER: {
            "format": TIMM_FORMAT,
            "version": __version__,
            "task": card.task,
            "source": str(source),
            "metrics": card.metrics,
            "trained_on": card.trained_on,
        },
    }


def model_card_text(config: dict) -> str:
    """README.md for the Hub: what the model predicts and how to load and feed it."""
    cfg, names = config["pretrained_cfg"], config["label_names"]
    size = cfg["input_size"]
    return (
        "---\nlibrary_name: timm\ntags:\n- image-classification\n- timm\n- amalgam\n---\n\n"
        f"# {config['architecture']} distilled by amalgam on task {config[MARKER]['task']}\n\n"
        f"{len(names)} classes, logits in this order: {', '.join(names)}.\n\n"
        f"Input: {size[0]} x {size[1]} x {size[2]} float images, RGB in [0, 1] resized (bilinear) to "
        f"{size[1]} x {size[2]}, then normalised per channel with mean {cfg['mean']} "
        f"and std {cfg['std']}.\n\n"
        "```python\nimport timm\n"
        'model = timm.create_model("hf-hub:USER/REPO", pretrained=True).eval()  # or "local-dir:FOLDER"\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**config)\n"
        'names = model.pretrained_cfg["label_names"]\n```\n'
    )


def write_timm_folder(source: Path, out: Path | None = None) -> Path:
    """Write the student of a run directory (its `best`) or of a checkpoint stem; return the folder."""
    stem, _ = resolve_source(Path(source))
    folder = Path(out) if out is not None else default_folder(source)
    check_writable_folder(folder)
    check_writable(folder, "the timm folder")
    model, card = load_model(stem)
    arch = timm_architecture(model, card)
    config = timm_config(model, card, arch, stem)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    new = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # weights first, config last: a folder whose config names us always has its weights
        atomic_write_bytes(folder / WEIGHTS_FILE, safetensors_writer(tensors, {"format": "pt"}))
        card_text = model_card_text(config)
        atomic_write_bytes(folder / CARD_FILE, lambda p: p.write_text(card_text, encoding="utf-8"))
        text = json.dumps(config, indent=2)
        atomic_write_bytes(folder / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    except BaseException:
        if new:  # a full disk half-way: no half folder is left for a later push to upload
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder
