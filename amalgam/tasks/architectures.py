"""The teacher architectures a task may name, as names only: a task never imports a model.

`amalgam.models` builds them: each registers its builder under one of these names
(`amalgam.models.registry`). Any timm model name is a teacher architecture too.
"""

from __future__ import annotations

COMPACT_CNNS = ("cnn-small", "cnn-medium", "cnn-large")
CAS771_CNN = "seed-cnn"  # the CAS771 reference app's teacher CNN (the name task files already use)
TEACHER_ARCHS = (*COMPACT_CNNS, CAS771_CNN)


def is_teacher_arch(name: str) -> bool:
    import timm  # on use only: reading a task file should not wait for timm unless it must

    return name in TEACHER_ARCHS or timm.is_model(name)
