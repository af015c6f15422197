"""The default recipes: `python train.py` with no method flag runs configs/default.toml,
`--labels none` alone runs configs/label-free.toml without reading a training label, flags the
user gives still win; and knowledge adjustment (`uhc-ka`) by hand on a tiny batch."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from amalgam.cli import train_cli
from amalgam.cli.config_file import read_config_file
from amalgam.distill.engine.train_config import STUDENT_AUGMENT
from amalgam.distill.losses.adjusted import knowledge_adjusted
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.distill.runs.recipes import (
    LABEL_FREE_RECIPE,
    LABELED_RECIPE,
    RECIPES,
    SHORT_RECIPE,
    Recipe,
    recipe_defaults,
)
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.tasks.images import ImageSet
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec


class Captured(Exception):
    def __init__(self, settings: DistilSettings):
        super().__init__("captured")
        self.settings = settings


def settings_for(monkeypatch, args: list[str]) -> DistilSettings:
    """The DistilSettings `train.py ARGS` would run, captured where it would start training."""
    def capture(settings, **_):
        raise Captured(settings)

    monkeypatch.setattr(train_cli, "distil", capture)
    result = CliRunner().invoke(train_cli.app, args)
    assert isinstance(result.exception, Captured), result.output
    return result.exception.settings


def comparable(settings: DistilSettings) -> dict:
    return settings.to_dict()


REPO = Path(__file__).resolve().parents[1]  # where configs/ ships (PROJECT_ROOT is a temporary home here)


def recipe_file(recipe: Recipe) -> str:
    return str(REPO / recipe.config_file)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_file_holds_the_recipe(recipe: str):
    assert read_config_file(Path(recipe_file(RECIPES[recipe]))) == dict(RECIPES[recipe].values)


def test_no_flags_run_the_default_file_and_labels_none_alone_the_label_free_file(monkeypatch):
    plain = settings_for(monkeypatch, [])
    from_file = settings_for(monkeypatch, ["--config", recipe_file(LABELED_RECIPE)])
    assert comparable(plain) == comparable(from_file)
    assert plain.method == LABELED_RECIPE.values["method"] and plain.train.labels == "train"
    assert plain.method_options.class_prior == "labels" and plain.method_options.teacher_trust == "per-class"
    free = settings_for(monkeypatch, ["--labels", "none"])
    from_file = settings_for(monkeypatch, ["--config", recipe_file(LABEL_FREE_RECIPE)])
    assert comparable(free) == comparable(from_file)
    assert free.method == "fitnet+amalgam-kd" and free.train.labels == "none"
    assert free.train.epochs == LABEL_FREE_RECIPE.values["epochs"]
    assert free.method_options.class_prior == "uniform" and free.method_options.target_neighbours == 20


def test_flags_the_user_gives_still_mean_what_they_say(monkeypatch):
    given = settings_for(monkeypatch, ["--task", "B", "--temperature", "3", "--alpha", "0.5"])
    assert given.task == "B" and given.method_options.temperature == 3.0 and given.method_options.alpha == 0.5
    assert given.method == LABELED_RECIPE.values["method"]
    free = settings_for(monkeypatch, ["--labels", "none", "--epochs", "2", "-T", "5"])
    assert free.train.epochs == 2 and free.method_options.temperature == 5.0
    assert free.method == "fitnet+amalgam-kd" and free.method_options.target_neighbours == 20
    # a named method is the user's: no half of a recipe is added to it
    named = settings_for(monkeypatch, ["--labels", "none", "--method", "amalgam-kd"])
    assert named.method_options == MethodOptions() and named.train.epochs == 12
    assert recipe_defaults("none", {"method"}) == {}


def pipeline_call(monkeypatch, capsys, args: list[str]) -> tuple[dict, str]:
    """The arguments `train.py pipeline ARGS` would run the job with, captured before it starts,
    and what it printed until then."""
    from amalgam.workflows import pipeline

    def capture(**kwargs):
        raise Captured(kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", capture)
    result = CliRunner().invoke(train_cli.app, ["pipeline", *args])
    assert isinstance(result.exception, Captured), result.output
    printed = capsys.readouterr()
    return result.exception.settings, " ".join((result.output + printed.out + printed.err).split())


def test_the_main_job_distils_with_the_default_recipe(monkeypatch, capsys):
    """`make demo` shows what `python train.py` does: the default recipe, its schedule included,
    for every setting not given; a named method gets its own defaults, as on train.py."""
    plain, said = pipeline_call(monkeypatch, capsys, [])
    recipe = LABELED_RECIPE.values
    assert plain["method"] == recipe["method"] and plain["epochs"] == recipe["epochs"]
    assert plain["augment"] == recipe["augment"]  # the CE baseline beside it sees the same views
    options = {k: v for k, v in recipe.items() if k in MethodOptions.__dataclass_fields__}
    assert plain["method_options"] == replace(MethodOptions(), **options)
    assert "does not use" not in said
    given, _ = pipeline_call(monkeypatch, capsys, ["--epochs", "3", "--temperature", "2"])
    assert given["epochs"] == 3 and given["method_options"].temperature == 2.0
    assert given["method_options"].teacher_trust == "per-class"
    short, _ = pipeline_call(monkeypatch, capsys, ["--config", recipe_file(SHORT_RECIPE)])  # the quick demo
    assert (short["epochs"], short["augment"]) == (24, "flip") and short["method"] == recipe["method"]
    named, said = pipeline_call(monkeypatch, capsys, ["--method", "kd", "--hint-weight", "3"])
    assert named["method_options"] == replace(MethodOptions(), hint_weight=3.0) and named["epochs"] == 15
    assert named["augment"] == STUDENT_AUGMENT
    assert "method kd does not use --hint-weight" in said  # as train.py says it


def test_labels_none_alone_trains_without_reading_a_label(monkeypatch, tiny):
    """The settings `train.py --labels none` builds (tiny epochs and sizes given as flags), run on
    the true and on garbage training labels: bit-identical weights (same process, same batches)."""
    home, data = tiny
    settings = settings_for(monkeypatch, ["--labels", "none", "--task", "fashion-mini", "--epochs", "1",
                                          "--batch-size", "16", "--img-size", "32", "--train-per-class", "12",
                                          "--device", "cpu", "--quiet"])
    assert settings.method == "fitnet+amalgam-kd" and settings.train.labels == "none"
    garbage = torch.randint(0, 10, (len(data.train),), generator=torch.Generator().manual_seed(11))
    assert (garbage != data.train.labels).any()
    spoiled = replace(data, train=ImageSet(data.train.images, garbage))
    weights = []
    for name, given in (("true", data), ("garbage", spoiled)):
        run_dir = distil(settings, out_dir=home / "runs" / f"recipe_{name}", root=home, data=given).run_dir
        weights.append(load_file(str(run_dir / "last.safetensors")))
    honest, fooled = weights
    assert honest.keys() == fooled.keys() and all(torch.equal(honest[k], fooled[k]) for k in honest)


# --- knowledge adjustment, by hand -----------------------------------------------------------

def test_knowledge_adjustment_swaps_the_top_class_and_the_label_only_where_wrong():
    targets = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    labels = torch.tensor([1, 1, 2])
    expected = torch.tensor([[0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5]])
    assert torch.allclose(knowledge_adjusted(targets, labels), expected, atol=1e-7)


def test_uhc_ka_is_kd_towards_the_adjusted_union_target():
    """One teacher knowing every class: UHC is its softmax, so every figure is computable by hand."""
    spec = TaskSpec("r", ("a", "b", "c"), (TeacherSpec("t", ("a", "b", "c")),), DataSpec("none"))
    method = build_method("uhc-ka", spec.roster(), MethodOptions(temperature=2.0, alpha=0.5))
    teacher_logits = torch.tensor([[[4.0, 2.0, 0.0]]])  # [B=1, K=1, L=3]
    student_logits = torch.zeros(1, 3)
    terms = method.loss_terms(student_logits, None, TeacherOutputs(teacher_logits), torch.tensor([2]))
    e = [math.exp(v / 2.0) for v in (4.0, 2.0, 0.0)]
    p = [x / sum(e) for x in e]
    adjusted = [p[2], p[1], p[0]]  # the label (c) takes the top class's (a) probability
    kl = sum(a * math.log(a / (1 / 3)) for a in adjusted)
    assert terms["loss_kd"].item() == pytest.approx(0.5 * 4.0 * kl, abs=1e-5)
    assert terms["loss_ce"].item() == pytest.approx(0.5 * math.log(3), abs=1e-6)
    right = method.loss_terms(student_logits, None, TeacherOutputs(teacher_logits), torch.tensor([0]))
    kl_as_is = sum(a * math.log(a / (1 / 3)) for a in p)
    assert right["loss_kd"].item() == pytest.approx(0.5 * 4.0 * kl_as_is, abs=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from amalgam.distill.engine.train_config import TrainConfig
    from amalgam.distill.teachers.training import train_all_teachers
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import load_task_data

    home: Path = tmp_path_factory.mktemp("recipes_home")
    data = load_task_data(get_task("fashion-mini"), train_per_class=12)
    train_all_teachers(data, TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu"), 32, root=home)
    return home, data
