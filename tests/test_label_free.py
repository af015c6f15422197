"""Amalgamation without labels: the label-free losses by hand, `--labels none` (training that
cannot depend on a training label), unlabeled images in a task, and labeled and label-free
arms in one comparison."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from amalgam.cli import train_cli
from amalgam.distill.engine.label_modes import check_labels_mode, label_free_methods
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.losses import (
    CFL_SIGMAS,
    least_ambiguous_targets,
    least_ambiguous_teacher,
    mmd_multi_kernel,
    uhc_union_probs,
)
from amalgam.distill.methods import METHODS, MethodOptions, TeacherOutputs, build_method
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.teachers.training import train_all_teachers
from amalgam.errors import UserError
from amalgam.harness.compare_report import markdown
from amalgam.tasks.builtin import get_task
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import UNLABELED, load_task_data
from amalgam.workflows.compare import parse_methods, run_compare, split_arm
from tests.helpers.front_ends import assert_one_line_error, run_in_process
from tests.helpers.homes import copy_teachers
from tests.helpers.small_models import padded, roster_of
from tests.helpers.task_files import write_folder_task

LABEL_FREE = ("amalgam-kd", "fitnet+amalgam-kd", "cfl", "adaptive")


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def softmax(values, t=1.0):
    e = [math.exp(v / t) for v in values]
    return [x / sum(e) for x in e]


# --- the losses, by hand -------------------------------------------------------------------


def test_mmd_on_two_known_samples():
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # K_xx = [[1, e^-1], [e^-1, 1]], K_yy = 1, K_xy = [[1, 1], [e^-1, e^-1]] (σ = 1: exp(-d²/2))
    expected = (2 + 2 / math.e) / 4 + 1 - 2 * (2 + 2 / math.e) / 4
    assert float(mmd_multi_kernel(x, y, (1.0,))) == pytest.approx(expected, rel=1e-6)
    # features are L2-normalised first: (3, 4) is (0.6, 0.8), at squared distance 0.8 from (1, 0)
    one, other = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    by_hand = 2 + 2 - 2 * (math.exp(-0.8 / 2) + math.exp(-0.8 / 8))
    assert float(mmd_multi_kernel(one, other, (1.0, 2.0))) == pytest.approx(by_hand, rel=1e-6)
    all_widths = 2 * len(CFL_SIGMAS) - 2 * sum(math.exp(-0.8 / (2 * s * s)) for s in CFL_SIGMAS)
    assert float(mmd_multi_kernel(one, other)) == pytest.approx(all_widths, rel=1e-6)
    same = torch.randn(5, 3, 2, 2)
    assert float(mmd_multi_kernel(same, same.clone())) == pytest.approx(0.0, abs=1e-6)


def test_the_least_ambiguous_teacher_is_chosen_on_entropy_scaled_by_its_class_count():
    roster = roster_of(("a", "b"), ("b", "c", "d", "e"))
    p_small = [[0.9, 0.1], [0.99, 0.01]]
    p_big = [[0.85, 0.05, 0.05, 0.05], [0.7, 0.1, 0.1, 0.1]]
    logits = torch.stack([padded([math.log(v) for v in p_small[b]], [math.log(v) for v in p_big[b]], width=4)
                          for b in range(2)])
    # image 0: entropies 0.325 (2 classes) and 0.587 (4 classes); over log(2) and log(4) they are
    # 0.469 and 0.424, so the 4-class teacher is the less ambiguous one. Image 1: 0.081 vs 0.678.
    assert least_ambiguous_teacher(logits, roster).tolist() == [1, 0]
    t = 2.0
    targets = least_ambiguous_targets(logits, roster, t)
    sharpened = [math.sqrt(v) for v in p_big[0]]  # softmax(log p / 2) ∝ √p
    expected0 = [0.0] + [v / sum(sharpened) for v in sharpened]
    sharpened = [math.sqrt(v) for v in p_small[1]]
    expected1 = [v / sum(sharpened) for v in sharpened] + [0.0, 0.0, 0.0]
    torch.testing.assert_close(targets, torch.tensor([expected0, expected1]))


def test_amalgam_kd_is_kl_to_the_union_the_teachers_agree_on():
    roster = roster_of(("a", "b"), ("b", "c"), classes="abc")
    q = [0.5, 0.3, 0.2]  # the teachers are exact restrictions of q, so UHC gives q back
    t = 2.0
    teacher = padded([t * math.log(v) for v in (0.625, 0.375)], [t * math.log(v) for v in (0.6, 0.4)],
                     width=2)[None]
    torch.testing.assert_close(uhc_union_probs(teacher, roster, t), torch.tensor([q]), rtol=0, atol=1e-6)
    student = torch.tensor([[0.3, -0.2, 1.1]])
    method = build_method("amalgam-kd", roster, MethodOptions(temperature=t, alpha=0.3))
    terms = method.loss_terms(student, None, TeacherOutputs(teacher), None)  # no labels at all
    assert list(terms) == ["loss_kd"]
    expected = t * t * kl(q, softmax(student[0].tolist(), t))
    assert float(terms["loss_kd"]) == pytest.approx(expected, rel=1e-5)


def test_hard_target_weight_adds_cross_entropy_to_the_targets_top_class():
    roster = roster_of(("a", "b"), ("b", "c"), classes="abc")
    q = [0.5, 0.3, 0.2]  # as above: UHC gives q back, whose top class is "a"
    t = 2.0
    teacher = padded([t * math.log(v) for v in (0.625, 0.375)], [t * math.log(v) for v in (0.6, 0.4)],
                     width=2)[None]
    student = torch.tensor([[0.3, -0.2, 1.1]])
    options = MethodOptions(temperature=t, hard_target_weight=0.7)
    method = build_method("amalgam-kd", roster, options)
    terms = method.loss_terms(student, None, TeacherOutputs(teacher), None)
    assert list(terms) == ["loss_kd", "loss_hard_target"]
    assert float(terms["loss_kd"]) == pytest.approx(t * t * kl(q, softmax(student[0].tolist(), t)), rel=1e-5)
    assert float(terms["loss_hard_target"]) == pytest.approx(-0.7 * math.log(softmax(student[0].tolist())[0]),
                                                             rel=1e-5)


def test_adaptive_is_kl_to_the_chosen_teacher_plus_fitnet_hints():
    roster = roster_of(("a", "b"), ("b", "c", "d", "e"))
    logits = padded([math.log(0.99), math.log(0.01)], [0.0, 0.0, 0.0, 0.0], width=4)[None]
    torch.manual_seed(0)
    student_features = torch.randn(1, 6, 4, 4)
    teacher_features = [torch.randn(1, 4, 2, 2), torch.randn(1, 5, 4, 4)]
    student = torch.tensor([[0.2, 0.1, -0.3, 0.0, 0.4]])
    options = MethodOptions(temperature=1.0, hint_weight=0.5)
    adaptive, fitnet = build_method("adaptive", roster, options), build_method("fitnet", roster, options)
    adaptive.setup(student_features, teacher_features, [])
    fitnet.setup(student_features, teacher_features, [])
    fitnet.regressors.load_state_dict(adaptive.regressors.state_dict())
    out = TeacherOutputs(logits, teacher_features)
    terms = adaptive.loss_terms(student, student_features, out, None)
    assert float(terms["loss_kd"]) == pytest.approx(kl([0.99, 0.01, 0, 0, 0], softmax(student[0].tolist())),
                                                    rel=1e-5)
    hint = fitnet.loss_terms(student, student_features, out, torch.tensor([0]))["loss_hint"]
    torch.testing.assert_close(terms["loss_hint"], hint)


def test_cfl_terms_by_construction():
    """KD is amalgam-kd's term; MMD is 0 when the student's common features are a teacher's; a
    decoder that outputs zeros misses all of its teacher's feature energy (1 per teacher)."""
    roster = roster_of(("a", "b", "c"), ("c", "d", "e"))
    torch.manual_seed(1)
    features = torch.randn(6, 4, 3, 3)
    teacher = TeacherOutputs(torch.randn(6, 2, 3), [features.clone(), features.clone()])
    student = torch.randn(6, 5)
    cfl = build_method("cfl", roster, MethodOptions(temperature=3.0, cfl_weight=7.0))
    cfl.setup(features, teacher.features, [])
    for adapter in cfl.teacher_adapters:
        adapter.load_state_dict(cfl.student_adapter.state_dict())
    for decoder in cfl.decoders:
        torch.nn.init.zeros_(decoder.weight)
        torch.nn.init.zeros_(decoder.bias)
    terms = cfl.loss_terms(student, features, teacher, None)
    assert list(terms) == ["loss_kd", "loss_mmd", "loss_recon"]
    amalgam_kd = build_method("amalgam-kd", roster, MethodOptions(temperature=3.0))
    kd = amalgam_kd.loss_terms(student, None, teacher, None)
    torch.testing.assert_close(terms["loss_kd"], kd["loss_kd"])
    assert terms["loss_mmd"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["loss_recon"].item() == pytest.approx(7.0 * 2, rel=1e-5)
    helpers = {"student_adapter.0.weight", "extractor.0.body.0.weight", "decoders.1.weight"}
    assert helpers <= set(cfl.state_dict())
    with pytest.raises(UserError, match="--cfl-weight"):
        build_method("cfl", roster, MethodOptions(cfl_weight=-1.0))


# --- --labels none -----------------------------------------------------------------------------


def test_label_free_methods_are_declared_and_the_others_refused():
    assert set(LABEL_FREE) <= set(label_free_methods())
    assert not {"ce", "kd", "fitnet", "fitnet+uhc-kd", "simkd", "dkd"} & set(label_free_methods())
    assert not METHODS["fitnet+amalgam-kd"].needs_labels and METHODS["fitnet"].needs_labels
    check_labels_mode("cfl", "none")
    with pytest.raises(UserError) as caught:
        check_labels_mode("fitnet+uhc-kd", "none")
    message = str(caught.value)
    assert "\n" not in message and "--labels none" in message and "amalgam-kd" in message
    with pytest.raises(UserError, match="--labels must be one of"):
        TrainConfig(labels="some")


@pytest.fixture(scope="module")
def tiny(trained_teachers, tmp_path_factory):
    """The tiny task's data and a home holding a copy of the session's teachers (1 epoch)."""
    home = copy_teachers(trained_teachers, tmp_path_factory.mktemp("label_free_home"))
    return home, load_task_data(get_task("fashion-mini"), train_per_class=12)


def tiny_run(home: Path, data, method: str, labels: str, name: str,
             options: MethodOptions | None = None) -> dict[str, torch.Tensor]:
    settings = DistilSettings(task="fashion-mini", student="mobilenetv3_small", method=method,
                              train=TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu",
                                                labels=labels),
                              img_size=32, train_per_class=12, method_options=options or MethodOptions())
    run_dir = distil(settings, out_dir=home / "runs" / name, root=home, data=data).run_dir
    return load_file(str(run_dir / "last.safetensors"))


