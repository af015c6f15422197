"""Class balancing of a label-free target over the training set (`--class-prior uniform`).

Partial teachers are confident on images of classes they never saw, and one teacher's
overconfidence is not another's, so the teachers combined over the union give some classes
far more than their share of the training images (on drawn Fashion roster 300 one class got
16 % of the mass, another 3 %, of a set that is 10 % each). Without labels nothing in one
image says so, but the whole training set does: if the classes are known to be balanced, the
target's mean over the set must be uniform. One weight per class fixes that, found as in
self-labelling's equipartition (Asano et al., ICLR 2020; SwAV) or ReMixMatch's distribution
alignment: q'(c | x) ∝ q(c | x) · w_c with Σ_x q'(c | x) = N / C for every class c.

The weights are fitted once on the T = 1 combination (the classifier the teachers make), then
applied to the softened target at T as w_c^(1/T): for one classifier that is exactly "shift
its logits by log w, then soften", so the balanced argmax does not depend on T.
"""

from __future__ import annotations

import torch

BALANCE_TOLERANCE = 1e-6  # largest relative deviation of a class's mass from N / C at the end
BALANCE_MAX_STEPS = 10_000
# A class prior is C numbers: it is fitted on at most this many training images (at least
# PRIOR_ROWS_PER_CLASS per class on average), so that its start-up stays bounded at a million images
# and a thousand classes (the [N, C] float64 scaling would need 8 GB there, and one UHC pass over N).
PRIOR_FIT_MIN_ROWS = 20_000
PRIOR_ROWS_PER_CLASS = 50
# Where no balance exists (a target that is zero outside one teacher's classes, as adaptive's,
# can make it impossible), the weights would run off to infinity; they stop at e^±LOG_WEIGHT_LIMIT.
LOG_WEIGHT_LIMIT = 10.0


def balancing_log_weights(
    probs: torch.Tensor, marginal: torch.Tensor | None = None,
    tolerance: float = BALANCE_TOLERANCE, max_steps: int = BALANCE_MAX_STEPS,
) -> torch.Tensor:
    """[C] log w, mean 0, such that rows of probs·w renormalised average to `marginal` [C]
    (positive, summing to 1; uniform when None).

    probs [N, C] are per-image distributions. Alternate scaling (Sinkhorn–Knopp with the row
    sums fixed at 1): each step divides every class's weight by its current mass over the mass
    it should have. The fixed point is unique up to a common factor, which the mean-0 log removes.
    Where no balance exists the log-weights are clipped at ±`LOG_WEIGHT_LIMIT` and the fit ends
    after `max_steps`, as near as it got. A class no row gives any mass raises ValueError.
    """
    if not bool((probs.sum(dim=0) > 0).all()):
        raise ValueError("a class has no mass in any row; it cannot be balanced")
    c = probs.shape[1]
    p = probs.double()
    wanted = p.new_full((c,), 1.0 / c) if marginal is None else marginal.to(p)
    log_w = p.new_zeros(c)
    for _ in range(max_steps):
        weighted = p * log_w.exp()
        share = (weighted / weighted.sum(dim=1, keepdim=True)).mean(dim=0) / wanted  # 1 when balanced
        if float((share - 1).abs().max()) < tolerance:
            break
        log_w = log_w - share.log()
        log_w = (log_w - log_w.mean()).clamp(-LOG_WEIGHT_LIMIT, LOG_WEIGHT_LIMIT)
    return log_w.to(probs.dtype)


def apply_class_weights(
    probs: torch.Tensor, log_weights: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """[B, C] probs (softened at `temperature`) times w^(1/T), renormalised."""
    weighted = probs * (log_weights.to(probs) / temperature).exp()
    return weighted / weighted.sum(dim=1, keepdim=True).clamp_min(1e-30)


def prior_fit_rows(num_images: int, num_classes: int) -> torch.Tensor:
    """The training images a class prior is fitted on, in order: all of them up to
    max(PRIOR_FIT_MIN_ROWS, PRIOR_ROWS_PER_CLASS · C), else that many drawn with a fixed seed (so
    the fit stays a pure function of the teachers and the images, and a resumed run refits it
    the same)."""
    limit = max(PRIOR_FIT_MIN_ROWS, PRIOR_ROWS_PER_CLASS * num_classes)
    if num_images <= limit:
        return torch.arange(num_images)
    drawn = torch.randperm(num_images, generator=torch.Generator().manual_seed(0))[:limit]
    return drawn.sort().values


def label_marginal(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C] how the training labels spread over the classes, add-one smoothed so that a class
    with no training image keeps a little mass (a balanced set gives exactly uniform)."""
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).double()
    return (counts + 1) / (counts.sum() + num_classes)


def fit_class_prior(probs: torch.Tensor, prior: str,
                    labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`--class-prior uniform|labels` fitted on the combination at T = 1 of every training image
    [N, C] (`labels`: theirs, for `labels`): the class log-weights, the rows reweighed by them,
    and the line for the run's log."""
    if prior == "labels":
        if labels is None:
            raise RuntimeError("--class-prior labels is fitted on the training labels; none were given")
        marginal, spread = label_marginal(labels, probs.shape[1]), "as the training labels do"
    else:
        marginal, spread = None, "evenly"
    log_weights = balancing_log_weights(probs, marginal)
    weights = log_weights.exp()
    line = (f"class prior {prior}: the teachers' combined answers on {len(probs)} training images "
            f"reweighed per class by {float(weights.min()):.3g} to {float(weights.max()):.3g}, "
            f"to spread over the classes {spread}")
    return log_weights, apply_class_weights(probs, log_weights), line


def with_fitted_prior(probs: torch.Tensor, log_weights: torch.Tensor | None, temperature: float,
                      method: str) -> torch.Tensor:
    """Targets [B, C] softened at `temperature`, reweighed by the prior fitted at start-up."""
    if log_weights is None:
        raise RuntimeError(f"{method}: --class-prior is fitted at start-up, before training")
    return apply_class_weights(probs, log_weights, temperature)
