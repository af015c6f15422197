"""Ship a student as one self-describing file (ONNX or TorchScript), and read such files back.

(`--format timm`, a folder in timm's pretrained layout, is written by models/timm_folder.py.)

A deployed model is useless without its class names and preprocessing, and a file that
needs our checkpoint card beside it is not deployable, so both travel inside the file:

- ONNX: `model.metadata_props["amalgam"]` (read with onnxruntime's `custom_metadata_map`);
- TorchScript: the extra file `amalgam.json` (`torch.jit.load(..., _extra_files=...)`).

Input contract, the same for both formats: a float32 tensor `image` of shape
[batch, in_chans, img_size, img_size], holding RGB values in [0, 1] resized to img_size
(bilinear) and normalised per channel as `(x - mean) / std` with the stored mean and std;
the batch axis is dynamic. Output: `logits` [batch, len(classes)], columns in `classes`
order. Preprocessing stays outside the graph so the exported logits match the PyTorch
student's to float rounding, and each runtime can resize images its own way.

ONNX goes through PyTorch's current exporter (`torch.onnx.export(..., dynamo=True)`, built on
`torch.export`, which needs onnxscript). Where that exporter is missing (an old torch, no
onnxscript) or fails on a model, the TorchScript-based one writes the file instead and one
line says why; the metadata's `exporter` field records which one wrote it.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.models.checkpoint import (
    ModelCard,
    atomic_write_bytes,
    checkpoint_files,
    checkpoint_stem,
    load_model,
)
from amalgam.models.model_input import ModelInput
from amalgam.models.onnx_exporters import INSTALL_HINT, onnx_proto
from amalgam.writable import check_writable

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
FOLDER_FORMATS = ("timm",)  # a folder, not a file: models/timm_folder.py
EXPORT_FORMAT = "amalgam-export/1"
METADATA_KEY = "amalgam"  # ONNX metadata_props key
EXTRA_FILE = "amalgam.json"  # TorchScript extra file


def resolve_source(source: Path) -> tuple[Path, Path]:
    """(checkpoint stem, folder for default outputs) for a run directory or a checkpoint stem."""
    source = Path(source)
    if source.is_dir():
        stem = source / "best"
        if not all(file.exists() for file in checkpoint_files(stem)):
            raise UserError(
                f"{source} has no best student (best.json + best.safetensors); train into it "
                "first or pass a checkpoint stem such as RUN_DIR/last"
            )
        return stem, source
    stem = checkpoint_stem(source)
    if not checkpoint_files(stem)[1].exists():
        raise UserError(f"{source} is neither a run directory nor a checkpoint; check the path")
    return stem, stem.parent


def export_metadata(card: ModelCard, params: int, source: Path) -> dict:
    """What a deployer needs to feed the file and name its outputs."""
    return {
        "format": EXPORT_FORMAT,
        "kind": card.kind,
        "arch": card.arch,
        "task": card.task,
        "classes": list(card.classes),
        "img_size": card.img_size,
        "in_chans": card.in_chans,
        "mean": list(card.mean),
        "std": list(card.std),
        "params": params,
        "input": (
            f"float32 image [batch, {card.in_chans}, {card.img_size}, {card.img_size}]: RGB in [0, 1], "
            "resized bilinearly, then (x - mean) / std per channel"
        ),
        "output": "float32 logits [batch, len(classes)], columns in `classes` order",
        "metrics": card.metrics,
        "source": str(source),
    }


def export_student(source: Path, fmt: str = "onnx", out: Path | None = None) -> Path:
    """Write the student of a run directory (its `best`) or of a checkpoint stem; return the file.

    Defaults: RUN_DIR/student.onnx or RUN_DIR/student.pt; for a stem, the file beside it.
    """
    if fmt not in FORMATS:
        formats = ", ".join(sorted([*FORMATS, *FOLDER_FORMATS]))
        raise UserError(f"--format must be one of: {formats}; got {fmt!r}")
    suffix = FORMATS[fmt]
    stem, home = resolve_source(Path(source))
    if out is None:
        out = home / f"student{suffix}" if Path(source).is_dir() else stem.with_name(stem.name + suffix)
    elif out.suffix != suffix:
        raise UserError(f"--out must end in {suffix} for --format {fmt} (graders tell formats by suffix)")
    check_export_target(out)
    model, card = load_model(stem)
    model = model.cpu().eval()
    params = sum(p.numel() for p in model.parameters())
    metadata = export_metadata(card, params, stem)
    # Batch of two: a batch of one lets tracing bake size-1 shapes into reshapes.
    shape = (2, card.in_chans, card.img_size, card.img_size)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        _write_onnx(model, example, metadata, out)
    else:
        _write_torchscript(model, example, metadata, out)
    return out


def check_export_target(out: Path) -> None:
    """Refuse, before exporting, a target that is a folder, or a file `train.py export` did not
    write (a user's own model.pt must never be replaced), or a folder that cannot be written."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the file to write")
    if out.exists() and not written_by_export(out):
        raise UserError(
            f"--out {out} already exists and was not written by `train.py export`; name a new file "
            "(nothing was replaced)"
        )
    check_writable(out.parent, "the exported file")


def written_by_export(path: Path) -> bool:
    """Whether `path` is a file this command wrote (it carries our metadata), so replacing it
    loses nothing the user made."""
    try:
        read_export_metadata(path)
    except Exception:  # a foreign file fails in onnx's or zipfile's own way
        return False
    return True


def _write_onnx(model: nn.Module, example: torch.Tensor, metadata: dict, target: Path) -> None:
    try:
        import onnx  # noqa: F401  (both exporters hand back onnx protos)
    except ImportError as exc:
        raise UserError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from exc
    proto, exporter = onnx_proto(model, example)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({**metadata, "exporter": exporter}, indent=2)
    proto.doc_string = "amalgam student; see metadata_props['amalgam'] for classes and preprocessing"
    atomic_write_bytes(target, lambda p: p.write_bytes(proto.SerializeToString()))


def _write_torchscript(model: nn.Module, example: torch.Tensor, metadata: dict, target: Path) -> None:
    # Tracing, not scripting: timm's models are not all scriptable, and a CNN's graph has no
    # data-dependent control flow for tracing to miss. PyTorch marks TorchScript deprecated
    # (README, `train.py export`): kept for LibTorch users and files already shipped.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        extra = {EXTRA_FILE: json.dumps({**metadata, "exporter": "torch.jit.trace"}, indent=2)}
        buffer = io.BytesIO()  # torch.jit.save into a file on a full disk aborts the process
        torch.jit.save(traced, buffer, _extra_files=extra)
        atomic_write_bytes(target, lambda p: p.write_bytes(buffer.getvalue()))


# --- reading exported files back ----------------------------------------------------------


def _parse_metadata(text: str | bytes, where: Path) -> dict:
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where} has corrupt amalgam metadata ({exc}); export it again") from exc
    missing = [k for k in ("classes", "img_size", "mean", "std") if k not in meta]
    if missing:
        raise UserError(f"{where} metadata lacks {missing}; export it again with `train.py export`")
    return meta


