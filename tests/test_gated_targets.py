"""`--target-gate student`: each teacher's answer weighed by the mass the student puts on its
classes, by hand on a tiny roster; ramped in from the teachers combined over --gate-warmup
epochs; and it reads no label."""

from __future__ import annotations

import math

import pytest
import torch

from amalgam.distill.losses import soft_cross_entropy
from amalgam.distill.losses.gated import gated_targets, teacher_gates
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.errors import UserError
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

# two teachers sharing class b: t1 knows a, b; t2 knows b, c
SPEC = TaskSpec("r", ("a", "b", "c"), (TeacherSpec("t1", ("a", "b")), TeacherSpec("t2", ("b", "c"))),
                DataSpec("none"))


def softmax(values: list[float], temperature: float = 1.0) -> list[float]:
    e = [math.exp(v / temperature) for v in values]
    return [v / sum(e) for v in e]


def test_gates_are_the_mass_on_each_teachers_classes():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(teacher_gates(probs, SPEC.roster()), torch.tensor([[0.8, 0.5], [0.0, 1.0]]))


def test_gated_targets_by_hand():
    logits = torch.tensor([[[2.0, 0.0], [1.0, -1.0]]])  # t1 over (a, b); t2 over (b, c)
    gates = torch.tensor([[0.9, 0.3]])
    temperature = 2.0
    p1, p2 = softmax([2.0, 0.0], temperature), softmax([1.0, -1.0], temperature)
    a = 0.9 * p1[0]
    b = (0.9 * p1[1] + 0.3 * p2[0]) / 2  # two teachers know b
    c = 0.3 * p2[1]
    expected = torch.tensor([[a, b, c]]) / (a + b + c)
    got = gated_targets(logits, gates, SPEC.roster(), temperature)
    torch.testing.assert_close(got, expected)


def test_a_teacher_without_mass_says_nothing():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 3.0]]])
    got = gated_targets(logits, torch.tensor([[0.0, 1.0]]), SPEC.roster(), 1.0)
    p2 = softmax([0.0, 3.0])
    expected = torch.tensor([[0.0, p2[0] / 2, p2[1]]])
    torch.testing.assert_close(got, expected / expected.sum())


def test_the_student_takes_over_from_the_teachers_over_the_warm_up():
    """Half the plain target, half the gated one. Epoch 1 of a 4-epoch warm-up: the gate is 3/4 the
    plain target's mass, 1/4 the student's; from epoch 4 on the student's alone. The label is
    never read."""
    options = MethodOptions(target_gate="student", gate_warmup=4.0, temperature=1.0)
    method = build_method("amalgam-kd", SPEC.roster(), options)
    plain = build_method("amalgam-kd", SPEC.roster(), MethodOptions(temperature=1.0))
    teacher_logits = torch.tensor([[[2.0, 0.0], [1.0, -1.0]]])
    student = torch.tensor([[0.0, 0.0, 3.0]])
    garbage = torch.tensor([-12345])
    base = plain.targets(teacher_logits, 1.0)
    for epochs_done, share in ((0, 0.25), (3, 1.0), (10, 1.0)):
        method.start_epoch(epochs_done)
        guide = (1 - share) * base + share * torch.softmax(student, dim=1)
        gated = gated_targets(teacher_logits, teacher_gates(guide, SPEC.roster()), SPEC.roster(), 1.0)
        expected = 0.5 * gated + 0.5 * base
        got = method.loss_terms(student, None, TeacherOutputs(teacher_logits), garbage)["loss_kd"]
        assert got.item() == pytest.approx(soft_cross_entropy(student, expected, 1.0).item(), abs=1e-6)
    assert "target_gate" in method.capabilities.options_used


def test_teachers_gate_is_the_plain_target():
    method = build_method("amalgam-kd", SPEC.roster(), MethodOptions(target_gate="teachers"))
    plain = build_method("amalgam-kd", SPEC.roster(), MethodOptions())
    logits, student = torch.tensor([[[2.0, 0.0], [1.0, -1.0]]]), torch.tensor([[0.5, 0.0, -0.5]])
    labels = torch.tensor([0])
    def loss(m):
        return m.loss_terms(student, None, TeacherOutputs(logits), labels)["loss_kd"].item()

    assert loss(method) == pytest.approx(loss(plain))


def test_an_unknown_gate_is_refused_with_the_choices():
    with pytest.raises(UserError, match="teachers.*student"):
        MethodOptions(target_gate="oracle")
