"""The one front door to a student network: any timm model, by name, Hub id or local folder.

`--student` takes what `timm.create_model` takes: a registry name (`resnet10t`,
`convnext_atto.d2_in1k`), `hf-hub:ORG/NAME`, or `local-dir:FOLDER` (a plain path to a folder
holding config.json and model.safetensors means the same). The four short names of earlier
versions (and the reference app's spellings) stay as aliases. `pretrained` means what it means in timm:
start from the weights the name points to (the registry's default tag, the Hub repo, the folder).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch.nn as nn

from amalgam.errors import UserError

STUDENTS = {
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "efficientnet": "efficientnet_b0",
    "resnet18": "resnet18",
}
CAS771_STUDENT_NAMES = {"MobileNetV3": "mobilenetv3", "EfficientNet": "efficientnet", "ResNet18": "resnet18"}
DEFAULT_STUDENT = "mobilenetv3_small"  # CPU-friendly; see README "Choosing defaults"
STUDENT_HELP = (
    "any timm model (resnet10t, convnext_atto, …), hf-hub:ORG/NAME, or a model folder "
    "(config.json + model.safetensors); short names: " + ", ".join(STUDENTS)
)
LOCAL_DIR, HF_HUB = "local-dir:", "hf-hub:"


def canonical_student(name: str) -> str:
    """The name a run saves: a short alias, a timm registry name, `hf-hub:…`, or `local-dir:<absolute>`.

    A folder is saved by absolute path so that a resumed run or a re-run from another working
    directory builds the same student.
    """
    key = CAS771_STUDENT_NAMES.get(name, name)
    if key in STUDENTS:
        return key
    if key in STUDENTS.values():
        return next(k for k, v in STUDENTS.items() if v == key)
    if key.startswith(("hf-hub:", "hf_hub:")):
        if not key.split(":", 1)[1].strip():
            raise UserError(f"--student {name!r} names no Hub repo; use hf-hub:ORG/NAME")
        return HF_HUB + key.split(":", 1)[1]
    if key.startswith(LOCAL_DIR):
        return LOCAL_DIR + str(_model_folder(key.removeprefix(LOCAL_DIR)))
    if timm.is_model(key):
        return key  # a registry name wins over a folder of the same name, as in timm
    if Path(key).is_dir():
        return LOCAL_DIR + str(_model_folder(key))
    if "/" in key or "\\" in key:
        raise UserError(
            f"--student {name!r}: no such folder; pass a folder holding config.json and model.safetensors, "
            f"or hf-hub:{key} for a Hugging Face Hub repo"
        )
    raise UserError(f"unknown student {name!r}; {_close_matches(key)}")


def _model_folder(path: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"--student local-dir:{path}: no such folder; pass a folder holding config.json")
    if not (folder / "config.json").is_file():
        raise UserError(
            f"--student {folder} has no config.json; a timm model folder holds config.json "
            "(with its architecture) and model.safetensors"
        )
    return folder


def _close_matches(name: str) -> str:
    """Names that look like `name`, as `timm.list_models('*name*')` and a spelling check find them."""
    known = dict.fromkeys([*STUDENTS, *CAS771_STUDENT_NAMES, *timm.list_models()])
    close = difflib.get_close_matches(name, list(known), n=4, cutoff=0.75)
    close += [m for m in timm.list_models(f"*{name}*") if m not in close][: 6 - len(close)]
    hint = f"close matches: {', '.join(close)}; " if close else ""
    return (
        f"{hint}any timm model name works (list them with "
        f"python -c \"import timm; print(timm.list_models('*{name[:6]}*'))\"), or hf-hub:ORG/NAME, "
        "or a model folder"
    )


def card_arch(name: str, model: nn.Module) -> str:
    """The architecture a checkpoint card records: a short alias as such, else the timm
    architecture the model was built as, so the card rebuilds it offline (no Hub id, no folder)."""
    key = CAS771_STUDENT_NAMES.get(name, name)
    if key in STUDENTS or key in STUDENTS.values():
        return canonical_student(key)  # never reads a folder: it may be gone by the time a card is written
    return str((getattr(model, "pretrained_cfg", None) or {}).get("architecture") or key)


def create_student(
    name: str, num_classes: int, pretrained: bool = False, img_size: int | None = None
) -> nn.Module:
    """Build the student through `timm.create_model`; `img_size` reaches models with a fixed
    input size (ViTs), whose position table must match the task's images."""
    canonical = canonical_student(name)
    arch = STUDENTS.get(canonical, canonical)
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
        size = model.pretrained_cfg.get("input_size", (0, 0, 0))[-1]
        if img_size and model.pretrained_cfg.get("fixed_input_size") and size != img_size:
            model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, img_size=img_size)
    except Exception as exc:  # hub/network/file failures surface as many exception types
        if not (pretrained or canonical.startswith(HF_HUB)):
            raise
        raise UserError(_no_weights(canonical, arch, exc, pretrained)) from exc
    return model


def _no_weights(canonical: str, arch: str, exc: Exception, pretrained: bool) -> str:
    """Why pretrained weights could not be had, and how to place them by hand."""
    reason = (str(exc).strip().splitlines() or [""])[0]
    reason = f"{type(exc).__name__}: {reason[:117] + '...' if len(reason) > 120 else reason}"
    if canonical.startswith(LOCAL_DIR):
        folder = canonical.removeprefix(LOCAL_DIR)
        return (f"could not load pretrained weights from {folder} ({reason}); put the model's "
                "model.safetensors beside its config.json, or drop --pretrained")
    from huggingface_hub.constants import HF_HUB_CACHE

    repo = canonical.removeprefix(HF_HUB) if canonical.startswith(HF_HUB) else _hub_id(arch)
    what = "pretrained weights" if pretrained else "the model's config.json"
    return (
        f"could not get {what} for {arch} ({reason}); offline, place "
        f"them by hand: put the Hub repo {repo}'s config.json and model.safetensors in a folder and pass "
        f"--student FOLDER --pretrained (or copy a cache that holds them to {HF_HUB_CACHE}), "
        "or drop --pretrained"
    )


def _hub_id(arch: str) -> str:
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # an odd name: the message still names the architecture
        cfg = None
    return (cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None) or f"timm/{arch}"
