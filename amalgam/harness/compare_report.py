"""The comparison report: compare.json (numbers), compare.md (for people), compare.png (at a glance)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from amalgam.distill.teachers.extra import extra_teacher_name  # noqa: E402
from amalgam.models.checkpoint import atomic_write_bytes  # noqa: E402

COLUMNS = (
    ("accuracy", "accuracy", 100, "%"),
    ("macro_f1", "macro-F1", 1, ""),
    ("nll", "NLL", 1, ""),
    ("ece", "ECE", 1, ""),
    ("ece_ts", "ECE after T-scaling", 1, ""),
)


def spread_cell(mean: float, std: float, runs: int, scale: float, digits: int = 3) -> str:
    """mean ± sample std; the mean alone from one run, which has no spread to show."""
    text = f"{mean * scale:.{digits}f}"
    return text if runs == 1 else f"{text} ± {std * scale:.{digits}f}"


def _cell(stats: dict, scale: float, digits: int = 3) -> str:
    return spread_cell(stats["mean"], stats["std"], len(stats.get("runs", ())), scale, digits)


def _extra_teachers_lines(report: dict) -> list[str]:
    """Who taught, when `--extra-teacher` changed the task's roster (nothing otherwise)."""
    extra = report.get("extra_teachers") or []
    if not extra:
        return []
    names = ", ".join(f"{extra_teacher_name(number)} = `{path}`" for number, path in enumerate(extra, 1))
    who = ("alone (`--extra-teacher-only`), not the task's teachers" if report.get("extra_teachers_only")
           else "beside the task's teachers")
    return ["", f"Extra teachers (`--extra-teacher`): {names}; they taught {who}. The error split and "
                "the reference lines below are over the teachers that taught."]


def markdown(report: dict) -> str:
    seeds = report["seeds"]
    lines = [
        f"# Method comparison on task {report['task']}",
        "",
        f"Student `{report['student']}`, {report['epochs']} epochs, input {report['img_size']} px, "
        f"augmentation `{report['augment']}`, {report['train_images']} training images"
        + (
            f" (at most {report['train_per_class']} per class before the validation carve)"
            if report.get("train_per_class")
            else ""
        )
        + f", {report['test_images']} test images."
        + (f" Teachers: the `{report['teacher_recipe']}` recipe's (`--teacher-recipe`)."
           if report.get("teacher_recipe", "default") != "default" else "")
        + (" Training: " + ", ".join(f"{k} {v}" for k, v in report["training"].items()) + "."
           if report.get("training") else ""),
        "",
        f"Every figure is the **test** score of the checkpoint chosen on **validation accuracy** "
        f"(best epoch, not last), as mean ± sample std over **{seeds} seed(s)**. "
        "ECE uses 15 equal-width bins; 'after T-scaling' divides the logits by one global "
        "temperature fitted on the validation split by minimising NLL."
        + (f" {report['labels_note']}." if "labels_note" in report else ""),
        *_extra_teachers_lines(report),
        "",
        "| method | training labels | " + " | ".join(name for _, name, _, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for method, stats in report["methods"].items():
        cells = [_cell(stats[key], scale, 2 if scale == 100 else 3) for key, _, scale, _ in COLUMNS]
        labels = stats.get("labels", "train")  # reports written before --labels: all labeled
        lines.append(f"| {method.partition(':')[0]} | {labels} | " + " | ".join(cells) + " |")
    shared = {method: stats["shared_from"] for method, stats in report["methods"].items()
              if "shared_from" in stats}
    if shared:
        lines += ["", "Not trained here: " + "; ".join(
            f"`{method}` reads no teacher, so its runs are {source}'s (same images, seeds and settings)"
            for method, source in shared.items()) + "."]
    if all("errors_no_shared_teacher" in stats for stats in report["methods"].values()):
        lines += [
            "",
            "Where the errors are (% of test images): misclassified as a class that some teacher "
            "knows together with the true class, or as one that no teacher shares with it "
            "(a distinction only the labels teach).",
            "",
            "| method | errors, a teacher knows both classes | errors, no teacher knows both |",
            "|---|---|---|",
        ]
        for method, stats in report["methods"].items():
            lines.append(f"| {method} | {_cell(stats['errors_shared_teacher'], 100, 2)} | "
                         f"{_cell(stats['errors_no_shared_teacher'], 100, 2)} |")
    lines += [
        "",
        f"Teachers combined on the union of classes (reference lines), test accuracy: "
        f"**{report['teachers_union_accuracy']:.2%}** as the per-class mean of their probabilities"
        + (f", **{report['teachers_uhc_accuracy']:.2%}** as the UHC combination (`uhc-kd`'s target)"
           if "teachers_uhc_accuracy" in report else "")
        + (f", **{report['teachers_uhc_balanced_accuracy']:.2%}** as the UHC combination balanced over the "
           "training images (`--class-prior uniform`'s target at T = 1)"
           if "teachers_uhc_balanced_accuracy" in report else "") + ".",
    ]
    own = report.get("teachers_own_classes_accuracy", {})
    if own:
        lines.append(
            "Each teacher on its own classes: " + ", ".join(f"{k} {v:.2%}" for k, v in own.items()) + "."
        )
    if report["failed"]:
        lines += ["", "## Failed arms", ""]
        for method, failures in report["failed"].items():
            for failure in failures:
                lines.append(f"- {method}, seed {failure['seed']}: {failure['error']}")
    lines += ["", "Options: `" + json.dumps(report["method_options"]) + "`", ""]
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    methods = list(report["methods"])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(methods) + 2), 4))
    means = [100 * report["methods"][m]["accuracy"]["mean"] for m in methods]
    stds = [100 * report["methods"][m]["accuracy"]["std"] for m in methods]
    ax.bar(methods, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    lines = {"mean": report["teachers_union_accuracy"], "UHC": report.get("teachers_uhc_accuracy"),
             "UHC balanced": report.get("teachers_uhc_balanced_accuracy")}
    references = {name: 100 * value for name, value in lines.items() if value is not None}
    for (name, value), style in zip(references.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, color="tab:red", linestyle=style, label=f"teachers combined ({name}) {value:.1f} %")
    low = min(means + list(references.values()))
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"task {report['task']}: mean ± std over {report['seeds']} seed(s), best-on-validation")
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_compare_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    atomic_write_bytes(out_dir / "compare.json", lambda p: p.write_text(text))
    md = markdown(report)
    atomic_write_bytes(out_dir / "compare.md", lambda p: p.write_text(md))
    figure(report, out_dir / "compare.png")
