"""`train.py teachers | pipeline | compare | export | push`: each parses its options and calls one workflow.

The workflow modules are imported inside each command, so `train.py --help` and a plain
distillation run do not load what only one other command needs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from amalgam import PROJECT_ROOT
from amalgam.cli.config_file import ConfigOpt
from amalgam.cli.field_flags import TRAIN_FLAGS, with_field_flags
from amalgam.cli.method_options import METHOD_OPTION_FLAGS, warn_unused_options, with_method_options
from amalgam.cli.recipe_flags import apply_recipe
from amalgam.cli.train_options import (
    DataDirOpt,
    ExtraTeacherOnlyOpt,
    ExtraTeacherOpt,
    ImgSizeOpt,
    MethodOpt,
    PerClassOpt,
    StudentOpt,
    TaskOpt,
    TeacherRecipeOpt,
    ValFracOpt,
    check_fraction,
    check_img_size,
    check_teacher_recipe,
    train_config,
)
from amalgam.distill.engine.label_modes import LABELED
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.option_fields import METHOD_PANEL, RUN_PANEL, TEACHERS_PANEL
from amalgam.errors import UserError
from amalgam.models.students import canonical_student
from amalgam.ui import console, say


@with_field_flags(TrainConfig, TRAIN_FLAGS, "teachers")
def teachers_command(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    task: str = TaskOpt,
    recipe: str = typer.Option(
        "default", "--recipe", "--teacher-recipe",
        help="default: the task's architecture, in checkpoints/<task>/; strong: cnn-medium, 30 epochs, "
        "in checkpoints/<task>/teachers-strong/; more-data: 1,500 more training images per class from "
        "the task's source (fashion-mini), in checkpoints/<task>/teachers-more-data/",
        rich_help_panel=TEACHERS_PANEL,
    ),
    train: dict = TRAIN_FLAGS,  # --epochs, --lr, --seed, …: TrainConfig's fields, the teachers' defaults
    img_size: int | None = ImgSizeOpt,
    val_fraction: float = ValFracOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
) -> None:
    """Train each teacher on its own classes; saves checkpoints/<task>/teacher_<k>
    (`--recipe NAME`: checkpoints/<task>/teachers-NAME/teacher_<k>)."""
    from amalgam.distill.teachers.training import train_task_teachers
    from amalgam.tasks.teacher_recipes import teacher_recipe

    chosen = teacher_recipe(recipe)
    source = ctx.get_parameter_source("epochs")
    given = source is not None and source.name in ("COMMANDLINE", "DEFAULT_MAP")
    config = train_config(train) if given else train_config(train, epochs=chosen.epochs)
    reports = train_task_teachers(
        task, data_dir, check_fraction(val_fraction, "--val-fraction"), train_per_class, config,
        check_img_size(img_size), recipe=chosen.name,
    )
    if not reports:
        console.print("nothing to train: every teacher of the task has a checkpoint of its own")
    for report in reports:
        console.print(
            f"{report.name}: {report.test_accuracy:.2%} test accuracy on its "
            f"{len(report.classes)} classes ({', '.join(report.classes)})"
        )


@with_method_options
@with_field_flags(TrainConfig, TRAIN_FLAGS, "pipeline", only=("epochs", "augment", "seed", "device", "quiet"))
def pipeline_command(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    task: str = TaskOpt,
    student: str = StudentOpt,
    method: str = MethodOpt,
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    train: dict = TRAIN_FLAGS,  # --epochs, --seed, --device, --quiet: TrainConfig's fields
    teacher_epochs: int = typer.Option(10, "--teacher-epochs", help="epochs to train each teacher",
                                       rich_help_panel=TEACHERS_PANEL),
    teacher_recipe: str = TeacherRecipeOpt,
    img_size: int | None = ImgSizeOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
) -> None:
    """Teachers → CE baseline → distilled student → evaluation, then one summary table.

    Without --method the student is distilled with the default recipe (configs/default.toml,
    96 epochs) for any setting not given, as `python train.py` does; the CE baseline is trained
    as long, on the same views."""
    from amalgam.workflows.pipeline import print_summary, run_pipeline

    method = apply_recipe(ctx, method, LABELED, train, method_options)
    warn_unused_options(ctx, method)
    checked = train_config(train)  # the values checked as every command checks them, device resolved
    summary = run_pipeline(
        task=task,
        student=canonical_student(student),
        method=method,
        method_options=MethodOptions(**method_options),
        epochs=checked.epochs,
        teacher_epochs=teacher_epochs,
        img_size=check_img_size(img_size),
        seed=checked.seed,
        train_per_class=train_per_class,
        data_dir=data_dir,
        device=checked.device,
        quiet=checked.quiet,
        teacher_recipe=check_teacher_recipe(teacher_recipe),
        augment=checked.augment,
    )
    print_summary(summary)
    say(f"reports in {summary['evaluation_dir']}")


@with_method_options
@with_field_flags(TrainConfig, TRAIN_FLAGS, "compare")
def compare_command(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    task: str = TaskOpt,
    methods: str = typer.Option(
        ",".join(METHODS), "--methods",
        help="comma-separated; METHOD:none trains that arm without labels, METHOD:train with them "
        "(default: --labels)", show_default="every method", rich_help_panel=METHOD_PANEL),
    extra_teachers: list[str] = ExtraTeacherOpt,  # named as in config.json, so --config reads it
    extra_teachers_only: bool = ExtraTeacherOnlyOpt,
    teacher_recipes: str = typer.Option(
        "default", "--teacher-recipe", "--teacher-recipes",
        help="which trained teachers: default, strong or more-data (`train.py teachers --recipe NAME`); "
        "with --rosters a comma-separated list (default,more-data) compares each roster with each"),
    seeds: int = typer.Option(3, "--seeds", help="runs per method (seeds seed, seed+1, …)"),
    rosters: str | None = typer.Option(
        None, "--rosters", help="comma-separated roster seeds: compare on each drawn roster "
        "(task fashion or fashion-mini) and pool; teachers of each must be trained first"),
    student: str = StudentOpt,
    train: dict = TRAIN_FLAGS,  # --epochs, --lr, --seed, …: one per TrainConfig field
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    img_size: int | None = ImgSizeOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
    out: Path | None = typer.Option(None, "--out", help="report folder (default reports/<task>)",
                                    rich_help_panel=RUN_PANEL),
) -> None:
    """Train every method with the same budget over several seeds; write reports/<task>/compare.*."""
    from amalgam.distill.teachers.extra import resolve_extra_teachers
    from amalgam.workflows.compare import parse_methods, run_compare
    from amalgam.workflows.roster_compare import parse_teacher_recipes

    config = train_config(train)  # `--labels` is only the default of each arm's (`--methods`)
    options = MethodOptions(**method_options)
    compare_args = dict(
        methods=parse_methods(methods, train["labels"]), seeds=seeds, student=canonical_student(student),
        options=options, config=config, img_size=check_img_size(img_size), train_per_class=train_per_class,
        data_dir=data_dir,
    )
    extra = resolve_extra_teachers(extra_teachers, extra_teachers_only)
    recipes = parse_teacher_recipes(teacher_recipes)
    if len(recipes) > 1 and rosters is None:
        raise UserError("several --teacher-recipe values need --rosters; without it compare one at a time")
    if rosters is not None:
        if extra:
            raise UserError("--extra-teacher is for one task; with --rosters, compare each roster on its own")
        from amalgam.workflows.roster_compare import parse_roster_seeds, run_roster_compare

        out = out or PROJECT_ROOT / "reports" / f"{task}-rosters"
        pooled = run_roster_compare(task, parse_roster_seeds(rosters), out, recipes=recipes, **compare_args)
        for name, stats in pooled["methods"].items():
            console.print(f"{name:>11}: pooled accuracy {stats['accuracy']['mean']:.2%} ± "
                          f"{stats['accuracy']['std']:.2%} over {stats['runs']} runs")
        say(f"pooled report: {out / 'pooled.md'}")
        return
    report = run_compare(
        task, out_dir=out, extra_teachers=extra, extra_teachers_only=extra_teachers_only,
        teacher_recipe=recipes[0], **compare_args
    )
    for name, stats in report["methods"].items():
        console.print(
            f"{name:>11}: accuracy {stats['accuracy']['mean']:.2%} ± {stats['accuracy']['std']:.2%}, "
            f"ECE after T-scaling {stats['ece_ts']['mean']:.3f}"
        )
    console.print(f"teachers combined: {report['teachers_union_accuracy']:.2%} (mean of probabilities), "
                  f"{report['teachers_uhc_accuracy']:.2%} (UHC), "
                  f"{report['teachers_uhc_balanced_accuracy']:.2%} (UHC balanced over the training images)")
    for name, failures in report["failed"].items():
        console.print(
            f"[red]{name} failed[/] on {len(failures)} seed(s): {failures[0]['error']}", markup=True
        )


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory (exports its best student) or a checkpoint stem"),
    fmt: str = typer.Option("onnx", "--format", help="onnx, torchscript or timm (a folder timm loads)"),
    out: Path | None = typer.Option(
        None, "--out", help="file to write (default RUN_DIR/student.<ext>); for timm a folder (RUN_DIR/timm)",
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="measure params, size and CPU latency"),
) -> None:
    """Write the best student as one ONNX or TorchScript file with its classes and preprocessing
    inside, or as a folder in timm's pretrained layout (--format timm)."""
    if fmt == "timm":
        from amalgam.harness.hub_push import export_timm

        export_timm(run_dir, out)
        return
    from amalgam.harness.model_report import export_and_report

    export_and_report(run_dir, fmt, out, report)


def push_command(
    run_dir: Path = typer.Argument(..., help="run directory (pushes its best student) or a checkpoint stem"),
    repo_id: str = typer.Argument(..., help="Hugging Face Hub model repo, USER/NAME (created if missing)"),
    out: Path | None = typer.Option(None, "--out", help="timm folder to build and upload (RUN_DIR/timm)"),
    private: bool | None = typer.Option(None, "--private/--public", help="visibility of a new repo"),
    message: str | None = typer.Option(None, "--message", help="commit message"),
) -> None:
    """Upload the student's timm folder (`export --format timm`) to the Hugging Face Hub.

    Needs huggingface_hub and a token (`hf auth login` or HF_TOKEN)."""
    from amalgam.harness.hub_push import push_to_hub

    push_to_hub(run_dir, repo_id, out, private, message)
