"""scripts/screen_cells.py: each cell's arms side by side, CE spread over its student's cells,
seeds averaged, a missing run left empty, a malformed arm refused in one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screen_cells.py"
spec = importlib.util.spec_from_file_location("screen_cells", SCRIPT)
screen_cells = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = screen_cells  # its dataclass looks its module up
spec.loader.exec_module(screen_cells)

ACC, COMBINED = "held-out accuracy (10,000), %", "teachers combined: mean / UHC / UHC balanced (held-out), %"


def row(task, teachers, student, epochs, method, options, accuracy, balanced="80.00"):
    return {"task": task, "teachers": teachers, "student": student, "epochs": str(epochs), "method": method,
            "options": options, ACC: str(accuracy), COMBINED: f"70.00 / 75.00 / {balanced}"}


def test_cells_pair_each_arm_with_its_cell_and_ce_with_every_cell_of_its_student():
    rows = [
        row("r100", "default", "s", 24, "ce", "", 70.0),
        row("r100", "default", "s", 24, "kd", "a", 80.0, "81.00"),
        row("r100", "default", "s", 24, "kd", "a", 82.0, "81.00"),  # a second seed: averaged
        row("r101", "more-data", "s", 24, "kd", "a", 90.0, "88.00"),
        row("r101", "more-data", "s", 96, "kd", "a; augment crop-flip", 93.0, "88.00"),
        row("r100", "default", "t", 24, "kd", "a", 60.0),
    ]
    arms = [screen_cells.Arm.parse(text)
            for text in ("CE=ce|24|", "kd 24=kd|24|a", "kd 96=kd|96|a; augment crop-flip")]
    table = screen_cells.cells_table(rows, arms)
    assert table[0] == ["task", "teachers", "student", "CE", "kd 24", "kd 96",
                        "teachers combined, UHC balanced"]
    assert table[1:] == [
        ["r100", "default", "s", "70.00", "81.00", "", "81.00"],
        ["r101", "more-data", "s", "70.00", "90.00", "93.00", "88.00"],
        ["r100", "default", "t", "", "60.00", "", "80.00"],  # student t has no CE run
    ]


@pytest.mark.parametrize("text", ["no-equals", "x=ce|24", "=ce|24|"])
def test_a_malformed_arm_is_refused_naming_the_form(text):
    with pytest.raises(SystemExit, match="LABEL=METHOD"):
        screen_cells.Arm.parse(text)