def test_garbage_training_labels_change_nothing_with_labels_none(tiny):
    """Same process, same batches: the final weights are bit-identical, so no training label can
    have reached the loss. Labels are read when allowed: `ce` on the garbage learns otherwise."""
    home, data = tiny
    garbage = torch.randint(0, 10, (len(data.train),), generator=torch.Generator().manual_seed(3))
    assert (garbage != data.train.labels).any()
    spoiled = replace(data, train=ImageSet(data.train.images, garbage))
    honest = tiny_run(home, data, "cfl", "none", "cfl_true")
    fooled = tiny_run(home, spoiled, "cfl", "none", "cfl_garbage")
    assert honest.keys() == fooled.keys()
    assert all(torch.equal(honest[k], fooled[k]) for k in honest)
    config = json.loads((home / "runs" / "cfl_true" / "config.json").read_text())
    assert config["train"]["labels"] == "none"
    history = json.loads((home / "runs" / "cfl_true" / "history.json").read_text())
    assert history[0]["train_acc"] is None and history[0]["train_ce"] is None
    assert set(history[0]["train_terms"]) == {"loss_kd", "loss_mmd", "loss_recon"}
    ce_true, ce_fooled = (tiny_run(home, d, "ce", "train", f"ce_{n}")
                          for d, n in ((data, "a"), (spoiled, "b")))
    assert any(not torch.equal(ce_true[k], ce_fooled[k]) for k in ce_true if ce_true[k].is_floating_point())
    assert any(not torch.equal(honest[k], ce_true[k]) for k in honest if honest[k].is_floating_point())


