"""Teachers handed over as modules (amalgam.distil) rather than loaded from checkpoint files.

The ensemble and the feature methods call a teacher's `forward_features` / `forward_head`
(timm's split). A module that has them is used as it is; any other is wrapped so that its
features are the last 4-D activation its forward pass produces (caught with a forward hook)
and its head is the rest of that same pass. Such a wrapped head can only finish the pass it
started: it cannot classify other features, so methods that reuse teacher heads on the
student's projections (SimKD) are refused for it. A module with no 4-D activation at all
teaches through its logits only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.errors import UserError
from amalgam.models.model_input import ModelInput
from amalgam.tasks.spec import Roster


def has_timm_split(module: nn.Module) -> bool:
    return all(callable(getattr(module, name, None)) for name in ("forward_features", "forward_head"))


def last_map_module(module: nn.Module, example: torch.Tensor) -> str | None:
    """The name of the submodule whose output is the last 4-D tensor of a forward pass on
    `example`, or None when no submodule produces one (an MLP, a ViT's tokens). A map larger than
    1 x 1 wins over a later 1 x 1 one: like timm's forward_features, the features are the map
    before global pooling, not the pooled vector."""
    last: list[str] = []
    spatial: list[str] = []
    handles = []
    for name, child in module.named_modules():
        if not name:
            continue  # the module itself returns logits

        def hook(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                last.append(name)
                if output.shape[-2] * output.shape[-1] > 1:
                    spatial.append(name)

        handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    return (spatial or last or [None])[-1]


class HookedTeacher(nn.Module):
    """A plain classifier given timm's split: features are the activation of `map_module`
    (its last 4-D output); the head returns the logits of the pass that produced them."""

    def __init__(self, module: nn.Module, map_module: str, name: str):
        super().__init__()
        self.module = module
        self.map_module = map_module
        self.teacher_name = name
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (features, logits) of the last pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        target = self.module.get_submodule(self.map_module)
        handle = target.register_forward_hook(lambda _m, _i, output: caught.append(output))
        try:
            logits = self.module(x)
        finally:
            handle.remove()
        self._last = (caught[-1], logits)
        return caught[-1]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self._last is None or features is not self._last[0] or pre_logits:
            raise UserError(
                f"teacher {self.teacher_name!r} has no forward_head of its own, so its classifier cannot "
                "be reused on other features (SimKD does that); give it timm's forward_features/"
                "forward_head or choose another method"
            )
        logits = self._last[1]
        self._last = None
        return logits


@dataclass
class GivenTeachers:
    """Teachers as modules, in roster order, with the input each wants and a digest of each
    (what the teacher cache keys them by; None: by their checkpoint files)."""

    models: list[nn.Module]
    inputs: list[ModelInput]
    digests: list[str | None]
    with_features: list[bool]  # whether each has a feature map (timm's split or a hooked 4-D activation)
    reuses_heads: list[bool]  # whether each has a real forward_head (SimKD may reuse it)

    def ensemble(self, roster: Roster, device: torch.device) -> TeacherEnsemble:
        return TeacherEnsemble(list(self.models), list(self.inputs), roster).to(device)


def module_digest(module: nn.Module) -> str:
    """sha256 over a module's architecture (its repr) and every tensor of its state."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
        flat = tensor.detach().cpu().contiguous()
        digest.update(flat.reshape(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def prepare_teacher(module: nn.Module, name: str, example: torch.Tensor) -> tuple[nn.Module, bool, bool]:
    """(the module to run, whether it has feature maps, whether its own head can be reused).

    `example` is one prepared input batch, used only to find the last 4-D activation."""
    module = module.eval()
    if has_timm_split(module):
        return module, True, True
    map_module = last_map_module(module, example)
    if map_module is None:
        return module, False, False
    return HookedTeacher(module, map_module, name).eval(), True, False
