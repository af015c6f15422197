"""Teacher recipes: today's and strong teachers of one roster live apart, and every run and
comparison names the recipe it read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import MethodOptions
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.teachers.loading import load_teachers
from amalgam.distill.teachers.training import train_all_teachers, trained_stem
from amalgam.errors import UserError
from amalgam.models.checkpoint import checkpoint_files
from amalgam.tasks.builtin import get_task
from amalgam.tasks.extra_images import EXTRA_SOURCES, extra_training_images
from amalgam.tasks.fashion import (
    HELD_OUT_PER_CLASS,
    MINI_TRAIN_PER_CLASS,
    beyond_held_out,
    held_out_from_mini,
)
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.spec import DataSpec, resolve_checkpoint_stem
from amalgam.tasks.teacher_recipes import (
    teacher_recipe,
    teacher_training_data,
    teachers_command,
    with_teacher_recipe,
)
from amalgam.workflows.compare import METRICS, run_compare, summarise
from amalgam.workflows.roster_compare import parse_teacher_recipes, pool, pooled_markdown, report_folder
from tests.test_fashion_idx import write_idx

TASK = "fashion-mini-roster7"


def test_strong_teachers_have_their_own_folder_and_architecture(tmp_path: Path):
    today = get_task(TASK)
    strong = with_teacher_recipe(today, "strong")
    assert with_teacher_recipe(today, "default") == today
    assert [t.classes for t in strong.teachers] == [t.classes for t in today.teachers]  # same roster
    assert {t.arch for t in today.teachers} == {"cnn-small"}
    assert {t.arch for t in strong.teachers} == {"cnn-medium"}
    for old, new in zip(today.teachers, strong.teachers, strict=True):
        assert resolve_checkpoint_stem(today, old, tmp_path) == tmp_path / "checkpoints" / TASK / old.name
        assert resolve_checkpoint_stem(strong, new, tmp_path) == (
            tmp_path / "checkpoints" / TASK / "teachers-strong" / new.name)
        assert trained_stem(strong, new, tmp_path) == resolve_checkpoint_stem(strong, new, tmp_path)


def test_an_unknown_recipe_is_refused_by_name():
    with pytest.raises(UserError, match="unknown teacher recipe 'huge'.*default.*strong"):
        with_teacher_recipe(get_task(TASK), "huge")
    with pytest.raises(UserError, match="strong"):
        parse_teacher_recipes("default,huge")
    assert parse_teacher_recipes(" default, strong,default") == ["default", "strong"]


@pytest.mark.slow
def test_both_recipes_train_apart_and_runs_name_theirs(tmp_path: Path):
    """Training the strong teachers leaves today's files untouched, and a run distilled from
    each records its recipe in config.json (and reads that recipe's teachers)."""
    data = load_task_data(get_task(TASK), train_per_class=12)
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")
    train_all_teachers(data, config, 32, root=tmp_path)
    today_files = sorted((tmp_path / "checkpoints" / TASK).glob("teacher_*"))
    before = {path: path.read_bytes() for path in today_files}
    strong = with_teacher_recipe(data.spec, "strong")
    train_all_teachers(replace(data, spec=strong), config, 32, root=tmp_path)
    assert {path: path.read_bytes() for path in today_files} == before
    for teacher in strong.teachers:
        card = json.loads(checkpoint_files(trained_stem(strong, teacher, tmp_path))[1].read_text())
        assert card["arch"] == "cnn-medium" and card["trained_on"]["teacher_folder"] == "teachers-strong"
    for recipe in ("default", "strong"):
        settings = DistilSettings(task=TASK, student="mobilenetv3_small", method="uhc-kd",
                                  teacher_recipe=recipe, train=config, img_size=32, train_per_class=12)
        run_dir = distil(settings, out_dir=tmp_path / "runs" / recipe, root=tmp_path, data=data).run_dir
        recorded = json.loads((run_dir / "config.json").read_text())
        assert recorded["teacher_recipe"] == recipe
        assert DistilSettings.from_dict(recorded).teacher_recipe == recipe  # --resume and --config read it
    # compare.json names the recipe too; a shared CE arm trains nothing, the teachers are still scored
    runs = [{**dict.fromkeys(METRICS, 0.5), "val_accuracy": 0.5}]
    shared = {"ce": {**summarise(runs), "labels": "train", "per_seed": runs, "shared_from": "elsewhere"}}
    reports = [run_compare(TASK, ["ce"], 1, "mobilenetv3_small", MethodOptions(), config, 32, 12, None,
                           root=tmp_path, out_dir=tmp_path / "out" / recipe, shared=shared,
                           teacher_recipe=recipe)
               for recipe in ("default", "strong")]
    assert [report["teacher_recipe"] for report in reports] == ["default", "strong"]
    on_disk = json.loads((tmp_path / "out" / "strong" / "compare.json").read_text())
    assert on_disk["teacher_recipe"] == "strong" and "`strong` recipe" in (tmp_path / "out" / "strong" /
                                                                          "compare.md").read_text()
    own = [report["teachers_own_classes_accuracy"] for report in reports]
    assert own[0] != own[1]  # scored with each recipe's own teachers


def test_pooled_report_shows_each_recipe_and_the_teachers_combined_beside_it():
    def report(task: str, recipe: str, accuracy: float, shared: bool = False) -> dict:
        run = {m: accuracy for m in ("accuracy", "macro_f1", "nll", "ece", "ece_ts", "errors_shared_teacher",
                                     "errors_no_shared_teacher")}
        ce = {"accuracy": {"mean": 0.5, "std": 0.0}, "per_seed": [{**run, "accuracy": 0.5}]}
        if shared:
            ce["shared_from"] = "r1"
        return {"task": task, "roster": {"t1": ["a"]}, "teacher_recipe": recipe,
                "teachers_union_accuracy": 0.4,
                "teachers_uhc_accuracy": 0.6 if recipe == "strong" else 0.45,
                "teachers_uhc_balanced_accuracy": 0.44, "failed": {},
                "methods": {"ce": ce, "kd": {"accuracy": {"mean": accuracy, "std": 0.0}, "per_seed": [run]}}}

    reports = {"r1": report("r1", "default", 0.6),
               report_folder("r1", "strong"): report("r1", "strong", 0.7, True),
               "r2": report("r2", "default", 0.8, True)}
    assert report_folder("r1", "strong") == "r1-teachers-strong" and report_folder("r1", "default") == "r1"
    pooled = pool(reports)
    assert pooled["methods"]["ce"]["runs"] == 1  # CE ran once and serves every roster and recipe
    assert pooled["methods"]["kd"]["accuracy"]["mean"] == pytest.approx(0.7, abs=1e-9)
    by_recipe = pooled["by_teacher_recipe"]
    assert by_recipe["default"]["kd"]["accuracy"]["mean"] == pytest.approx(0.7, abs=1e-9)
    assert by_recipe["strong"]["kd"]["accuracy"]["mean"] == pytest.approx(0.7, abs=1e-9)
    assert by_recipe["strong"]["kd"]["runs"] == 1 and by_recipe["strong"]["ce"]["runs"] == 1
    text = pooled_markdown(pooled)
    assert "| teachers | default | strong | default |" in text
    assert "pooled, strong teachers" in text
    assert "| teachers combined (UHC) | 45.00 | 60.00 | 45.00 |" in text


def write_indexed_fashion(folder: Path, per_class: int) -> None:
    """Training IDX files whose image i carries i in its first two pixels; labels cycle 0..9, so
    class c's j-th image is image 10 j + c."""
    count = 10 * per_class
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(count) // 256, np.arange(count) % 256
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(count) % 10)