def assert_fitted_without_labels(tiny, options: MethodOptions, off: MethodOptions, name: str,
                                 label_seed: int) -> dict:
    """An option fitted on the whole training set at start-up: garbage training labels leave the
    final weights bit-identical (same process, same batches), and the option (against `off`)
    does change the training. Returns the run's config.json."""
    home, data = tiny
    garbage = torch.randint(0, 10, (len(data.train),), generator=torch.Generator().manual_seed(label_seed))
    spoiled = replace(data, train=ImageSet(data.train.images, garbage))
    honest = tiny_run(home, data, "fitnet+amalgam-kd", "none", f"{name}_true", options)
    fooled = tiny_run(home, spoiled, "fitnet+amalgam-kd", "none", f"{name}_garbage", options)
    assert honest.keys() == fooled.keys() and all(torch.equal(honest[k], fooled[k]) for k in honest)
    as_is = tiny_run(home, data, "fitnet+amalgam-kd", "none", f"{name}_none", off)
    assert any(not torch.equal(honest[k], as_is[k]) for k in honest if honest[k].is_floating_point())
    return json.loads((home / "runs" / f"{name}_true" / "config.json").read_text())


def test_a_uniform_class_prior_is_fitted_without_reading_a_label(tiny):
    """`--class-prior uniform` fits its weights on the whole training set at start-up."""
    config = assert_fitted_without_labels(tiny, MethodOptions(class_prior="uniform"), MethodOptions(),
                                          "prior", label_seed=4)
    assert config["method_options"]["class_prior"] == "uniform"


