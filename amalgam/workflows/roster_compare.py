"""`python train.py compare --rosters 200,201,202`: the same comparison on several drawn rosters.

A recipe tuned on one roster can fail on the next, so a claim about a method is made per
roster and pooled: every roster gets its own full comparison (its own folder, compare.json
with the roster in it), and `pooled.json` / `pooled.md` put them side by side. An arm whose
method reads no teacher (`ce`) trains the same on every roster (same images, validation
split, seeds and settings), so it runs once, on the first roster; the others' reports carry
those runs with `shared_from` naming that roster, and pooling counts them once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from amalgam.distill.methods import METHODS
from amalgam.errors import UserError, one_of
from amalgam.harness.compare_report import spread_cell
from amalgam.models.checkpoint import atomic_write_bytes
from amalgam.tasks.builtin import DRAWABLE_TASKS, get_task
from amalgam.tasks.teacher_recipes import DEFAULT_TEACHER_RECIPE, TEACHER_RECIPES, teacher_recipe
from amalgam.workflows.compare import METRICS, check_report_dir, run_compare, split_arm


def parse_roster_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--rosters takes comma-separated integers (roster seeds), got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--rosters needs distinct non-negative roster seeds, got {text!r}")
    return seeds


def parse_teacher_recipes(text: str) -> list[str]:
    """`default,strong` → the teacher recipes to compare with, each checked."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise UserError(f"--teacher-recipe needs {one_of(TEACHER_RECIPES)}, got {text!r}")
    return [teacher_recipe(name).name for name in names]


def report_folder(roster: str, recipe: str) -> str:
    """A roster's report folder under the pooled one: `fashion-roster300` for today's teachers,
    `fashion-roster300-teachers-strong` for another recipe's."""
    folder = teacher_recipe(recipe).folder
    return f"{roster}-{folder}" if folder else roster


def run_roster_compare(task: str, roster_seeds: list[int], out_dir: Path,
                       recipes: Sequence[str] = (DEFAULT_TEACHER_RECIPE,), **compare_args) -> dict:
    """One `run_compare` per roster and teacher recipe into out_dir/<task>-roster<seed>[-<recipe
    folder>]/, then the pooled report."""
    if get_task(task).name not in DRAWABLE_TASKS:
        raise UserError(f"--rosters draws rosters for {' and '.join(DRAWABLE_TASKS)} only, not {task!r}")
    check_report_dir(out_dir)
    reports: dict[str, dict] = {}
    shared: dict[str, dict] = {}
    for seed in roster_seeds:
        for recipe in recipes:
            roster = f"{get_task(task).name}-roster{seed}"
            name = report_folder(roster, recipe)
            reports[name] = run_compare(roster, out_dir=out_dir / name, shared=shared, teacher_recipe=recipe,
                                        **compare_args)
            if shared:
                continue
            shared = {arm: {**stats, "shared_from": name} for arm, stats in reports[name]["methods"].items()
                      if not _reads_teachers(arm)}
    return write_pooled(reports, out_dir)


def _reads_teachers(arm: str) -> bool:
    method = METHODS.get(split_arm(arm)[0])
    return method is None or method.uses_teachers


def pool_finished(out_dir: Path) -> dict:
    """Pool the comparisons already in out_dir's subfolders (e.g. rosters run on separate
    machines or side by side, each with its own `compare --task fashion-roster<seed> --out
    out_dir/fashion-roster<seed>`) into pooled.json / pooled.md."""
    reports = {}
    for path in sorted(out_dir.glob("*/compare.json")):
        try:
            reports[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} cannot be read ({exc}); re-run that roster's comparison") from exc
    if not reports:
        raise UserError(f"{out_dir} holds no <roster>/compare.json to pool; run the comparisons first")
    return write_pooled(reports, out_dir)


def write_pooled(reports: dict[str, dict], out_dir: Path) -> dict:
    pooled = pool(reports)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(pooled, indent=2)
    atomic_write_bytes(out_dir / "pooled.json", lambda p: p.write_text(text))
    md = pooled_markdown(pooled)
    atomic_write_bytes(out_dir / "pooled.md", lambda p: p.write_text(md))
    return pooled


