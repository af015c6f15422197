"""A method made of other methods: its loss terms are all of its parts' terms.

`fitnet` is CE plus FitNet's hint term; `fitnet+kd` is `kd` plus the same hint term. Such a
combination is data, a name and a list of parts (`SumOfTerms`), registered beside the
single methods, so a new combination needs no new class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from amalgam.distill.methods.base import Capabilities, Method, MethodOptions, ReadsCapabilities
from amalgam.tasks.spec import Roster


@dataclass(frozen=True)
class SumOfTerms(ReadsCapabilities):
    """The recipe: called with (roster, options) like a method class, it builds the method.

    Parts must not share a loss-term name (that term would be counted twice, e.g. two CE
    terms), and at most one part may predict with something other than the student's head.
    """

    name: str
    parts: tuple[type[Method], ...]

    @property
    def capabilities(self) -> Capabilities:
        """The parts' classes' capabilities merged; a built method merges its parts' at its options."""
        return Capabilities.merged([part.capabilities for part in self.parts])

    def __call__(self, roster: Roster, options: MethodOptions) -> SummedMethod:
        return SummedMethod(self, [part(roster, options) for part in self.parts], roster, options)


class SummedMethod(Method):
    """The parts' loss terms merged into one dict, in the parts' order."""

    def __init__(self, recipe: SumOfTerms, parts: list[Method], roster: Roster, options: MethodOptions):
        super().__init__(roster, options)
        self.name = recipe.name
        self.capabilities = Capabilities.merged([part.capabilities for part in parts])
        self.parts = tuple(parts)  # a tuple, so not submodules: their helpers are adopted
        predictors = [part for part in parts if type(part).predict is not Method.predict]
        if len(predictors) > 1:
            raise ValueError(f"{recipe.name}: more than one part has its own predict")
        self.predictors = tuple(predictors)  # a tuple, so not a submodule either
        self._adopt_helpers()

    def _adopt_helpers(self) -> None:
        """The parts' helpers become this method's own children, so its saved state has the same
        keys (`regressors.0.weight`) as the part alone, and the trainer optimises and moves them;
        run when the parts are built and again once `setup` has built the rest."""
        helpers: dict[str, nn.Module] = {}
        for part in self.parts:
            for child_name, child in part.named_children():
                if child_name in helpers:
                    raise ValueError(f"{self.name}: two parts both have a {child_name!r}")
                helpers[child_name] = child
        for child_name, child in helpers.items():
            self.add_module(child_name, child)

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        for part in self.parts:
            part.setup(student_features, teacher_features, teachers)
        self._adopt_helpers()

    @property
    def fixed_targets(self) -> bool:
        # one part's targets only: `TeacherOutputs.targets` has room for one
        return sum(part.fixed_targets for part in self.parts) == 1

    def teacher_targets(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        if not self.fixed_targets:
            return super().teacher_targets(teacher_logits)
        return next(part for part in self.parts if part.fixed_targets).teacher_targets(teacher_logits)

    def fit_to_training_set(self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor | None = None,
                            labels: torch.Tensor | None = None) -> str | None:
        lines = [part.fit_to_training_set(teacher_logits, teacher_features, labels) for part in self.parts]
        return "; ".join(line for line in lines if line) or None

    def fit_to_validation(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> str | None:
        lines = [part.fit_to_validation(teacher_logits, labels) for part in self.parts]
        return "; ".join(line for line in lines if line) or None

    def observe_validation(self, per_class_accuracy: torch.Tensor) -> None:
        for part in self.parts:
            part.observe_validation(per_class_accuracy)

    def start_epoch(self, epochs_done: int) -> None:
        super().start_epoch(epochs_done)
        for part in self.parts:
            part.start_epoch(epochs_done)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            part_terms = part.loss_terms(student_logits, student_features, teacher, labels)
            shared = terms.keys() & part_terms.keys()
            if shared:
                raise ValueError(f"{self.name}: parts share the loss terms {sorted(shared)}")
            terms.update(part_terms)
        return terms

    def predict(self, student: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.predictors:
            return super().predict(student, x)
        return self.predictors[0].predict(student, x)
