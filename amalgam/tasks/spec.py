"""What a task is: a class list, a roster of partial teachers, and where its data lives.

Class sets are data: every teacher names its classes in local order and the mapping into
the task's global classes is derived here once, as index tensors, so the distillation code
never loops over samples or compares names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from amalgam.errors import UserError

CAS771_FORMAT = "cas771"  # the CAS771 reference app's bare state_dict files
TEACHER_FORMATS = ("amalgam", CAS771_FORMAT)
FORMAT_ALIASES = {"seed": CAS771_FORMAT}  # the spelling the docs used first; still accepted
# The student's input size when a task's images are smaller and it names no student_img_size:
# MobileNetV3, EfficientNet and ResNet downsample 32x, so at 32 px their last map is 1x1.
# On `fashion` 56 px beat 32 px for CE and for KD (README, "Choosing defaults").
MIN_STUDENT_SIZE = 56


@dataclass(frozen=True)
class TeacherSpec:
    """One partial teacher: its classes (local order), architecture and checkpoint stem."""

    name: str
    classes: tuple[str, ...]
    arch: str = "cnn-small"
    checkpoint: str | None = None  # stem or file; None means checkpoints/<task>/<name>
    format: str = "amalgam"  # "amalgam" (safetensors + card) or "cas771" (the reference app's bare .pth)


@dataclass(frozen=True)
class DataSpec:
    """Where a task's images come from; `kind` selects the reader in `amalgam.tasks.readers`."""

    kind: str  # "fashion-mini" | "fashion-idx" | "cas771-pth" | "folder"
    root: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A whole task; validated on construction so every command can trust it."""

    name: str
    classes: tuple[str, ...]
    teachers: tuple[TeacherSpec, ...]
    data: DataSpec
    img_size: int = 32  # teachers' input size, and the student's unless student_img_size says otherwise
    channels: int = 3
    description: str = ""
    source: str = "built-in"
    student_img_size: int | None = None  # chosen by measurement where it differs (see README)
    aliases: tuple[str, ...] = ()  # other names `--task` accepts (TaskA and a for A)
    dir_name: str = ""  # its folder under checkpoints/, runs/, evaluation/, .cache/; default: name
    released_assets: tuple[str, ...] = ()  # release-manifest assets it ships with; graded by default
    # where trained teachers live under checkpoints/<dir_name>/ ("": there); set by a teacher
    # recipe (amalgam/tasks/teacher_recipes.py) so stronger teachers never replace today's
    teacher_folder: str = ""

    def __post_init__(self) -> None:
        if not self.dir_name:
            object.__setattr__(self, "dir_name", self.name)
        validate_roster(self)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that selects this task: its own, then its aliases."""
        return (self.name, *self.aliases)

    @property
    def student_input_size(self) -> int:
        return self.student_img_size or self.img_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def teacher_global_indices(self, teacher: TeacherSpec) -> list[int]:
        position = {name: i for i, name in enumerate(self.classes)}
        return [position[c] for c in teacher.classes]

    def roster(self) -> Roster:
        return Roster.from_spec(self)


def validate_roster(spec: TaskSpec) -> None:
    """Reject rosters that cannot be distilled, naming the offending teacher or class."""
    if not spec.classes:
        raise UserError(f"task {spec.name!r} has no classes; list them under `classes`")
    if len(set(spec.classes)) != len(spec.classes):
        dupes = sorted({c for c in spec.classes if spec.classes.count(c) > 1})
        raise UserError(f"task {spec.name!r} lists class(es) {dupes} twice; keep each once")
    if not spec.teachers:
        raise UserError(f"task {spec.name!r} has no teachers; add at least one [[teacher]]")
    names = [t.name for t in spec.teachers]
    if len(set(names)) != len(names):
        raise UserError(f"task {spec.name!r} has two teachers with the same name; rename one")
    known = set(spec.classes)
    covered: set[str] = set()
    for teacher in spec.teachers:
        if len(teacher.classes) < 2:
            raise UserError(
                f"teacher {teacher.name!r} of task {spec.name!r} has fewer than 2 classes; "
                "a classifier needs at least two"
            )
        unknown = [c for c in teacher.classes if c not in known]
        if unknown:
            raise UserError(
                f"teacher {teacher.name!r} names class(es) {unknown} that task {spec.name!r} "
                f"does not have; use names from {list(spec.classes)}"
            )
        if len(set(teacher.classes)) != len(teacher.classes):
            raise UserError(f"teacher {teacher.name!r} lists a class twice; keep each once")
        covered.update(teacher.classes)
    missing = [c for c in spec.classes if c not in covered]
    if missing:
        raise UserError(
            f"class(es) {missing} of task {spec.name!r} are covered by no teacher; "
            "add them to a teacher's class list"
        )
    if min(spec.img_size, spec.student_input_size) < 8:
        raise UserError(f"img_size {min(spec.img_size, spec.student_input_size)} is too small; "
                        "use at least 8 pixels")


@dataclass(frozen=True)
class Roster:
    """Index tensors that place each teacher's local outputs into task space.

    `local_to_global[k, j]` is the global index of teacher k's j-th class (padded with 0
    where `local_mask[k, j]` is False, for teachers with fewer classes than the widest);
    `coverage[k, c]` says whether teacher k knows global class c.
    """

    local_to_global: torch.Tensor  # [K, L] int64
    local_mask: torch.Tensor  # [K, L] bool
    coverage: torch.Tensor  # [K, C] bool
    teacher_names: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> Roster:
        width = max(len(t.classes) for t in spec.teachers)
        k = len(spec.teachers)
        local_to_global = torch.zeros(k, width, dtype=torch.long)
        local_mask = torch.zeros(k, width, dtype=torch.bool)
        coverage = torch.zeros(k, spec.num_classes, dtype=torch.bool)
        for i, teacher in enumerate(spec.teachers):
            idx = torch.tensor(spec.teacher_global_indices(teacher), dtype=torch.long)
            local_to_global[i, : len(idx)] = idx
            local_mask[i, : len(idx)] = True
            coverage[i, idx] = True
        return cls(local_to_global, local_mask, coverage, tuple(t.name for t in spec.teachers))

    @property
    def num_teachers(self) -> int:
        return self.local_to_global.shape[0]

    @property
    def num_classes(self) -> int:
        return self.coverage.shape[1]

    def to(self, device: torch.device | str) -> Roster:
        return Roster(
            self.local_to_global.to(device),
            self.local_mask.to(device),
            self.coverage.to(device),
            self.teacher_names,
        )


def resolve_checkpoint_stem(spec: TaskSpec, teacher: TeacherSpec, root: Path) -> Path:
    """Where a teacher's checkpoint lives: its own path if given, else the task's default."""
    if teacher.checkpoint:
        path = Path(teacher.checkpoint)
        return path if path.is_absolute() else root / path
    return root / "checkpoints" / spec.dir_name / spec.teacher_folder / teacher.name