def test_neighbour_targets_are_fitted_without_reading_a_label(tiny):
    """`--target-neighbours` finds each image's neighbours in the teachers' features at start-up."""
    near = MethodOptions(class_prior="uniform", target_neighbours=3)
    config = assert_fitted_without_labels(tiny, near, replace(near, target_neighbours=0), "near",
                                          label_seed=5)
    assert config["method_options"]["target_neighbours"] == 3


def test_compare_refuses_a_labels_prior_for_a_label_free_arm_before_any_arm_trains(tmp_path: Path):
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")
    with pytest.raises(UserError, match="--class-prior labels"):
        run_compare("fashion-mini", ["ce", "amalgam-kd:none"], 1, "mobilenetv3_small",
                    MethodOptions(class_prior="labels"), config, 32, 12, None, root=tmp_path,
                    out_dir=tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_compare_puts_labeled_and_label_free_arms_in_one_report(tiny, tmp_path: Path):
    assert parse_methods("ce, amalgam-kd:none,cfl") == ["ce", "amalgam-kd:none", "cfl"]
    assert parse_methods("amalgam-kd,ce:train", "none") == ["amalgam-kd:none", "ce"]
    assert split_arm("cfl:none") == ("cfl", "none") and split_arm("ce") == ("ce", "train")
    for bad, needle in (("ce:none", "label-free method"), ("cfl:maybe", "suffix"), ("nope:none", "nope")):
        with pytest.raises(UserError, match=needle):
            parse_methods(bad)
    home, data = tiny
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu")
    report = run_compare("fashion-mini", ["ce", "amalgam-kd:none"], 1, "mobilenetv3_small", MethodOptions(),
                         config, 32, 12, None, root=home, out_dir=tmp_path / "report")
    assert list(report["methods"]) == ["ce", "amalgam-kd:none"], report["failed"]
    assert [s["labels"] for s in report["methods"].values()] == ["train", "none"]
    text = (tmp_path / "report" / "compare.md").read_text()
    assert "| amalgam-kd | none |" in text and "| ce | train |" in text
    row = next(line for line in text.splitlines() if line.startswith("| amalgam-kd | none |"))
    assert "±" not in row  # one seed: the mean alone, no spread of 0.000 to show
    assert "validation labels are used only to choose the checkpoint" in text
    runs = sorted(p.name for p in next((tmp_path / "report" / "runs").iterdir()).iterdir())
    assert runs == ["amalgam-kd-nolabels_seed0", "ce_seed0"]
    older = {k: v for k, v in report["methods"]["ce"].items() if k != "labels"}  # before --labels
    assert "| ce | train |" in markdown({**report, "methods": {"ce": older}})


# --- unlabeled images in a task ---------------------------------------------------------------


def with_unlabeled(toml: Path, value: str) -> Path:
    line = f'unlabeled = "{value}"\n'
    toml.write_text(toml.read_text().replace('kind = "folder"\n', f'kind = "folder"\n{line}'))
    return toml


def unlabeled_folder(folder: Path, count: int = 5) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(count):  # any size: decoded at the task's size
        Image.fromarray(rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)).save(folder / f"u{i}.png")
    (folder / ".DS_Store").write_bytes(b"\0")
    return folder


