"""Seeded random rosters for the built-in Fashion tasks, so a recipe is judged on rosters
nobody tuned it for.

`fashion-roster7` is `fashion` with the roster drawn from seed 7: three teachers of 3 to 5
classes each, 2 or 3 classes known to two teachers, every class known to some teacher. The
roster is part of the task's name, so its teachers, runs and reports get folders of their
own (`checkpoints/fashion-roster7/`) and any command that takes `--task` takes it.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from amalgam.errors import UserError
from amalgam.tasks.spec import TaskSpec, TeacherSpec

NUM_TEACHERS = 3
TEACHER_SIZES = (3, 5)  # inclusive bounds on a teacher's classes
SHARED_CLASSES = (2, 3)  # inclusive bounds on classes that two teachers know
DRAWN_SUFFIX = re.compile(r"^(?P<base>.+)-roster(?P<seed>0|[1-9][0-9]{0,8})$")


def draw_roster(classes: tuple[str, ...], seed: int) -> tuple[TeacherSpec, ...]:
    """Three overlapping teachers over `classes`, the same ones for the same seed everywhere.

    Python's `random.Random(seed)` is used because its integer draws are fixed across
    versions and platforms, unlike a framework's generator.
    """
    n = len(classes)
    low, high = TEACHER_SIZES
    if not NUM_TEACHERS * low <= n + SHARED_CLASSES[1] or not n + SHARED_CLASSES[0] <= NUM_TEACHERS * high:
        raise UserError(f"a drawn roster needs 6 to 13 classes, the task has {n}")
    rng = random.Random(seed)
    while True:
        n_shared = rng.randint(*SHARED_CLASSES)
        sizes = [rng.randint(low, high) for _ in range(NUM_TEACHERS)]
        if sum(sizes) != n + n_shared:  # each shared class counts twice
            continue
        order = list(range(n))
        rng.shuffle(order)
        shared, own = order[:n_shared], order[n_shared:]
        members: list[list[int]] = [[] for _ in range(NUM_TEACHERS)]
        for c in shared:
            for k in rng.sample(range(NUM_TEACHERS), 2):
                members[k].append(c)
        free = [size - len(m) for size, m in zip(sizes, members, strict=True)]
        if min(free) < 1:  # every teacher also has a class of its own
            continue
        for k, count in enumerate(free):
            members[k].extend(own[:count])
            own = own[count:]
        return tuple(
            TeacherSpec(f"teacher_{k}", tuple(classes[c] for c in sorted(m)))
            for k, m in enumerate(members, start=1)
        )


def split_drawn_name(name: str) -> tuple[str, int] | None:
    """('fashion', 7) for 'fashion-roster7'; None for a name without the suffix."""
    match = DRAWN_SUFFIX.match(name)
    return (match["base"], int(match["seed"])) if match else None


def with_drawn_roster(spec: TaskSpec, seed: int) -> TaskSpec:
    """`spec` with its roster drawn from `seed`, named (and filed) as its own task."""
    name = f"{spec.name}-roster{seed}"
    teachers = draw_roster(spec.classes, seed)
    return replace(
        spec, name=name, teachers=teachers, aliases=(), dir_name=name, released_assets=(),
        description=f"{spec.name} with a roster drawn from seed {seed}: {describe_roster(teachers)}",
    )


def describe_roster(teachers: tuple[TeacherSpec, ...]) -> str:
    """One line a person can read: `teacher_1 = {T-shirt/top, Dress, ...}; ...`."""
    return "; ".join(f"{t.name} = {{{', '.join(t.classes)}}}" for t in teachers)


def roster_record(spec: TaskSpec) -> dict[str, list[str]]:
    """The roster as it goes into config.json and compare.json: teacher → its classes."""
    return {t.name: list(t.classes) for t in spec.teachers}
