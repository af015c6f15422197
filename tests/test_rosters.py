"""Drawn rosters, the UHC combination of partial teachers, and what the default
method and the ramped DKD read."""

from __future__ import annotations

import math

import pytest
import torch

from amalgam.distill.losses import hint_loss, uhc_union_probs
from amalgam.distill.methods import DEFAULT_METHOD, METHODS, MethodOptions, TeacherOutputs, build_method
from amalgam.distill.methods.dkd import warmup_factor
from amalgam.errors import UserError
from amalgam.tasks.builtin import get_task
from amalgam.tasks.fashion import FASHION_CLASSES
from amalgam.tasks.roster_draw import draw_roster
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from amalgam.workflows.roster_compare import parse_roster_seeds, pool, pooled_markdown


@pytest.mark.parametrize("seed", range(40))
def test_a_drawn_roster_covers_every_class_within_the_stated_sizes(seed):
    teachers = draw_roster(FASHION_CLASSES, seed)
    assert len(teachers) == 3
    assert all(3 <= len(t.classes) <= 5 for t in teachers)
    known = [c for t in teachers for c in t.classes]
    assert set(known) == set(FASHION_CLASSES)  # every class covered
    shared = {c for c in known if known.count(c) > 1}
    assert 2 <= len(shared) <= 3
    assert all(set(t.classes) - shared for t in teachers)  # each teacher also has a class of its own


def test_a_drawn_roster_is_the_same_for_the_same_seed_and_pinned():
    assert draw_roster(FASHION_CLASSES, 7) == draw_roster(FASHION_CLASSES, 7)
    assert draw_roster(FASHION_CLASSES, 7) != draw_roster(FASHION_CLASSES, 8)
    # Pinned: a change of the drawing would silently change every reported roster.
    assert [t.classes for t in draw_roster(FASHION_CLASSES, 7)] == [
        ("Pullover", "Sandal", "Shirt", "Sneaker", "Bag"),
        ("Trouser", "Coat", "Ankle boot"),
        ("T-shirt/top", "Pullover", "Dress", "Coat", "Sandal"),
    ]


def test_a_drawn_roster_is_a_task_of_its_own():
    spec = get_task("fashion-roster7")
    assert spec.name == spec.dir_name == "fashion-roster7"
    assert spec.teachers == draw_roster(FASHION_CLASSES, 7)
    fashion = get_task("fashion")
    assert spec.data == fashion.data and spec.student_input_size == fashion.student_input_size
    assert "seed 7" in spec.description
    for bad in ("fashion-roster", "fashion-roster07", "B-roster3", "fashion-rosterx"):
        with pytest.raises(UserError, match="unknown task"):
            get_task(bad)


def test_roster_seeds_are_parsed_or_refused():
    assert parse_roster_seeds("200, 201,202") == [200, 201, 202]
    for bad in ("", "a,b", "1,1", "-3"):
        with pytest.raises(UserError, match="--rosters"):
            parse_roster_seeds(bad)


def chain_roster():
    """a, b, c with t1 = (a, b) and t2 = (b, c): they share b."""
    spec = TaskSpec("chain", ("a", "b", "c"), (TeacherSpec("t1", ("a", "b")), TeacherSpec("t2", ("b", "c"))),
                    DataSpec("none"))
    return spec.roster()


def test_uhc_of_teachers_that_agree_is_exact():
    # t1 says a:b = 4:1, t2 says b:c = 1:1, so q = (4, 1, 1)/6 restricts to each exactly.
    logits = torch.log(torch.tensor([[[0.8, 0.2], [0.5, 0.5]]]))
    q = uhc_union_probs(logits, chain_roster())
    assert torch.allclose(q, torch.tensor([[4 / 6, 1 / 6, 1 / 6]]), atol=1e-6)


def test_uhc_of_teachers_on_the_same_classes_is_their_mean():
    # Minimising KL(p1 || q) + KL(p2 || q) over q gives q = (p1 + p2) / 2.
    spec = TaskSpec("same", ("a", "b"), (TeacherSpec("t1", ("a", "b")), TeacherSpec("t2", ("a", "b"))),
                    DataSpec("none"))
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    assert torch.allclose(uhc_union_probs(logits, spec.roster()), torch.tensor([[0.7, 0.3]]), atol=1e-6)


def uhc_objective(q: torch.Tensor, local_logits: torch.Tensor, roster, temperature: float) -> torch.Tensor:
    """Σ_k KL(p_k || q restricted to teacher k), written out per teacher for the check."""
    total = torch.zeros(q.shape[0], dtype=torch.float64)
    for k in range(roster.num_teachers):
        width = int(roster.local_mask[k].sum())
        p = torch.softmax(local_logits[:, k, :width].double() / temperature, dim=1)
        restricted = q[:, roster.local_to_global[k, :width]].double()
        restricted = restricted / restricted.sum(dim=1, keepdim=True)
        total += (p * (p.log() - restricted.log())).sum(dim=1)
    return total


