"""Teacher architectures by name: each one registers its builder, as timm's `register_model`.

A module that defines an architecture decorates its builder with `@register_teacher(name)`;
`amalgam.models` imports every such module, so the registry is full as soon as any model
module is imported, and no module has to import the others to find one (which is what kept
checkpoint → teacher architectures → CAS771 format → checkpoint in a cycle). The names themselves are
declared in `amalgam.tasks.architectures`, so a task can name an architecture without
importing models; registering an undeclared name fails at import.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from amalgam.tasks.architectures import TEACHER_ARCHS

# (num_classes, in_chans) → an untrained model
TeacherBuilder = Callable[[int, int], nn.Module]

_TEACHERS: dict[str, TeacherBuilder] = {}


def register_teacher(name: str) -> Callable[[TeacherBuilder], TeacherBuilder]:
    if name not in TEACHER_ARCHS:
        raise ValueError(f"teacher architecture {name!r} is not declared in amalgam.tasks.architectures")

    def register(build: TeacherBuilder) -> TeacherBuilder:
        if name in _TEACHERS:
            raise ValueError(f"teacher architecture {name!r} is registered twice")
        _TEACHERS[name] = build
        return build

    return register


def teacher_builder(name: str) -> TeacherBuilder | None:
    """The registered builder for `name`, or None (a timm name, or no architecture at all)."""
    return _TEACHERS.get(name)


def registered_teachers() -> tuple[str, ...]:
    return tuple(sorted(_TEACHERS))
