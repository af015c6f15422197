"""Knowledge amalgamation without labels: KL to the teachers combined over the union.

The target is the "Unifying Heterogeneous Classifiers" combination of every teacher
(`uhc_union_probs`), softened at `--temperature`; there is no cross-entropy term, so the
loss reads no label and the method trains on unlabeled images and with `--labels none`.
`fitnet+amalgam-kd` adds FitNet's hints, which need no labels either. With
`--class-prior uniform` the combination is first balanced over the training set
(losses/class_balance.py): one weight per class, fitted at start-up on the whole set. With
`--target-neighbours K` each training image's target is fixed at start-up instead: the mean of
the (balanced) plain-view combination over its K nearest training images in the teachers'
features (losses/neighbours.py), softened at T as p^(1/T); the view the student sees changes
only its input, as a label would. `--hard-target-weight W` adds W times the cross-entropy to
the target's top class (hard distillation, Touvron et al., DeiT, 2021).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from amalgam.distill.losses import soft_cross_entropy, uhc_union_probs
from amalgam.distill.losses.class_balance import fit_class_prior, with_fitted_prior
from amalgam.distill.losses.gated import gated_targets, teacher_gates
from amalgam.distill.losses.neighbours import exact_search, nearest_neighbours, neighbour_mean, soften
from amalgam.distill.methods.base import Capabilities, Method, MethodOptions, register_method
from amalgam.distill.methods.dkd import warmup_factor
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.errors import UserError

# `--target-gate student`: the share of the target the student-gated teachers take (see `student_gated`)
GATED_SHARE = 0.5


@register_method
class AmalgamKD(Method):
    name = "amalgam-kd"
    capabilities = Capabilities(options_used=("temperature", "class_prior", "target_neighbours",
                                              "target_gate", "gate_warmup", "hard_target_weight"),
                                needs_labels=False)

    def __init__(self, roster, options):
        super().__init__(roster, options)
        self.class_log_weights: torch.Tensor | None = None  # set by fit_to_training_set
        self.image_targets: torch.Tensor | None = None  # [N, C] at T = 1, ditto (--target-neighbours)

    def combined(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The teachers' answers as one distribution over the union; label-free methods differ here."""
        return uhc_union_probs(teacher_logits, self.roster, temperature)

    @property
    def fixed_targets(self) -> bool:
        # with --target-neighbours the targets are fixed per image at start-up already
        return self.options.target_neighbours == 0

    def teacher_targets(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The combination at the run's temperature, before the class prior: the class weights
        are fitted after the teachers' cache is built, and cheap to apply per batch."""
        return self.combined(teacher_logits, self.options.temperature)

    @classmethod
    def capabilities_at(cls, options: MethodOptions) -> Capabilities:
        # a class prior and neighbour targets are fitted at start-up; neighbours beyond the image
        # itself are found in the teachers' features
        return replace(cls.capabilities,
                       fits_training_set=options.class_prior != "none" or options.target_neighbours > 0,
                       fit_reads_features=options.target_neighbours > 1,
                       fit_per_image=options.target_neighbours > 0)

    def fit_to_training_set(self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor | None = None,
                            labels: torch.Tensor | None = None) -> str | None:
        if not self.fits_training_set:
            return None
        probs = self.over_blocks(lambda block: self.combined(block, 1.0), teacher_logits)
        lines = []
        if self.options.class_prior != "none":
            self.class_log_weights, probs, line = fit_class_prior(probs, self.options.class_prior, labels)
            lines.append(line)
        k = self.options.target_neighbours
        if k > 0:
            if k > len(probs):
                raise UserError(f"--target-neighbours {k} is more than the {len(probs)} training images; "
                                "choose a smaller K")
            if k > 1:
                if teacher_features is None:
                    raise RuntimeError(f"{self.name}: --target-neighbours {k} needs the teachers' features")
                probs = neighbour_mean(probs, nearest_neighbours(teacher_features, k))
            self.image_targets = probs
            search = ""
            if k > 1 and not exact_search(*teacher_features.shape):
                search = " (found approximately: too many images to compare every pair)"
            lines.append(f"target neighbours {k}: each training image's target fixed at start-up"
                         + (f", the mean over its {k} nearest in the teachers' features{search}"
                            if k > 1 else ""))
        return "; ".join(lines)

    def targets(self, teacher_logits: torch.Tensor, temperature: float,
                combined: torch.Tensor | None = None) -> torch.Tensor:
        """The distribution over the union the student is pulled to, from the teachers on a view
        (`combined`: their combination at `temperature`, when already computed)."""
        probs = self.combined(teacher_logits, temperature) if combined is None else combined
        if self.options.class_prior == "none":
            return probs
        return with_fitted_prior(probs, self.class_log_weights, temperature, self.name)

    def image_targets_at(self, index: torch.Tensor | None, temperature: float) -> torch.Tensor:
        """The targets fixed at start-up (`--target-neighbours`) of training images `index`, softened."""
        if self.image_targets is None or index is None:
            raise RuntimeError(f"{self.name}: --target-neighbours is fitted at start-up and needs "
                               "the batch's training-set indices")
        return soften(self.image_targets[index.to(self.image_targets.device)], temperature)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        t = self.options.temperature
        if self.options.target_neighbours > 0:
            target = self.image_targets_at(teacher.index, t).to(student_logits.device)
        else:
            target = self.targets(teacher.logits, t, teacher.targets)
        if self.options.target_gate == "student":
            target = self.student_gated(target, student_logits.detach(), teacher.logits)
        terms = {"loss_kd": soft_cross_entropy(student_logits, target, t)}
        if self.options.hard_target_weight > 0:
            # the top class as a label (DeiT's hard distillation): the soft term at T spreads its
            # pull over every class the teachers half-believe; this one commits to their answer
            hard = F.cross_entropy(student_logits, target.argmax(dim=1))
            terms["loss_hard_target"] = self.options.hard_target_weight * hard
        return terms

    def student_gated(self, target: torch.Tensor, student_logits: torch.Tensor,
                      teacher_logits: torch.Tensor) -> torch.Tensor:
        """`--target-gate student` (losses/gated.py): half the teachers combined, half each teacher
        weighed by the mass on its classes of the student's prediction, blended in from the
        combination's own over `--gate-warmup` epochs, since an untrained student knows nothing of
        whose image it is. The half kept matters: gated by the student alone, the target's split
        between teachers is the student's own, nothing corrects it, and on validation rosters 100
        and 101 the student fell 6.3 and 1.9 points (docs/benchmarks/quality.md)."""
        share = warmup_factor(self.epochs_done, self.options.gate_warmup)
        plain = target.float()
        guide = (1.0 - share) * plain + share * torch.softmax(student_logits.float(), dim=1)
        gated = gated_targets(teacher_logits, teacher_gates(guide, self.roster), self.roster,
                              self.options.temperature)
        return (GATED_SHARE * gated + (1.0 - GATED_SHARE) * plain).to(target.dtype)


register_method(SumOfTerms("fitnet+amalgam-kd", (AmalgamKD, FitNetHints)))