def _torchscript_entry(path: Path) -> str | None:
    """The archive member holding our metadata, if `path` is a TorchScript file we wrote."""
    try:
        with zipfile.ZipFile(path) as archive:
            return next((n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")), None)
    except (zipfile.BadZipFile, OSError):
        return None


def is_exported_file(path: Path) -> bool:
    """An .onnx file, or a .pt/.pth TorchScript archive carrying amalgam.json (no bare state_dict)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return True
    return path.suffix in (".pt", ".pth") and path.is_file() and _torchscript_entry(path) is not None


def read_export_metadata(path: Path) -> dict:
    """The metadata stored in an exported file, without building a runtime session."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported file {path} does not exist; run `python train.py export RUN_DIR`")
    if path.suffix == ".onnx":
        try:
            import onnx
        except ImportError as exc:
            raise UserError(f"reading ONNX metadata needs the onnx package; {INSTALL_HINT}") from exc
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise UserError(f"{path} carries no amalgam metadata; export it with `train.py export`")
        return _parse_metadata(props[METADATA_KEY], path)
    entry = _torchscript_entry(path)
    if entry is None:
        raise UserError(f"{path} is not a TorchScript file written by `train.py export`")
    with zipfile.ZipFile(path) as archive:
        return _parse_metadata(archive.read(entry), path)


class OnnxPredictor(nn.Module):
    """Runs an ONNX file with onnxruntime behind the `module(x) -> logits` call PyTorch code uses.

    It has no parameters, so `.to(device)` is a no-op: inputs go to the CPU for onnxruntime and
    the logits come back on the caller's device.
    """

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError(f"running an .onnx file needs onnxruntime; {INSTALL_HINT}") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's problem
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"onnxruntime cannot load {path} ({type(exc).__name__}); re-export it") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)


def load_exported(
    path: Path, expected_classes: list[str] | tuple[str, ...] | None = None, threads: int | None = None
) -> tuple[nn.Module, ModelInput, int]:
    """(predictor, input recipe, parameter count) for an exported file, its classes checked.

    `threads` caps onnxruntime's intra-op threads (default: its own choice, all cores).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported file {path} does not exist; run `python train.py export RUN_DIR`")
    if path.suffix == ".onnx":
        predictor: nn.Module = OnnxPredictor(path, threads)
        if METADATA_KEY not in predictor.metadata:
            raise UserError(f"{path} carries no amalgam metadata; export it with `train.py export`")
        meta = _parse_metadata(predictor.metadata[METADATA_KEY], path)
    else:
        meta = read_export_metadata(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = torch.jit.load(str(path), map_location="cpu")
    if expected_classes is not None and list(expected_classes) != list(meta["classes"]):
        raise UserError(
            f"{path} predicts classes {meta['classes']}, but the task expects {list(expected_classes)}; "
            "grade it on the task it was trained for"
        )
    model_input = ModelInput(
        meta["img_size"], tuple(meta["mean"]), tuple(meta["std"]), meta.get("in_chans", 3)
    )
    params = int(meta.get("params") or sum(p.numel() for p in predictor.parameters()))
    return predictor.eval(), model_input, params
