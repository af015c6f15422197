"""How a task's teachers are trained, as data: today's recipe, or stronger teachers kept apart.

A distillation recipe is judged against what its teachers know, so one roster is benchmarked
with teachers of more than one strength. Each recipe's teachers live in their own folder
(`checkpoints/<task>/` for `default`, `checkpoints/<task>/teachers-strong/` for `strong`), so
training one never replaces the other, and a run names the recipe it read in its config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amalgam.errors import UserError, one_of
from amalgam.tasks.extra_images import extra_training_images
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import CAS771_FORMAT, TaskSpec, TeacherSpec

DEFAULT_TEACHER_RECIPE = "default"
TEACHER_ARCH_DEFAULT = TeacherSpec.__dataclass_fields__["arch"].default  # "cnn-small"


@dataclass(frozen=True)
class TeacherRecipe:
    """What `train.py teachers --recipe NAME` trains, and where its checkpoints go."""

    name: str
    arch: str | None  # replaces the task's default architecture; None keeps the task's
    epochs: int  # `train.py teachers` epochs unless --epochs says otherwise
    folder: str  # under checkpoints/<task>/; "" is the task's own folder
    description: str
    extra_per_class: int = 0  # training images per class added from the task's source (extra_images.py)


TEACHER_RECIPES = {
    recipe.name: recipe
    for recipe in (
        TeacherRecipe(DEFAULT_TEACHER_RECIPE, None, 15, "", "the task's architecture, 15 epochs"),
        # Wider CNN, twice the epochs, same images: on fashion-mini not stronger combined than
        # today's (their combined line moved -3.0 to +1.7 points; docs/benchmarks/quality.md).
        TeacherRecipe("strong", "cnn-medium", 30, "teachers-strong", "cnn-medium, 30 epochs"),
        # Teachers that know more than the student's labels: 1,500 more images of each class than
        # the task's training split holds. On fashion-mini's screening rosters 100 and 101 (10,000
        # held-out images) their own-class accuracy rose from 82-98 % to 91-98 % and their
        # balanced combination by 6.4 and 3.3 points (docs/benchmarks/quality.md).
        TeacherRecipe("more-data", None, 15, "teachers-more-data",
                      "the task's architecture, 15 epochs, 1,500 more images per class (fashion-mini)",
                      extra_per_class=1500),
    )
}


def teacher_recipe(name: str) -> TeacherRecipe:
    if name not in TEACHER_RECIPES:
        raise UserError(f"unknown teacher recipe {name!r}; use {one_of(TEACHER_RECIPES)}")
    return TEACHER_RECIPES[name]


def teachers_command(spec: TaskSpec) -> str:
    """The command that trains `spec`'s teachers where a run looks for them (its recipe's folder)."""
    recipe = next((r.name for r in TEACHER_RECIPES.values() if r.folder == spec.teacher_folder),
                  DEFAULT_TEACHER_RECIPE)
    flag = "" if recipe == DEFAULT_TEACHER_RECIPE else f" --recipe {recipe}"
    task = spec.name if spec.source == "built-in" else spec.source  # a task.toml is named by its path
    return f"python train.py teachers --task {task}{flag}"


def teacher_training_data(data: TaskData, name: str, data_dir: str | None) -> TaskData:
    """What recipe `name`'s teachers train on: the task's training split, plus the recipe's extra
    images of each class where it asks for some. Validation, test and the input statistics stay
    the task's, so the teachers read images as the student does and are scored alike."""
    per_class = teacher_recipe(name).extra_per_class
    if per_class == 0:
        return data
    extra = extra_training_images(data.spec, data_dir, per_class)
    return replace(data, train=ImageSet.concat([data.train, extra]))


def with_teacher_recipe(spec: TaskSpec, name: str) -> TaskSpec:
    """`spec` whose teachers are the ones `name` trains: its folder and architecture. Teachers
    the task names a checkpoint for are given, not trained, so no recipe changes them."""
    recipe = teacher_recipe(name)
    if recipe.name == DEFAULT_TEACHER_RECIPE:
        return spec
    def trained_by_recipe(t: TeacherSpec) -> bool:
        return not t.checkpoint and t.format != CAS771_FORMAT and t.arch == TEACHER_ARCH_DEFAULT

    teachers = tuple(replace(t, arch=recipe.arch) if recipe.arch and trained_by_recipe(t) else t
                     for t in spec.teachers)
    return replace(spec, teachers=teachers, teacher_folder=recipe.folder)
