"""The built-in tasks, written as data: the embedded default, full Fashion-MNIST, CAS771 A and B."""

from __future__ import annotations

from pathlib import Path

from amalgam.errors import UserError
from amalgam.tasks.cas771 import CAS771_DATA_ASSET, CAS771_MODELS_ASSET
from amalgam.tasks.cas771_weights import with_reference_teachers
from amalgam.tasks.fashion import FASHION_CLASSES
from amalgam.tasks.roster_draw import split_drawn_name, with_drawn_roster
from amalgam.tasks.spec import MIN_STUDENT_SIZE, DataSpec, TaskSpec, TeacherSpec

DEFAULT_TASK = "fashion-mini"
# The tasks that take a drawn roster as `<name>-roster<seed>` (amalgam/tasks/roster_draw.py)
DRAWABLE_TASKS = ("fashion-mini", "fashion")
# Measured (README, "Choosing defaults"): on `fashion` the student gains at 56 px over 32 px
# for CE and more for KD, at about the same cost per epoch; the teachers stay at 32 px.
FASHION_STUDENT_SIZE = MIN_STUDENT_SIZE


def _fashion_roster() -> tuple[TeacherSpec, ...]:
    groups = ((0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9))  # Dress and Shirt are each shared by two teachers
    return tuple(
        TeacherSpec(f"teacher_{k}", tuple(FASHION_CLASSES[i] for i in group))
        for k, group in enumerate(groups, start=1)
    )


# The released CAS771 tasks: (global name, original label) in global order, then each teacher's names.
TASK_A_CLASSES = (
    ("apple", 0), ("maple_tree", 47), ("mushroom", 51), ("oak_tree", 52), ("orange", 53),
    ("orchid", 54), ("palm_tree", 56), ("pear", 57), ("pine_tree", 59), ("poppy", 62),
    ("rose", 70), ("sunflower", 82), ("sweet_pepper", 83), ("tulip", 92), ("willow", 96),
)
TASK_A_TEACHERS = (
    ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow"),
    ("orchid", "poppy", "rose", "sunflower", "tulip"),
    ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
)
TASK_A_FILES = (
    ("Model1_trees_superclass/model1_train_supercls.pth",
     "Model1_trees_superclass/model1_test_supercls.pth"),
    ("Model2_flowers_superclass/model2_train_supercls.pth",
     "Model2_flowers_superclass/model2_test_supercls.pth"),
    ("Model3_fruit+veg_superclass/model3_train_supercls.pth",
     "Model3_fruit+veg_superclass/model3_test_supercls.pth"),
)
TASK_B_CLASSES = (
    ("African_elephant", 24), ("hyena", 34), ("zebra", 80), ("collie", 124),
    ("golden_retriever", 125), ("boxer", 130), ("patas", 135), ("baboon", 137),
    ("Arctic_fox", 159), ("Chihuahua", 173), ("lynx", 201), ("African_hunting_dog", 202),
)
TASK_B_TEACHERS = (
    ("hyena", "baboon", "Arctic_fox", "Chihuahua", "lynx"),
    ("African_elephant", "hyena", "zebra", "patas", "African_hunting_dog"),
    ("collie", "golden_retriever", "boxer", "Chihuahua", "African_hunting_dog"),
)
TASK_B_FILES = tuple(
    (f"train_dataB_model_{k}.pth", f"val_dataB_model_{k}.pth") for k in (1, 2, 3)
)


# The assets in amalgam/harness/release_manifest.toml that the CAS771 tasks ship with.
CAS771_ASSETS = (CAS771_DATA_ASSET, CAS771_MODELS_ASSET)


def _cas771(letter: str, classes, teachers, files, description: str) -> TaskSpec:
    folder = f"Task{letter}"  # the reference app's name for the task: its archives' folders and ours
    return TaskSpec(
        name=letter,
        classes=tuple(c for c, _ in classes),
        teachers=tuple(
            TeacherSpec(f"teacher_{k}", names) for k, names in enumerate(teachers, start=1)
        ),
        data=DataSpec(
            "cas771-pth",
            root=f"data/{folder}",
            options={
                "original_labels": {c: label for c, label in classes},
                "files": [{"train": tr, "test": te} for tr, te in files],
            },
        ),
        img_size=64,
        description=description,
        aliases=(folder, letter.lower()),
        dir_name=folder,
        released_assets=CAS771_ASSETS,
    )


def builtin_tasks() -> dict[str, TaskSpec]:
    specs = (
        TaskSpec(
            "fashion-mini", FASHION_CLASSES, _fashion_roster(), DataSpec("fashion-mini"),
            img_size=32, student_img_size=FASHION_STUDENT_SIZE,
            description="embedded default: 300 train / 60 test real Fashion-MNIST images per class",
        ),
        TaskSpec(
            "fashion", FASHION_CLASSES, _fashion_roster(), DataSpec("fashion-idx"),
            img_size=32, student_img_size=FASHION_STUDENT_SIZE,
            description="full Fashion-MNIST (60k train / 10k test) from the IDX files",
        ),
        _cas771("A", TASK_A_CLASSES, TASK_A_TEACHERS, TASK_A_FILES,
                "CAS771 Task A: 15 CIFAR-100 classes, 3 disjoint teachers"),
        _cas771("B", TASK_B_CLASSES, TASK_B_TEACHERS, TASK_B_FILES,
                "CAS771 Task B: 12 ImageNet animals, 3 overlapping teachers"),
    )
    return {spec.name: spec for spec in specs}


def released_tasks() -> list[str]:
    """The built-in tasks that ship with released assets: what `evaluation.py` grades by default."""
    return [spec.name for spec in builtin_tasks().values() if spec.released_assets]


def reserved_task_names() -> set[str]:
    """Names a task.toml may not take: every name, alias and folder of a built-in task."""
    return {n for spec in builtin_tasks().values() for n in (*spec.names, spec.dir_name)}


def load_task_toml(path: Path) -> TaskSpec:
    """A task.toml, which may not take a built-in task's name: they would share folders."""
    from amalgam.tasks.toml_task import load_task_file

    return load_task_file(path, reserved_task_names())


def get_task(name: str) -> TaskSpec:
    """A built-in task by name or alias (A also as TaskA or a), or a task.toml by path."""
    if name.endswith(".toml") or Path(name).suffix == ".toml":
        return load_task_toml(Path(name))
    tasks = builtin_tasks()
    for spec in tasks.values():
        if name in spec.names:
            return with_reference_teachers(spec)  # A and B: the reference app's weights/ files, if present
    drawn = split_drawn_name(name)
    if drawn and drawn[0] in DRAWABLE_TASKS:
        return with_drawn_roster(tasks[drawn[0]], drawn[1])
    raise UserError(
        f"unknown task {name!r}; use one of: {', '.join(sorted(tasks))}, or a path to a task.toml "
        f"(`python train.py tasks` lists them), or {'/'.join(DRAWABLE_TASKS)}-roster<seed> for a drawn roster"
    )