def test_uhc_minimises_its_objective_when_teachers_disagree():
    roster = get_task("fashion").roster()
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(64, 3, 4, generator=generator)
    q = uhc_union_probs(logits, roster, temperature=2.0)
    assert torch.allclose(q.sum(dim=1), torch.ones(64), atol=1e-5)
    best = uhc_objective(q, logits, roster, 2.0)
    # Better than the per-class mean of the teachers, and than any nearby point of the simplex.
    from amalgam.distill.losses.targets import combined_teacher_probs

    mean = combined_teacher_probs(logits / 2.0, roster)
    assert (best <= uhc_objective(mean, logits, roster, 2.0) + 1e-6).all()
    for _ in range(5):
        nearby = q.double() * torch.exp(0.05 * torch.randn(q.shape, generator=generator, dtype=torch.float64))
        nearby = nearby / nearby.sum(dim=1, keepdim=True)
        assert (best <= uhc_objective(nearby, logits, roster, 2.0) + 1e-6).all()


def test_hint_loss_does_not_depend_on_the_feature_scale():
    generator = torch.Generator().manual_seed(1)
    teacher = [torch.randn(4, 8, 3, 3, generator=generator), torch.randn(4, 6, 2, 2, generator=generator)]
    guess = [t + 0.3 * torch.randn(t.shape, generator=generator) for t in teacher]
    base = hint_loss(guess, teacher)
    assert torch.allclose(hint_loss([25 * g for g in guess], [25 * t for t in teacher]), base, rtol=1e-5)
    zeros = hint_loss([torch.zeros_like(t) for t in teacher], teacher)
    assert torch.allclose(zeros, torch.tensor(2.0))  # a regressor that outputs nothing misses it all


def default_method_loss(options: MethodOptions) -> float:
    spec = get_task("fashion")
    method = build_method(DEFAULT_METHOD, spec.roster(), options)
    generator = torch.Generator().manual_seed(2)
    student_features = torch.randn(4, 16, 2, 2, generator=generator)
    teacher_features = [torch.randn(4, 8, 1, 1, generator=generator) for _ in range(3)]
    torch.manual_seed(0)
    method.setup(student_features, teacher_features, [])
    teacher = TeacherOutputs(torch.randn(4, 3, 4, generator=generator), teacher_features)
    terms = method.loss_terms(torch.randn(4, 10, generator=generator), student_features, teacher,
                              torch.tensor([0, 3, 6, 9]))
    return float(sum(terms.values()).detach())


def test_the_default_method_reads_temperature_and_alpha():
    assert {"temperature", "alpha"} <= set(METHODS[DEFAULT_METHOD].options_used)
    base = default_method_loss(MethodOptions(temperature=3.0, alpha=0.5))
    for changed in (MethodOptions(temperature=1.5, alpha=0.5), MethodOptions(temperature=3.0, alpha=0.9)):
        assert not math.isclose(base, default_method_loss(changed), rel_tol=1e-4)


