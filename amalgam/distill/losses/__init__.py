"""Every target and loss of the distillation methods, as pure functions over tensors.

No modules, no state, no options objects: plain tensors and numbers in, tensors out, so
each rule can be checked by hand (tests/test_methods.py, tests/test_ensemble.py). Split by
job: where teachers' outputs sit in task space, the targets built from them, the losses
on logits, and the losses on feature maps. The methods (amalgam/distill/methods/) are thin
classes that read their options and call these.
"""

from __future__ import annotations

from amalgam.distill.losses.amalgamation import (
    CFL_SIGMAS,
    least_ambiguous_targets,
    least_ambiguous_teacher,
    mmd_multi_kernel,
    teacher_ambiguity,
)
from amalgam.distill.losses.class_balance import apply_class_weights, balancing_log_weights
from amalgam.distill.losses.features import common_size, hint_loss, match_spatial, simkd_loss
from amalgam.distill.losses.logits import (
    dkd_loss,
    kd_loss,
    partial_kd_loss,
    soft_cross_entropy,
    student_in_teacher_spaces,
)
from amalgam.distill.losses.targets import (
    confidence_weights,
    covering_average_targets,
    filtered_covering_targets,
    partial_teacher_weights,
)
from amalgam.distill.losses.task_space import (
    correct_teachers,
    covering_teachers,
    masked_local_softmax,
    place_in_task_space,
)
from amalgam.distill.losses.uhc import uhc_union_probs

__all__ = [
    "CFL_SIGMAS", "least_ambiguous_targets", "least_ambiguous_teacher", "mmd_multi_kernel",
    "teacher_ambiguity", "apply_class_weights", "balancing_log_weights",
    "common_size", "confidence_weights", "correct_teachers", "covering_average_targets",
    "covering_teachers", "dkd_loss", "filtered_covering_targets", "hint_loss", "kd_loss",
    "masked_local_softmax", "match_spatial", "partial_kd_loss", "partial_teacher_weights",
    "place_in_task_space", "simkd_loss", "soft_cross_entropy", "student_in_teacher_spaces",
    "uhc_union_probs",
]