def pool(reports: dict[str, dict]) -> dict:
    """Per method: every metric over all rosters' runs together, and the mean per roster."""
    methods = list(dict.fromkeys(m for report in reports.values() for m in report["methods"]))
    pooled: dict = {"rosters": {}, "methods": {}}
    for name, report in reports.items():
        pooled["rosters"][name] = {
            "roster": report["roster"],
            "teacher_recipe": report.get("teacher_recipe", DEFAULT_TEACHER_RECIPE),
            "teachers_union_accuracy": report["teachers_union_accuracy"],
            "teachers_uhc_accuracy": report["teachers_uhc_accuracy"],
            "teachers_uhc_balanced_accuracy": report.get("teachers_uhc_balanced_accuracy"),
            "accuracy": {m: s["accuracy"]["mean"] for m, s in report["methods"].items()},
            "accuracy_std": {m: s["accuracy"]["std"] for m, s in report["methods"].items()},
            "seeds": {m: len(s["per_seed"]) for m, s in report["methods"].items()},
            "failed": report["failed"],
        }
    for method in methods:
        pooled["methods"][method] = _pool_runs(reports.values(), method)
    recipes = list(dict.fromkeys(info["teacher_recipe"] for info in pooled["rosters"].values()))
    if len(recipes) > 1:  # per teacher recipe too: a method that reads no teacher is in each
        pooled["by_teacher_recipe"] = {}
        for recipe in recipes:
            chosen = [report for report in reports.values()
                      if report.get("teacher_recipe", DEFAULT_TEACHER_RECIPE) == recipe]
            pooled["by_teacher_recipe"][recipe] = {method: _pool_runs(chosen, method, shared_too=True)
                                                  for method in methods}
    return pooled


def _pool_runs(reports, method: str, shared_too: bool = False) -> dict:
    """Every metric of `method` over the runs of `reports`; a method's runs shared from another
    roster are counted where they ran (or, with `shared_too`, once here if they ran elsewhere)."""
    runs, seen = [], set()
    for report in reports:
        stats = report["methods"].get(method)
        if stats is None or ("shared_from" in stats and not shared_too):
            continue
        origin = stats.get("shared_from", report.get("task"))
        if origin in seen and "shared_from" in stats:
            continue
        seen.add(origin)
        runs.extend(stats["per_seed"])
    if not runs:
        return {"runs": 0}
    pooled = {}
    for metric in METRICS:
        values = torch.tensor([r[metric] for r in runs], dtype=torch.float64)
        pooled[metric] = {"mean": float(values.mean()),
                          "std": float(values.std(unbiased=True)) if len(values) > 1 else 0.0}
    return {**pooled, "runs": len(runs)}


def _mean_cell(stats: dict) -> str:
    if not stats.get("runs"):
        return "not run"
    return f"{100 * stats['accuracy']['mean']:.2f} ± {100 * stats['accuracy']['std']:.2f}"


def pooled_markdown(pooled: dict) -> str:
    rosters = list(pooled["rosters"])
    by_recipe = pooled.get("by_teacher_recipe", {})
    recipe_heads = "".join(f" pooled, {recipe} teachers |" for recipe in by_recipe)
    lines = [
        "# Comparison over drawn rosters",
        "",
        "Test accuracy (%) of the checkpoint chosen on validation; per roster the mean (± std) "
        "over its seeds, pooled over every roster and seed. Each roster's own report is in its folder. "
        "A method that reads no teacher (`ce`) trains the same way on every roster.",
        "",
        "| method | " + " | ".join(rosters) + " | pooled |" + recipe_heads + " pooled ECE after T-scaling |",
        "|---" * (len(rosters) + 3 + len(by_recipe)) + "|",
        "| teachers | " + " | ".join(pooled["rosters"][r].get("teacher_recipe", DEFAULT_TEACHER_RECIPE)
                                    for r in rosters) + " | |" + " |" * len(by_recipe) + " |",
    ]
    for method, stats in pooled["methods"].items():
        cells = []
        for roster in rosters:
            info = pooled["rosters"][roster]
            if method not in info["accuracy"]:
                cells.append("failed" if method in info["failed"] else "not run")
                continue
            cells.append(spread_cell(info["accuracy"][method], info["accuracy_std"][method],
                                     info["seeds"][method], 100, 2))
        recipe_cells = "".join(f" {_mean_cell(by_recipe[recipe][method])} |" for recipe in by_recipe)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {_mean_cell(stats)} |{recipe_cells} "
                     f"{stats['ece_ts']['mean']:.3f} |")
    for key, label in (("teachers_union_accuracy", "teachers combined (mean of probabilities)"),
                       ("teachers_uhc_accuracy", "teachers combined (UHC)"),
                       ("teachers_uhc_balanced_accuracy", "teachers combined (UHC, balanced)")):
        values = [pooled["rosters"][r].get(key) for r in rosters]
        if any(value is None for value in values):  # a report from before this line existed
            continue
        cells = [f"{100 * value:.2f}" for value in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " | |" + " |" * len(by_recipe) + " |")
    lines += ["", "Rosters:", ""]
    for roster, info in pooled["rosters"].items():
        teachers = "; ".join(f"{t} = {{{', '.join(c)}}}" for t, c in info["roster"].items())
        lines.append(f"- {roster}: {teachers}")
    return "\n".join(lines) + "\n"
