"""Each distillation method's loss on tiny tensors, against values computed by hand here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amalgam.distill.losses import correct_teachers, dkd_loss, partial_kd_loss
from amalgam.distill.methods import METHODS, MethodOptions, TeacherOutputs, build_method
from amalgam.distill.methods.ce import CrossEntropy
from amalgam.distill.methods.dkd import DecoupledKD
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.errors import UserError
from amalgam.models.metrics import fit_temperature
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.builtin import get_task
from tests.helpers.small_models import TinyStudent, roster3


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def softmax(values, t=1.0):
    e = [math.exp(v / t) for v in values]
    return [x / sum(e) for x in e]


def test_partial_kd_by_hand_including_a_teacher_that_knows_none_of_the_image_classes():
    spec, roster = roster3()
    student = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0]])  # logits for a..e; the image is class d
    teacher = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, -1.0, 0.0]]])  # padded to width 3
    t = 2.0
    expected = 0.0
    for local, classes in (([2.0, 0.0], "ab"), ([0.0, 1.0, 3.0], "bcd"), ([1.0, -1.0], "ea")):
        s = [student[0, "abcde".index(c)].item() for c in classes]
        expected += kl(softmax(local, t), softmax(s, t))  # t1 and t3 know nothing of d: still used
    got = partial_kd_loss(student, teacher, roster, t)
    assert math.isclose(float(got), t * t * expected, rel_tol=1e-5)


def test_partial_kd_weights_select_teachers():
    spec, roster = roster3()
    student = torch.randn(4, 5)
    teacher = torch.randn(4, 3, 3)
    only_second = torch.tensor([[0.0, 1.0, 0.0]]).expand(4, 3)
    full = partial_kd_loss(student, teacher, roster, 3.0)
    part = partial_kd_loss(student, teacher, roster, 3.0, only_second)
    assert 0 < float(part) < float(full)


def test_partial_kd_covering_filter_keeps_only_teachers_that_know_the_label():
    """Label d is known only to t2, label a to t1 and t3: the loss equals the hand-picked sum."""
    spec, roster = roster3()
    student = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0], [0.3, -0.2, 0.1, 1.0, -1.0]])
    teacher = torch.randn(2, 3, 3)
    labels = torch.tensor([3, 0])  # d, a
    method = build_method("partial-kd", roster, MethodOptions(temperature=2.0, alpha=1.0,
                                                              teacher_filter="covering"))
    got = method.loss_terms(student, None, TeacherOutputs(teacher), labels)["loss_kd"]
    chosen = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert torch.allclose(got, partial_kd_loss(student, teacher, roster, 2.0, chosen))
    everyone = partial_kd_loss(student, teacher, roster, 2.0)
    assert not torch.allclose(got, everyone)


def test_union_kd_is_kd_plus_the_partial_term():
    spec, roster = roster3()
    torch.manual_seed(1)
    student, teacher, labels = torch.randn(4, 5), torch.randn(4, 3, 3), torch.tensor([0, 1, 3, 4])
    options = MethodOptions(temperature=2.0, alpha=0.3)
    out = TeacherOutputs(teacher)
    union = build_method("union-kd", roster, options).loss_terms(student, None, out, labels)
    kd = build_method("kd", roster, options).loss_terms(student, None, out, labels)
    partial = build_method("partial-kd", roster, options).loss_terms(student, None, out, labels)
    assert set(union) == {"loss_ce", "loss_kd", "loss_partial"}
    assert torch.allclose(union["loss_ce"], kd["loss_ce"]) and torch.allclose(union["loss_kd"], kd["loss_kd"])
    assert torch.allclose(union["loss_partial"], partial["loss_kd"])
    assert torch.allclose(union["loss_partial"], 0.3 * partial_kd_loss(student, teacher, roster, 2.0))


def test_dkd_by_hand():
    student = torch.tensor([[2.0, 1.0, 0.0]])
    target = torch.tensor([[0.7, 0.2, 0.1]])
    labels = torch.tensor([0])
    t, a, b = 1.0, 1.0, 8.0
    ps = softmax([2.0, 1.0, 0.0], t)
    tckd = kl([0.7, 0.3], [ps[0], 1 - ps[0]])
    nckd = kl([2 / 3, 1 / 3], softmax([1.0, 0.0], t))
    terms = dkd_loss(student, target, labels, t, a, b)
    assert math.isclose(float(terms["loss_tckd"]), a * tckd, rel_tol=1e-5)
    assert math.isclose(float(terms["loss_nckd"]), b * nckd, rel_tol=1e-4)
    assert math.isclose(float(terms["loss_ce"]), -math.log(ps[0]), rel_tol=1e-6)


def test_dkd_leaves_out_samples_without_a_teacher():
    student = torch.randn(2, 3)
    target = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 0.0]])
    both = dkd_loss(student, target, torch.tensor([0, 1]), 2.0, 1.0, 8.0)
    first = dkd_loss(student[:1], target[:1], torch.tensor([0]), 2.0, 1.0, 8.0)
    torch.testing.assert_close(both["loss_tckd"], first["loss_tckd"])
    torch.testing.assert_close(both["loss_nckd"], first["loss_nckd"])


def test_correct_teacher_filter():
    spec, roster = roster3()
    teacher = torch.tensor([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])  # t1→b, t2→b, t3→a
    assert correct_teachers(teacher, torch.tensor([1]), roster).tolist() == [[True, True, False]]
    assert correct_teachers(teacher, torch.tensor([0]), roster).tolist() == [[False, False, True]]


def feature_inputs(seed: int):
    """Student and teacher feature maps of different sizes, logits and labels for roster3."""
    torch.manual_seed(seed)
    student_features = torch.randn(4, 6, 4, 4)
    teacher_features = [torch.randn(4, 8, 2, 2), torch.randn(4, 5, 4, 4), torch.randn(4, 3, 8, 8)]
    logits, local, labels = torch.randn(4, 5), torch.randn(4, 3, 3), torch.tensor([0, 1, 3, 4])
    return student_features, logits, TeacherOutputs(local, teacher_features), labels


@pytest.mark.parametrize("base", ["kd", "partial-kd", "union-kd"])
def test_hinted_method_is_its_logit_method_plus_fitnets_hint(base):
    spec, roster = roster3()
    options = MethodOptions(temperature=2.0, alpha=0.3, hint_weight=0.7)
    hinted, plain, fitnet = (build_method(n, roster, options) for n in (f"fitnet+{base}", base, "fitnet"))
    student_features, logits, out, labels = feature_inputs(2)
    hinted.setup(student_features, out.features, [])
    fitnet.setup(student_features, out.features, [])
    fitnet.regressors.load_state_dict(hinted.regressors.state_dict())
    got = hinted.loss_terms(logits, student_features, out, labels)
    plain_terms = plain.loss_terms(logits, None, out, labels)
    fitnet_terms = fitnet.loss_terms(logits, student_features, out, labels)
    expected = {**plain_terms, "loss_hint": fitnet_terms["loss_hint"]}
    assert list(got) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)
    torch.testing.assert_close(sum(got.values()), sum(plain_terms.values()) + fitnet_terms["loss_hint"])
    assert hinted.needs_features and hinted.options_used == (*plain.options_used, "hint_weight")
    assert list(hinted.state_dict()) == list(fitnet.state_dict())  # saved method files keep their keys


def test_fitnet_is_cross_entropy_plus_the_hint_term():
    spec, roster = roster3()
    fitnet = build_method("fitnet", roster, MethodOptions(hint_weight=0.7))
    hints = FitNetHints(roster, MethodOptions(hint_weight=0.7))
    student_features, logits, out, labels = feature_inputs(3)
    fitnet.setup(student_features, out.features, [])
    hints.setup(student_features, out.features, [])
    hints.load_state_dict(fitnet.state_dict())
    assert list(fitnet.state_dict()) == ["regressors.0.weight", "regressors.1.weight", "regressors.2.weight"]
    got = fitnet.loss_terms(logits, student_features, out, labels)
    assert list(got) == ["loss_ce", "loss_hint"]
    torch.testing.assert_close(got["loss_ce"], F.cross_entropy(logits, labels))
    hint_alone = hints.loss_terms(logits, student_features, out, labels)["loss_hint"]
    torch.testing.assert_close(got["loss_hint"], hint_alone)
    assert fitnet.options_used == ("hint_weight",) and fitnet.uses_teachers and fitnet.needs_features


def test_a_new_combination_is_data_not_a_class():
    spec, roster = roster3()
    options = MethodOptions(temperature=2.0, hint_weight=0.5)
    recipe = SumOfTerms("fitnet+dkd", (DecoupledKD, FitNetHints))
    assert recipe.options_used == ("temperature", "dkd_alpha", "dkd_beta", "dkd_warmup", "teacher_filter",
                                   "hint_weight")
    combined, dkd = recipe(roster, options), DecoupledKD(roster, options)
    student_features, logits, out, labels = feature_inputs(4)
    combined.setup(student_features, out.features, [])
    got = combined.loss_terms(logits, student_features, out, labels)
    assert list(got) == ["loss_ce", "loss_tckd", "loss_nckd", "loss_hint"]
    for key, value in dkd.loss_terms(logits, None, out, labels).items():
        torch.testing.assert_close(got[key], value)


def test_a_sum_of_terms_refuses_parts_that_share_a_term():
    spec, roster = roster3()
    twice_ce = SumOfTerms("ce+dkd", (CrossEntropy, DecoupledKD))(roster, MethodOptions())
    _, logits, out, labels = feature_inputs(5)
    with pytest.raises(ValueError, match="loss_ce"):
        twice_ce.loss_terms(logits, None, out, labels)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_gradients_reach_only_the_student_and_the_method_helpers(name):
    spec, roster = roster3()
    torch.manual_seed(0)
    teachers = [
        create_teacher("cnn-small", len(t.classes)).eval().requires_grad_(False) for t in spec.teachers
    ]
    student = TinyStudent(5)
    method = build_method(name, roster, MethodOptions(temperature=2.0, alpha=0.5))
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 3, 4])
    with torch.no_grad():
        feats = [t.forward_features(x) for t in teachers]
        local = torch.zeros(4, 3, 3)
        for k, (t, f) in enumerate(zip(teachers, feats, strict=True)):
            out = t.forward_head(f)
            local[:, k, : out.shape[1]] = out
    if method.needs_features:
        method.setup(student.forward_features(x), feats, teachers)
    logits, features = method.student_forward(student, x)
    terms = method.loss_terms(logits, features, TeacherOutputs(local, feats), labels)
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert all(p.grad is None for t in teachers for p in t.parameters())
    assert method.predict(student, x).shape == (4, 5)


def test_temperature_fit_lowers_nll_of_an_overconfident_model():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (400,))
    logits = torch.randn(400, 4)
    logits[torch.arange(400), labels] += 1.0
    overconfident = logits * 8  # right often, but far too sure
    temperature = fit_temperature(overconfident, labels)
    assert temperature > 2
    assert F.cross_entropy(overconfident / temperature, labels) < F.cross_entropy(overconfident, labels) - 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -0.1},
        {"temperature": 0.0},
        {"teacher_filter": "best"},
        {"simkd_ratio": 0},
        {"dkd_beta": -1.0},
        {"simkd_weight": -0.5},
    ],
)
def test_impossible_method_options(kwargs):
    with pytest.raises(UserError):
        MethodOptions(**kwargs)


def test_non_finite_loss_stops_with_step_and_terms():
    from amalgam.distill.engine.train_config import TrainConfig
    from amalgam.distill.engine.trainer import NonFiniteLoss, Trainer
    from amalgam.distill.methods.base import Method
    from amalgam.models.model_input import ModelInput
    from amalgam.tasks.images import ImageSet

    class Diverging(Method):
        name = "diverging"
        uses_teachers = False

        def loss_terms(self, student_logits, student_features, teacher, labels):
            return {
                "loss_ce": F.cross_entropy(student_logits, labels),
                "loss_bad": student_logits.sum() * math.inf,
            }

    spec, roster = roster3()
    images = ImageSet(torch.zeros(8, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    trainer = Trainer(
        TinyStudent(5),
        Diverging(roster, MethodOptions()),
        ModelInput(16, (0.5,) * 3, (0.25,) * 3),
        images,
        images,
        5,
        TrainConfig(epochs=1, batch_size=4, quiet=True),
    )
    with pytest.raises(NonFiniteLoss, match=r"epoch 1 step 0 .*loss_bad="):
        trainer.train_epoch()


def test_teacher_pair_errors_by_hand():
    """Roster t1=(a,b), t2=(b,c,d), t3=(e,a). a→b: t1 knows both; a→c: no teacher does."""
    from amalgam.models.metrics import teacher_pair_errors

    _, roster = roster3()
    labels = torch.tensor([0, 0, 0, 2, 4])       # a a a c e
    predictions = torch.tensor([1, 2, 0, 3, 1])  # b c a d b
    split = teacher_pair_errors(predictions, labels, roster.coverage)
    # wrong: a→b (shared, t1), a→c (none), c→d (shared, t2), e→b (none)
    assert split == {"errors_shared_teacher": 2 / 5, "errors_no_shared_teacher": 2 / 5}


def test_a_new_method_file_registers_itself_without_other_edits(tmp_path, monkeypatch):
    """Adding a method is one new file in the package: discovery and registration do the rest."""
    import sys

    import amalgam.distill.methods as methods_package

    (tmp_path / "zz_label_smoothing.py").write_text(
        "import torch.nn.functional as F\n"
        "from amalgam.distill.methods.base import Method, register_method\n\n"
        "@register_method\n"
        "class LabelSmoothing(Method):\n"
        "    name = 'zz-label-smoothing'\n"
        "    uses_teachers = False\n\n"
        "    def loss_terms(self, student_logits, student_features, teacher, labels):\n"
        "        return {'loss_ce': F.cross_entropy(student_logits, labels, label_smoothing=0.1)}\n"
    )
    monkeypatch.setattr(methods_package, "__path__", [*methods_package.__path__, str(tmp_path)])
    try:
        methods_package._import_method_files()
        assert list(METHODS)[-1] == "zz-label-smoothing"
        method = build_method("zz-label-smoothing", get_task("fashion-mini").roster(), MethodOptions())
        logits, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
        assert set(method.loss_terms(logits, None, None, labels)) == {"loss_ce"}
    finally:
        METHODS.pop("zz-label-smoothing", None)
        sys.modules.pop("amalgam.distill.methods.zz_label_smoothing", None)


def test_methods_are_listed_in_compare_order():
    assert list(METHODS) == ["ce", "kd", "partial-kd", "union-kd", "uhc-kd", "dkd", "fitnet", "simkd",
                             "fitnet+kd", "fitnet+partial-kd", "fitnet+union-kd", "fitnet+uhc-kd",
                             "amalgam-kd", "fitnet+amalgam-kd", "cfl", "adaptive", "uhc-ka", "fitnet+uhc-ka"]
