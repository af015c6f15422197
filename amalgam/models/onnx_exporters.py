"""From a PyTorch student to an ONNX graph: the current exporter first, the legacy one as a fallback.

PyTorch's current exporter is `torch.onnx.export(..., dynamo=True)`, built on `torch.export`
(it needs onnxscript); the TorchScript-based one is deprecated along with TorchScript. The
dynamo exporter is used wherever it runs. Where it is missing (an old torch, no onnxscript) or
fails on a model, the TorchScript-based one writes the graph instead and one line says why,
so an export never fails for want of the newer tool. Both give a graph with input `image`
(batch axis dynamic) and output `logits`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.ui import say

OPSET = 18  # the dynamo exporter's own opset (it converts to others after the fact)
LEGACY_OPSET = 17  # what the TorchScript-based exporter wrote before; it writes any opset natively
DYNAMO_EXPORTER = "torch.onnx dynamo (torch.export)"
LEGACY_EXPORTER = "torch.onnx TorchScript-based (legacy)"
INSTALL_HINT = "pip install -e .[export]"


def dynamo_unavailable() -> str | None:
    """Why the current ONNX exporter cannot run here, or None when it can."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        return f"torch {torch.__version__} has no dynamo exporter"
    if importlib.util.find_spec("onnxscript") is None:
        return f"onnxscript is not installed ({INSTALL_HINT})"
    return None


def _dynamo_onnx(model: nn.Module, example: torch.Tensor):
    """ONNX by `torch.export`; the batch axis is declared dynamic, the rest is fixed."""
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model, (example,), None, dynamo=True, input_names=["image"], output_names=["logits"],
        dynamic_shapes=({0: batch},), opset_version=OPSET, verbose=False,
    )
    return program.model_proto


def _legacy_onnx(model: nn.Module, example: torch.Tensor):
    import onnx

    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model, (example,), str(raw), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=LEGACY_OPSET, **legacy,
        )
        return onnx.load(str(raw))


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"


def onnx_proto(model: nn.Module, example: torch.Tensor):
    """(onnx.ModelProto, exporter name): the dynamo exporter where it runs, else the legacy one.

    The exporters' progress chatter and warnings are swallowed: the user gets one line at
    most, and only when the fallback was taken.
    """
    reason = dynamo_unavailable()
    chatter = io.StringIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        if reason is None:
            try:
                return _dynamo_onnx(model, example), DYNAMO_EXPORTER
            except Exception as exc:  # torch.export raises many types for unsupported graphs
                reason = f"the dynamo exporter failed ({_first_line(exc)})"
        try:
            proto = _legacy_onnx(model, example)
        except Exception as exc:
            raise UserError(f"ONNX export failed ({reason}; then the legacy exporter: {_first_line(exc)}); "
                            "try --format torchscript") from exc
    say(f"note: ONNX written by the TorchScript-based exporter: {reason}")
    return proto, LEGACY_EXPORTER
