"""The vectorised partial-teacher rules against naive per-sample code written here."""

from __future__ import annotations

import math

import torch

from amalgam.distill.losses import covering_average_targets, kd_loss, place_in_task_space, soft_cross_entropy
from amalgam.distill.losses.targets import combined_teacher_probs
from amalgam.tasks.builtin import get_task
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec


def naive_covering_average(local_logits, labels, spec, temperature):
    """The covering teachers' average (the reference app's rule), one sample and one class at a time."""
    out = torch.zeros(len(labels), spec.num_classes)
    for b, label in enumerate(labels.tolist()):
        sums, counts = [0.0] * spec.num_classes, [0] * spec.num_classes
        for k, teacher in enumerate(spec.teachers):
            glob = spec.teacher_global_indices(teacher)
            if label not in glob:
                continue
            probs = torch.softmax(local_logits[b, k, : len(glob)] / temperature, dim=0)
            for j, c in enumerate(glob):
                sums[c] += float(probs[j])
                counts[c] += 1
        row = torch.tensor([s / n if n else 0.0 for s, n in zip(sums, counts, strict=True)])
        out[b] = row / row.sum()
    return out


def uneven_task() -> TaskSpec:
    """Teachers of different widths, overlapping on two classes."""
    classes = tuple("abcdefg")
    teachers = (TeacherSpec("t1", ("a", "b", "c")), TeacherSpec("t2", ("g", "c", "d", "e")),
                TeacherSpec("t3", ("e", "f", "g")))
    return TaskSpec("uneven", classes, teachers, DataSpec("none"))


def test_covering_average_matches_naive_on_overlapping_rosters():
    torch.manual_seed(0)
    for spec in (get_task("B"), uneven_task(), get_task("fashion")):
        roster = spec.roster()
        logits = torch.randn(64, roster.num_teachers, roster.local_mask.shape[1]) * 3
        labels = torch.randint(0, spec.num_classes, (64,))
        for temperature in (1.0, 4.0):
            fast = covering_average_targets(logits, labels, roster, temperature)
            slow = naive_covering_average(logits, labels, spec, temperature)
            torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_covering_average_puts_mass_only_on_classes_of_covering_teachers():
    spec = get_task("B")
    roster = spec.roster()
    logits = torch.randn(5, 3, 5)
    hyena = spec.classes.index("hyena")  # teachers 1 and 2
    targets = covering_average_targets(logits, torch.full((5,), hyena), roster, 2.0)
    allowed = roster.coverage[0] | roster.coverage[1]
    assert torch.all(targets[:, ~allowed] == 0)
    assert torch.all(targets[:, allowed] > 0)


def test_place_in_task_space_ignores_padding():
    spec = uneven_task()
    roster = spec.roster()
    values = torch.ones(2, 3, 4) * 7  # padded slot of 3-class teachers holds garbage
    placed = place_in_task_space(values, roster)
    assert placed.shape == (2, 3, 7)
    assert placed[0].sum(dim=1).tolist() == [21.0, 28.0, 21.0]
    assert torch.equal(placed[0] > 0, roster.coverage)


def test_combined_probs_average_the_teachers_that_know_each_class():
    spec = uneven_task()
    roster = spec.roster()
    logits = torch.randn(3, 3, 4)
    combined = combined_teacher_probs(logits, roster)
    local = [torch.softmax(logits[:, k, : len(t.classes)], dim=1) for k, t in enumerate(spec.teachers)]
    c_index = spec.classes.index("c")  # t1 slot 2, t2 slot 1
    torch.testing.assert_close(combined[:, c_index], (local[0][:, 2] + local[1][:, 1]) / 2)
    a_index = spec.classes.index("a")
    torch.testing.assert_close(combined[:, a_index], local[0][:, 0])


def test_kd_loss_against_hand_computed_values():
    student = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([[0.25, 0.75]])
    labels = torch.tensor([0])
    t, a = 2.0, 0.3
    q = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]  # softmax([2,0]/2)
    kl = 0.25 * math.log(0.25 / q[0]) + 0.75 * math.log(0.75 / q[1])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    terms = kd_loss(student, target, labels, t, a)
    assert math.isclose(float(terms["loss_ce"]), (1 - a) * ce, rel_tol=1e-6)
    assert math.isclose(float(terms["loss_kd"]), a * t * t * kl, rel_tol=1e-6)
    assert math.isclose(float(soft_cross_entropy(student, target, t)), t * t * kl, rel_tol=1e-6)


def test_kd_loss_is_zero_kl_when_student_matches_teacher():
    logits = torch.tensor([[1.0, -1.0, 0.5]])
    target = torch.softmax(logits / 3.0, dim=1)
    terms = kd_loss(logits, target, torch.tensor([0]), 3.0, 1.0)
    assert float(terms["loss_ce"]) == 0.0
    assert abs(float(terms["loss_kd"])) < 1e-6
