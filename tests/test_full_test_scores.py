"""scripts/full_test_scores.py: its held-out images are training images fashion-mini never
uses (so choosing on them is choosing on validation), and its targets table does the
arithmetic the targets state."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from amalgam.tasks.builtin import get_task
from amalgam.tasks.fashion import SYSTEM_DIR, held_out_from_mini
from amalgam.tasks.loader import load_task_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "full_test_scores.py"
spec = importlib.util.spec_from_file_location("full_test_scores", SCRIPT)
full_test_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(full_test_scores)


@pytest.mark.skipif(not any(SYSTEM_DIR.glob("train-images-idx3-ubyte*")),
                    reason="no Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
def test_held_out_images_are_none_of_fashion_minis():
    held_out = held_out_from_mini()
    assert torch.bincount(held_out.labels, minlength=10).tolist() == [1000] * 10
    mini = load_task_data(get_task("fashion-mini"), val_fraction=0.1)
    seen = {bytes(image.numpy()) for split in (mini.train, mini.val) for image in split.images}
    assert len(seen) > 2900  # (a few duplicate images exist in Fashion-MNIST itself)
    assert not any(bytes(image.numpy()) in seen for image in held_out.images)


LABELED_EPOCHS = full_test_scores.LABELED_RECIPE.values["epochs"]
LABELED_VIEWS = full_test_scores.LABELED_RECIPE.values["augment"]


def row(method: str, accuracy: float, labels: str = "train", student: str = "resnet18", trust: str = "fixed",
        ece: float = 0.01, prior: str = "none", epochs: int = LABELED_EPOCHS,
        augment: str = "crop-flip") -> dict:
    return {"task": "r500", "teachers": "default", "student": student, "method": method,
            "teacher trust": trust, "class prior": prior, "options": "", "training labels": labels,
            "epochs": epochs, "augment": augment, "accuracy": accuracy, "ece_ts": ece,
            "combined": (0.70, 0.75, 0.80)}


def recipe_row(recipe, accuracy: float, **fields) -> dict:
    """A run of `recipe` as score_runs records it."""
    values = recipe.values
    return row(values["method"], accuracy, labels=values.get("labels", "train"),
               trust=values.get("teacher_trust", "fixed"), prior=values.get("class_prior", "none"),
               epochs=values["epochs"], augment=values.get("augment", "flip"), **fields)


def test_a_run_is_the_default_only_with_every_setting_the_arm_reads():
    labeled = full_test_scores.LABELED_RECIPE
    assert full_test_scores.arm(recipe_row(labeled, 0.9)) == "labeled"
    assert full_test_scores.arm(recipe_row(full_test_scores.LABEL_FREE_RECIPE, 0.9)) == "label-free"
    assert full_test_scores.arm(recipe_row(full_test_scores.SHORT_RECIPE, 0.9)) == "labeled, short"
    other_prior = "uniform" if labeled.values.get("class_prior", "none") == "none" else "none"
    assert full_test_scores.arm({**recipe_row(labeled, 0.9), "class prior": other_prior}) is None
    # a row cached before it recorded its prior or its views: read from its options
    cached = recipe_row(full_test_scores.LABEL_FREE_RECIPE, 0.9)
    del cached["class prior"], cached["augment"]
    options = f"temperature 2.0; class_prior uniform; augment {LABELED_VIEWS}"
    assert full_test_scores.arm({**cached, "options": options}) == "label-free"
    short = recipe_row(full_test_scores.SHORT_LABEL_FREE_RECIPE, 0.9)
    del short["augment"]  # no augment in its options: the default views, flips
    assert full_test_scores.arm(short) == "label-free, short"
    # the recipe's settings on another schedule, or with other views, are not the recipe
    assert full_test_scores.arm({**recipe_row(labeled, 0.9), "epochs": LABELED_EPOCHS + 1}) is None
    assert full_test_scores.arm({**recipe_row(labeled, 0.9), "augment": "crop-flip"}) is None


def test_each_line_is_held_to_ce_on_its_own_schedule_and_views():
    labeled, short = full_test_scores.LABELED_RECIPE, full_test_scores.SHORT_RECIPE
    rows = [row("ce", 0.85),  # the default's schedule, with the student's crops
            row("ce", 0.60, augment="flip"),  # the same epochs, other views: no line's CE
            row("ce", 0.70, epochs=LABELED_EPOCHS + 1),  # another schedule: no line's CE
            row("ce", 0.80, epochs=short.values["epochs"], augment="flip"),
            recipe_row(labeled, 0.88), recipe_row(short, 0.83)]
    default_cells, short_cells = full_test_scores.target_table(rows)
    assert default_cells[3] == "default" and default_cells[4] == "1/0 (CE 1)" and default_cells[5] == "85.00"
    assert default_cells[8] == "met (+1.00 vs 87.00)"
    assert default_cells[10] == "not run"
    assert short_cells[3] == "short" and short_cells[5] == "80.00"
    assert short_cells[8] == "met (+1.00 vs 82.00)"


def test_targets_are_means_over_seeds_against_ce_and_the_best_combined_line(monkeypatch):
    labeled, free = full_test_scores.LABELED_RECIPE, full_test_scores.LABEL_FREE_RECIPE
    rows = [row("ce", 0.84), row("ce", 0.86),  # CE mean 0.85
            recipe_row(labeled, 0.87), recipe_row(labeled, 0.89, ece=0.04),
            recipe_row(free, 0.815), recipe_row(free, 0.825)]
    [cells] = full_test_scores.target_table(rows)
    assert cells[4] == "2/2 (CE 2)"
    assert cells[5:7] == ["85.00", "80.00"]
    assert cells[7:9] == ["88.00", "met (+1.00 vs 87.00)"]  # max(85, 80) + 2
    # label-free: 82.0 clears the teachers + 1 (81) but not CE (85)
    assert cells[9] == "82.00" and cells[10].startswith("missed (+1.00 vs 81.00)")
    assert cells[11] == "0.040 / 0.010"


def test_headline_has_a_line_per_teacher_recipe_and_ce_once_per_schedule():
    labeled, short = full_test_scores.LABELED_RECIPE, full_test_scores.SHORT_RECIPE
    more = {"teachers": "more-data", "combined": (0.70, 0.80, 0.90)}
    rows = [row("ce", 0.84), row("ce", 0.86), recipe_row(labeled, 0.87), recipe_row(labeled, 0.89),
            {**recipe_row(labeled, 0.91), **more},
            row("ce", 0.75, epochs=short.values["epochs"], augment="flip"), recipe_row(short, 0.80)]
    table = full_test_scores.headline_table(rows)
    assert table[0][0].startswith(f"`ce` (no teachers), {LABELED_EPOCHS} epochs")
    assert table[0][1:] == ["—", "yes", "85.00 ± 1.41 (2 runs)"]
    assert table[1][0].startswith("**default**")
    assert table[1][1:] == ["`default`", "yes", "88.00 ± 1.41 (2 runs)"]
    assert table[2][1:] == ["`more-data`", "yes", "91.00 (1 run)"]
    assert table[3][0].startswith("`--labels none`") and table[3][3] == "not run"
    short_ce = next(line for line in table if line[0].startswith("`ce`") and line is not table[0])
    assert short_ce[3] == "75.00 (1 run)"
    short_default = next(line for line in table if line[0].startswith("short,") and line[1] == "`default`")
    assert short_default[3] == "80.00 (1 run)"
    combined = {line[1]: line[3] for line in table if line[0].startswith("teachers combined")}
    assert combined == {"`default`": "80.00 (1 roster)", "`more-data`": "90.00 (1 roster)"}
