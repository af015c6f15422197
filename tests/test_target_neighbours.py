"""`--target-neighbours K`: each training image's label-free target fixed at start-up as the mean
of the teachers' combined plain-view targets over its K nearest training images in the teachers'
features; the pieces by hand, the method's loss, and the one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amalgam.distill.losses import apply_class_weights, soft_cross_entropy, uhc_union_probs
from amalgam.distill.losses.neighbours import nearest_neighbours, neighbour_mean, pooled_features, soften
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.errors import UserError
from tests.helpers.front_ends import assert_one_line_error, run_in_process
from tests.helpers.small_models import roster_of, teacher_logits


def unit_circle(*degrees: float) -> torch.Tensor:
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_nearest_neighbours_by_hand_itself_first_in_any_block_size():
    features = unit_circle(0, 10, 90, 100, 185, 0)  # the last row duplicates the first
    for block in (1, 2, 1024):
        near = nearest_neighbours(features, 2, block=block)
        assert near[:, 0].tolist() == list(range(6))  # itself first, even beside its duplicate
        assert near[[0, 2, 3, 4, 5], 1].tolist() == [5, 3, 2, 3, 0]
        assert int(near[1, 1]) in (0, 5)  # 0 and 5 are equally near: either may come first
    assert nearest_neighbours(features, 1).flatten().tolist() == list(range(6))
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\]"):
        nearest_neighbours(features, 7)


def test_neighbour_mean_and_softening_by_hand():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    mean = neighbour_mean(probs, torch.tensor([[0, 1], [1, 2], [2, 2]]))
    torch.testing.assert_close(mean, torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]))
    z = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.2, -1.0]])
    for t in (1.0, 2.0, 4.0):  # one classifier: p^(1/T) renormalised is softmax(z / T)
        torch.testing.assert_close(soften(z.softmax(1), t), (z / t).softmax(1))


def test_pooled_features_weigh_every_teacher_the_same():
    """A wide teacher with large activations and a narrow one with small ones each make half
    the length of the pooled vector."""
    wide = torch.rand(3, 64, 4, 4) * 100
    narrow = torch.rand(3, 8, 2, 2) * 0.01
    pooled = pooled_features([wide, narrow])
    assert pooled.shape == (3, 72)
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(pooled[:, :64].norm(dim=1), torch.full((3,), 0.5**0.5))
    torch.testing.assert_close(pooled[:, 64:].norm(dim=1), torch.full((3,), 0.5**0.5))
    tokens = torch.rand(3, 5, 8)  # a ViT's [B, N, C]: pooled over its tokens
    torch.testing.assert_close(pooled_features([tokens]), F.normalize(tokens.mean(1), dim=1))


def test_the_target_is_the_mean_over_neighbours_whatever_the_view():
    """Images 2i and 2i+1 are each other's nearest: with K = 2 both learn the mean of their two
    balanced targets, softened at T; the teachers' logits on the batch's view are not read."""
    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    logits = teacher_logits(60)
    features = unit_circle(*[3 * (i // 2) + 0.1 * (i % 2) for i in range(60)])
    options = MethodOptions(temperature=2.0, class_prior="uniform", target_neighbours=2)
    method = build_method("fitnet+amalgam-kd", roster, options)
    assert method.fits_training_set and method.fit_reads_features
    line = method.fit_to_training_set(logits, features)
    assert "class prior uniform" in line and "the mean over its 2 nearest" in line
    amalgam = method.parts[0]
    balanced = apply_class_weights(uhc_union_probs(logits, roster, 1.0), amalgam.class_log_weights)
    index = torch.tensor([0, 5, 58])
    pairs = torch.tensor([[0, 1], [4, 5], [58, 59]])
    expected = soften(balanced[pairs].mean(1), 2.0)
    torch.testing.assert_close(amalgam.image_targets_at(index, 2.0), expected)
    student = torch.randn(3, 4, requires_grad=True)
    elsewhere = TeacherOutputs(torch.randn(3, 2, 3) * 5, index=index)  # some other view's logits
    loss = amalgam.loss_terms(student, None, elsewhere, None)["loss_kd"]
    torch.testing.assert_close(loss, soft_cross_entropy(student, expected, 2.0))
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    # K = 1: each image's own plain-view target, no features needed
    own = build_method("amalgam-kd", roster, MethodOptions(target_neighbours=1))
    assert own.fits_training_set and not own.fit_reads_features
    own.fit_to_training_set(logits)
    torch.testing.assert_close(own.image_targets_at(index, 1.0), uhc_union_probs(logits, roster, 1.0)[index])


def test_impossible_neighbour_counts_are_refused():
    with pytest.raises(UserError, match="--target-neighbours must be >= 0, got -1"):
        MethodOptions(target_neighbours=-1)
    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    method = build_method("amalgam-kd", roster, MethodOptions(target_neighbours=61))
    with pytest.raises(UserError, match="more than the 60 training images; choose a smaller K"):
        method.fit_to_training_set(teacher_logits(60), torch.eye(60))


def test_a_negative_neighbour_count_is_a_one_line_error(tmp_path):
    args = ["--task", "fashion-mini", "--method", "amalgam-kd", "--labels", "none",
            "--target-neighbours", "-1"]
    result = run_in_process("train.py", [*args, "--quiet"], tmp_path / "home")
    assert_one_line_error(result, "--target-neighbours", ">= 0", "-1")
    assert not (tmp_path / "home" / "runs").exists()
