"""More teachers for one run: a trained model, such as an earlier run's student, joins the task's.

This is how a second round of label-free distillation (self-training) is run: the first round's
student knows every class, so it can teach beside the partial teachers, or alone with
`--extra-teacher-only`. The task itself is not changed; each run records its extra teachers in
config.json (by absolute path, so a resume finds them) and in its roster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from amalgam.errors import UserError
from amalgam.models.checkpoint import checkpoint_files, read_card
from amalgam.models.export import resolve_source
from amalgam.tasks.spec import TaskSpec, TeacherSpec

EXTRA_PREFIX = "extra_"  # extra teachers are named extra_1, extra_2, … in rosters and reports
FLAG = "--extra-teacher"


def extra_teacher_stem(source: str | Path) -> Path:
    """The absolute checkpoint stem a run folder (its best student) or a checkpoint names."""
    try:
        stem, _ = resolve_source(Path(source).expanduser())
    except UserError as exc:
        raise UserError(f"{FLAG} {source}: {exc}") from exc
    weights = checkpoint_files(stem)[0]
    if not weights.is_file():
        raise UserError(f"{FLAG} {source}: {weights} is missing; pass a complete checkpoint")
    return stem.resolve()


def resolve_extra_teachers(sources: Sequence[str], only: bool = False) -> tuple[str, ...]:
    """What a run records: each source's absolute checkpoint stem, checked to exist."""
    if only and not sources:
        raise UserError(f"--extra-teacher-only needs at least one {FLAG}")
    return tuple(str(extra_teacher_stem(source)) for source in sources)


def extra_teacher_name(number: int) -> str:
    """The roster name of the `number`-th extra teacher (from 1), as rosters and reports show it."""
    return f"{EXTRA_PREFIX}{number}"


def with_extra_teachers(spec: TaskSpec, sources: Sequence[str], only: bool = False) -> TaskSpec:
    """`spec` with one more teacher per source, its classes read from the model's card; with
    `only`, those teachers replace the task's own."""
    stems = resolve_extra_teachers(sources, only)
    if not stems:
        return spec
    added = []
    for number, (source, stem) in enumerate(zip(sources, stems, strict=True), 1):
        card = read_card(stem)
        unknown = [name for name in card.classes if name not in spec.classes]
        if unknown:
            raise UserError(
                f"{FLAG} {source} knows {unknown}, which task {spec.name} does not have; "
                "pass a model trained on this task's classes"
            )
        added.append(TeacherSpec(extra_teacher_name(number), tuple(card.classes), card.arch, stem))
    if only:
        known = {name for teacher in added for name in teacher.classes}
        unknown = [name for name in spec.classes if name not in known]
        if unknown:
            raise UserError(
                f"--extra-teacher-only: no extra teacher knows {unknown}; add one that does, "
                "or drop --extra-teacher-only to keep the task's teachers"
            )
    own = () if only else spec.teachers
    clash = {t.name for t in own} & {t.name for t in added}
    if clash:
        raise UserError(
            f"task {spec.name} already has a teacher named {sorted(clash)[0]}; rename it in the task file"
        )
    return replace(spec, teachers=(*own, *added))