def file_positions(images: ImageSet) -> set[int]:
    pixels = images.images[:, 0, 0, :2].long()
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


def test_more_data_is_drawn_past_fashion_minis_and_the_held_out_images(tmp_path: Path):
    write_indexed_fashion(tmp_path, MINI_TRAIN_PER_CLASS + HELD_OUT_PER_CLASS + 7)
    extra = beyond_held_out(tmp_path, 5)
    first = MINI_TRAIN_PER_CLASS + HELD_OUT_PER_CLASS
    assert file_positions(extra) == {10 * j + c for c in range(10) for j in range(first, first + 5)}
    assert torch.bincount(extra.labels).tolist() == [5] * 10
    assert file_positions(extra).isdisjoint(file_positions(held_out_from_mini(tmp_path)))
    with pytest.raises(UserError, match="fewer than 8 images per class"):
        beyond_held_out(tmp_path, 8)


def test_more_data_teachers_train_on_the_task_and_the_extra_images(monkeypatch, tmp_path: Path):
    data = load_task_data(get_task(TASK), train_per_class=12)
    extra = ImageSet(torch.zeros(20, *data.train.images.shape[1:], dtype=torch.uint8),
                     torch.arange(20) % 10)
    asked = []
    monkeypatch.setitem(EXTRA_SOURCES, "fashion-mini",
                        lambda spec, data_dir, per_class: asked.append(per_class) or extra)
    assert teacher_training_data(data, "default", None) is data
    assert teacher_training_data(data, "strong", None) is data
    more = teacher_training_data(data, "more-data", None)
    assert asked == [teacher_recipe("more-data").extra_per_class]
    assert torch.equal(more.train.labels, torch.cat([data.train.labels, extra.labels]))
    assert len(more.train.images) == len(data.train) + 20
    assert (more.val, more.test, more.mean, more.std) == (data.val, data.test, data.mean, data.std)
    spec = with_teacher_recipe(get_task(TASK), "more-data")
    assert spec.teacher_folder == "teachers-more-data"
    assert [t.arch for t in spec.teachers] == [t.arch for t in get_task(TASK).teachers]


def test_more_data_is_refused_for_a_task_without_a_larger_source(tmp_path: Path):
    spec = replace(get_task(TASK), data=DataSpec("folder"))
    with pytest.raises(UserError, match="has no images beyond its own training split.*task.toml"):
        extra_training_images(spec, None, 10)
    reordered = replace(get_task(TASK), classes=tuple(reversed(get_task(TASK).classes)))
    with pytest.raises(UserError, match="reorders or drops Fashion-MNIST's classes"):
        extra_training_images(reordered, None, 10)


@pytest.mark.parametrize("recipe, command", [
    ("default", f"`python train.py teachers --task {TASK}`"),
    ("more-data", f"`python train.py teachers --task {TASK} --recipe more-data`"),
])
def test_missing_teachers_name_the_command_that_trains_them_where_the_run_looks(tmp_path, recipe, command):
    spec = with_teacher_recipe(get_task(TASK), recipe)
    with pytest.raises(UserError) as raised:
        load_teachers(spec, tmp_path)
    message = str(raised.value)
    assert message.endswith(command) and "\n" not in message
    assert str(resolve_checkpoint_stem(spec, spec.teachers[0], tmp_path)) in message


def test_missing_teachers_of_a_task_file_are_named_by_its_path(tmp_path: Path):
    spec = replace(get_task(TASK), source=str(tmp_path / "task.toml"))
    assert teachers_command(spec) == f"python train.py teachers --task {tmp_path / 'task.toml'}"