def test_an_unlabeled_folder_task_trains_end_to_end_without_labels(tmp_path: Path):
    home = tmp_path / "home"
    toml = write_folder_task(tmp_path / "task")
    toml.write_text(toml.read_text().replace('checkpoint = "ckpt/round"\n', "")
                    .replace('checkpoint = "ckpt/angular"\n', ""))
    unlabeled_folder(tmp_path / "task" / "images" / "unlabeled", 7)
    with_unlabeled(toml, "images/unlabeled")
    data = load_task_data(get_task(str(toml)))
    assert data.unlabeled is not None and tuple(data.unlabeled.shape) == (7, 3, 16, 16)
    free = data.label_free_train()
    assert len(free) == len(data.train) + 7 and bool((free.labels == UNLABELED).all())
    train_all_teachers(data, TrainConfig(epochs=1, batch_size=8, quiet=True, device="cpu"), 16, root=home)
    run_dir = home / "runs" / "free"
    args = ["--task", str(toml), "--method", "cfl", "--labels", "none", "--epochs", "1", "--student",
            "mobilenetv3_small", "--img-size", "32", "--batch-size", "8", "--device", "cpu", "--quiet",
            "--out", str(run_dir)]
    result = run_in_process("train.py", args, home)
    assert result.returncode == 0, result.stderr
    assert "the training loss read no label" in result.stdout
    card = json.loads((run_dir / "best.json").read_text())
    assert card["trained_on"]["images"] == len(data.train) + 7
    assert json.loads((run_dir / "config.json").read_text())["train"]["labels"] == "none"


def test_bad_unlabeled_entries_are_one_line_errors(tmp_path: Path):
    toml = write_folder_task(tmp_path / "task")
    text = toml.read_text()

    def problem(value: str, *needles: str) -> None:
        toml.write_text(text)
        with pytest.raises(UserError) as caught:
            load_task_data(get_task(str(with_unlabeled(toml, value))))
        message = str(caught.value)
        assert "\n" not in message, message
        for needle in needles:
            assert needle in message, message

    problem("missing", "unlabeled", "does not exist")
    nested = tmp_path / "task" / "nested"
    unlabeled_folder(nested / "circle")
    problem("nested", "subfolder", "circle")
    (tmp_path / "task" / "empty").mkdir()
    problem("empty", "holds no images")
    torch.save({"data": torch.zeros(4, 8, 8, 3, dtype=torch.uint8)}, tmp_path / "task" / "small.pth")
    problem("small.pth", "(3, 8, 8)", "(3, 16, 16)")
    torch.save({"images": torch.zeros(4, 16, 16, 3, dtype=torch.uint8)}, tmp_path / "task" / "keys.pth")
    problem("keys.pth", "'data'")
    (tmp_path / "task" / "notes.txt").write_text("hello")
    problem("notes.txt", "neither an image folder nor a .pth")
    torch.save({"data": torch.zeros(4, 16, 16, 3, dtype=torch.uint8), "labels": [9, 9, 9, 9]},
               tmp_path / "task" / "good.pth")
    toml.write_text(text)
    data = load_task_data(get_task(str(with_unlabeled(toml, "good.pth"))))  # its labels are never read
    assert tuple(data.unlabeled.shape) == (4, 3, 16, 16)
    toml.write_text(text.replace('kind = "folder"\n', 'kind = "folder"\nunlabeled = 3\n'))
    with pytest.raises(UserError, match=r"\[data\] key 'unlabeled' must be str"):
        get_task(str(toml))


def test_cli_refuses_a_labeled_method_without_labels_and_a_missing_unlabeled_path(tmp_path: Path):
    refused = CliRunner().invoke(train_cli.app, ["--task", "fashion-mini", "--method", "fitnet", "--labels",
                                                 "none", "--quiet", "--out", str(tmp_path / "run")])
    assert isinstance(refused.exception, UserError) and not (tmp_path / "run").exists()
    for needle in ("fitnet", "--labels none", "amalgam-kd", "cfl", "adaptive"):
        assert needle in str(refused.exception)
    bad_prior = run_in_process("train.py", ["--task", "fashion-mini", "--method", "amalgam-kd", "--labels",
                                            "none", "--class-prior", "zipf", "--quiet"], tmp_path / "home")
    assert_one_line_error(bad_prior, "--class-prior", "uniform", "zipf")
    label_prior = run_in_process("train.py", ["--task", "fashion-mini", "--labels", "none", "--class-prior",
                                              "labels", "--quiet"], tmp_path / "home")
    assert_one_line_error(label_prior, "--class-prior labels", "--labels none", "--class-prior uniform")
    toml = with_unlabeled(write_folder_task(tmp_path / "task"), "nowhere")
    missing = run_in_process("train.py", ["--task", str(toml), "--method", "amalgam-kd", "--labels", "none",
                                          "--quiet"], tmp_path / "home")
    assert_one_line_error(missing, "unlabeled", "nowhere", "does not exist")
    assert not (tmp_path / "home" / "runs").exists()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