def test_dkd_ramps_up_as_mdistiller_does():
    assert warmup_factor(0, 0.0) == 1.0  # no warm-up
    assert [warmup_factor(e, 4.0) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    spec = get_task("fashion")
    method = build_method("dkd", spec.roster(), MethodOptions(dkd_warmup=4.0))
    args = (torch.randn(4, 10), None, TeacherOutputs(torch.randn(4, 3, 4)), torch.tensor([0, 3, 6, 9]))
    first = method.loss_terms(*args)
    method.start_epoch(3)
    full = method.loss_terms(*args)
    assert torch.allclose(first["loss_ce"], full["loss_ce"])
    assert torch.allclose(4 * first["loss_nckd"], full["loss_nckd"])


def fake_report(roster: str, accuracies: dict[str, list[float]]) -> dict:
    methods = {}
    for method, values in accuracies.items():
        runs = [{metric: value for metric in ("accuracy", "macro_f1", "nll", "ece", "ece_ts",
                                              "errors_shared_teacher", "errors_no_shared_teacher")}
                for value in values]
        mean = sum(values) / len(values)
        std = torch.tensor(values, dtype=torch.float64).std().item() if len(values) > 1 else 0.0
        methods[method] = {"accuracy": {"mean": mean, "std": std}, "per_seed": runs}
    return {"roster": {"teacher_1": [roster]}, "teachers_union_accuracy": 0.5, "teachers_uhc_accuracy": 0.6,
            "methods": methods, "failed": {}}


def test_pooled_report_is_per_roster_and_over_every_run():
    pooled = pool({"r1": fake_report("x", {"ce": [0.7, 0.8]}), "r2": fake_report("y", {"ce": [0.9]})})
    assert pooled["rosters"]["r1"]["accuracy"]["ce"] == pytest.approx(0.75)
    assert pooled["methods"]["ce"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert pooled["methods"]["ce"]["accuracy"]["std"] == pytest.approx(0.1)
    assert pooled["methods"]["ce"]["runs"] == 3
    text = pooled_markdown(pooled)
    assert "| ce | 75.00 ± 7.07 | 90.00 | 80.00 ± 10.00 |" in text  # roster r2 ran one seed
    assert "teachers combined (UHC) | 60.00 | 60.00" in text
    assert "balanced" not in text  # reports from before the balanced line have no row for it
    balanced = {name: {**fake_report(name, {"ce": [0.7]}), "teachers_uhc_balanced_accuracy": 0.65}
                for name in ("r1", "r2")}
    assert "teachers combined (UHC, balanced) | 65.00 | 65.00" in pooled_markdown(pool(balanced))


def test_finished_roster_comparisons_are_pooled_from_disk(tmp_path):
    import json

    from amalgam.workflows.roster_compare import pool_finished

    with pytest.raises(UserError, match="no <roster>/compare.json"):
        pool_finished(tmp_path)
    for name, values in (("fashion-roster1", [0.7, 0.8]), ("fashion-roster2", [0.9])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps(fake_report(name, {"ce": values})))
    pooled = pool_finished(tmp_path)
    assert list(pooled["rosters"]) == ["fashion-roster1", "fashion-roster2"]
    assert pooled["methods"]["ce"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert "| ce | 75.00 ± 7.07 | 90.00 |" in (tmp_path / "pooled.md").read_text()


def test_an_arm_that_reads_no_teacher_runs_once_over_several_rosters(tmp_path, monkeypatch):
    """`compare --rosters`: `ce` trains on the first roster only; the other rosters' reports carry
    those runs, say where from, and pooling counts them once. Teacher arms run on every roster."""
    import amalgam.workflows.roster_compare as roster_compare

    trained = []

    def fake_run_compare(task, methods, out_dir, shared=None, **_):
        report = fake_report(task, {})
        for arm in methods:
            if shared and arm in shared:
                report["methods"][arm] = shared[arm]
            else:
                trained.append((task, arm))
                report["methods"][arm] = fake_report(task, {arm: [0.7, 0.8]})["methods"][arm]
        return report

    monkeypatch.setattr(roster_compare, "run_compare", fake_run_compare)
    pooled = roster_compare.run_roster_compare("fashion", [5, 6], tmp_path / "out", methods=["ce", "kd"])
    assert trained == [("fashion-roster5", "ce"), ("fashion-roster5", "kd"), ("fashion-roster6", "kd")]
    assert pooled["methods"]["ce"]["runs"] == 2 and pooled["methods"]["kd"]["runs"] == 4
    assert pooled["rosters"]["fashion-roster6"]["accuracy"]["ce"] == pytest.approx(0.75)


@pytest.mark.slow
def test_a_shared_arm_is_not_trained_and_the_report_says_whose_runs_it_holds(tmp_path):
    """run_compare itself: an arm in `shared` trains no student and compare.md names the roster
    its runs come from."""
    from amalgam.distill.engine.train_config import TrainConfig
    from amalgam.distill.methods import MethodOptions
    from amalgam.distill.teachers.training import train_all_teachers
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.loader import load_task_data
    from amalgam.workflows.compare import run_compare, summarise

    task = "fashion-mini-roster6"
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")
    train_all_teachers(load_task_data(get_task(task), train_per_class=8), config, 32, root=tmp_path)
    runs = fake_report("r", {"ce": [0.7]})["methods"]["ce"]["per_seed"]
    source = "fashion-mini-roster5"
    shared = {"ce": {**summarise(runs), "labels": "train", "per_seed": runs, "shared_from": source}}
    report = run_compare(task, ["ce"], 1, "mobilenetv3_small", MethodOptions(), config, 32, 8, None,
                         root=tmp_path, out_dir=tmp_path / "out", shared=shared)
    assert report["methods"]["ce"] is shared["ce"]
    assert not any((tmp_path / "out" / "runs").glob("*/*"))  # no run folder: nothing trained
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "`ce` reads no teacher, so its runs are fashion-mini-roster5's" in text
