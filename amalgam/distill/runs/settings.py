"""What a run is: its settings, saved as config.json and read back by --resume."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import MethodOptions
from amalgam.distill.runs.folders import STATE_FILE
from amalgam.distill.teachers.extra import with_extra_teachers
from amalgam.errors import UserError
from amalgam.tasks.builtin import get_task
from amalgam.tasks.roster_draw import roster_record
from amalgam.tasks.spec import TaskSpec
from amalgam.tasks.teacher_recipes import DEFAULT_TEACHER_RECIPE, with_teacher_recipe

RECORD_ONLY_KEY = "roster"  # in config.json for people to read; not a setting
IN_MEMORY_TASK = "in-memory:"  # `task` of a run whose data and teachers were given in Python


@dataclass(frozen=True)
class DistilSettings:
    """One run, fully described; saved as config.json and read back by --resume."""

    task: str
    student: str
    method: str
    method_options: MethodOptions = field(default_factory=MethodOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    img_size: int | None = None
    val_fraction: float = 0.1
    train_per_class: int | None = None
    data_dir: str | None = None
    pretrained: bool = False
    run_name: str = ""
    checkpoint_every: int = 0  # steps between mid-epoch state saves; 0 = at epoch ends only
    log: str = "none"  # per-epoch metrics to an experiment tracker: none or tensorboard
    extra_teachers: tuple[str, ...] = ()  # absolute checkpoint stems of models teaching beside the task's
    extra_teachers_only: bool = False  # they teach alone (a second round from the first's student)
    teacher_recipe: str = DEFAULT_TEACHER_RECIPE  # which trained teachers (amalgam/tasks/teacher_recipes.py)

    def task_spec(self) -> TaskSpec:
        """The task with this run's extra teachers, if any: what the run distils from."""
        if self.task.startswith(IN_MEMORY_TASK):
            raise UserError(
                f"this run's task {self.task.removeprefix(IN_MEMORY_TASK)!r} and teachers were given in "
                "Python (amalgam.distil), not as files; resume it there: "
                "amalgam.distil(teachers, ..., resume=RUN_DIR)"
            )
        spec = with_teacher_recipe(get_task(self.task), self.teacher_recipe)
        return with_extra_teachers(spec, self.extra_teachers, self.extra_teachers_only)

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self, spec: TaskSpec | None = None) -> dict:
        """What config.json holds: the settings, plus the task's roster for the reader
        (derived from `task`, so it is ignored when read back; from `spec` for a task given in
        memory, whose name no task file resolves)."""
        return {**self.to_dict(), RECORD_ONLY_KEY: roster_record(spec or self.task_spec())}

    @classmethod
    def from_dict(cls, data: dict) -> DistilSettings:
        data = dict(data)
        data.pop(RECORD_ONLY_KEY, None)
        data["method_options"] = MethodOptions(**data["method_options"])
        data["train"] = TrainConfig(**data["train"])
        data["extra_teachers"] = tuple(data.get("extra_teachers", ()))
        return cls(**data)


def read_settings(run_dir: Path) -> DistilSettings:
    """A run's config.json, or a one-line reason why this folder cannot be resumed."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"--resume {run_dir} is not a run folder (no config.json); check the path")
    if not (run_dir / STATE_FILE).is_file():
        raise UserError(
            f"--resume {run_dir}: the run stopped before saving any state ({STATE_FILE}); start a new run"
        )
    try:
        return DistilSettings.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise UserError(f"{config_path} is corrupt ({exc}); start a new run instead") from exc
