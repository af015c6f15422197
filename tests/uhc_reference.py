"""The UHC target solver as it was before the Woodbury step: one dense [B, C, C] solve per
Newton step. Kept here, outside the product, as the reference that tests/test_uhc_solver.py
and bench/bench_uhc_solver.py hold the fast solver to; it must not change with the product,
so its helpers are copied too. Also the rosters both of them draw, and `optimality`, the
gradient and objective from the definition, which both use to tell a converged sample.
"""

from __future__ import annotations

import torch

from amalgam.distill.losses.task_space import masked_local_softmax, place_in_task_space
from amalgam.tasks.spec import Roster

MAX_STEPS = 30
TOLERANCE = 1e-9


def dense_uhc_solve(
    local_logits: torch.Tensor, roster: Roster, temperature: float = 1.0
) -> tuple[torch.Tensor, int]:
    """(q [B, C] in float64, Newton steps taken): today's algorithm, step for step."""
    coverage = roster.coverage.to(local_logits.device)
    probs = place_in_task_space(masked_local_softmax(local_logits.double(), roster, temperature), roster)
    b, c = probs.shape[0], roster.num_classes
    u = probs.new_zeros(b, c)
    ridge = 1e-6 * torch.eye(c, dtype=u.dtype, device=u.device) + 1.0 / c
    value = _objective(u, probs, coverage)
    steps = 0
    for _ in range(MAX_STEPS):
        restricted = torch.softmax(u[:, None, :].masked_fill(~coverage, float("-inf")), dim=2)
        gradient = (restricted - probs).sum(dim=1)
        if gradient.abs().max() < TOLERANCE:
            break
        outer = torch.einsum("bkc,bkd->bcd", restricted, restricted)
        hessian = torch.diag_embed(restricted.sum(dim=1)) - outer
        step = _solve_or_stay(hessian + ridge, gradient)
        u, value = _halve_until_lower(u, step, value, probs, coverage)
        steps += 1
    return torch.softmax(u, dim=1), steps


def _solve_or_stay(systems: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The old code's `torch.linalg.solve`, except that an image whose system the LAPACK build
    refuses (in the full suite under CI, on a stalled image of tests/test_uhc_solver.py, MKL's LU
    raised "Pivots given to lu_solve must all be greater or equal to 1") takes no step, and so
    counts as not converged, instead of failing the whole batch."""
    try:
        step = torch.linalg.solve(systems, gradient)
    except RuntimeError:
        step = torch.zeros_like(gradient)
        for row in range(systems.shape[0]):
            try:
                step[row] = torch.linalg.solve(systems[row], gradient[row])
            except RuntimeError:
                pass
    return torch.where(torch.isfinite(step).all(dim=1, keepdim=True), step, torch.zeros_like(step))


def _objective(u: torch.Tensor, probs: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    restricted = u[:, None, :].masked_fill(~coverage, float("-inf"))
    return torch.logsumexp(restricted, dim=2).sum(dim=1) - (probs * u[:, None, :]).sum(dim=(1, 2))


def _halve_until_lower(u, step, value, probs, coverage, halvings: int = 12):
    scale = u.new_ones(u.shape[0], 1)
    for _ in range(halvings):
        candidate = u - scale * step
        candidate_value = _objective(candidate, probs, coverage)
        worse = ~(candidate_value <= value + TOLERANCE)
        if not worse.any():
            break
        scale = torch.where(worse[:, None], scale / 2, scale)
    keep = candidate_value <= value + TOLERANCE
    u = torch.where(keep[:, None], candidate, u)
    return u - u.mean(dim=1, keepdim=True), torch.where(keep, candidate_value, value)


def optimality(
    q: torch.Tensor, logits: torch.Tensor, roster: Roster, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample, straight from the definition over [B, K, C]: max_c |gradient_c|, the
    objective, and each teacher's restriction q_k [B, K, C]."""
    coverage = roster.coverage
    targets = place_in_task_space(masked_local_softmax(logits.double(), roster, temperature), roster)
    u = q.log()[:, None, :].expand(-1, coverage.shape[0], -1).masked_fill(~coverage, float("-inf"))
    restricted = torch.softmax(u, dim=2)
    gradient = (restricted - targets).sum(dim=1).abs().amax(dim=1)
    cross = torch.special.xlogy(targets, q[:, None, :]).sum(dim=(1, 2))  # Σ_k Σ_c p_k(c)·u_c
    objective = torch.logsumexp(u, dim=2).sum(dim=1) - cross
    return gradient, objective, restricted


def roster_from_classes(classes: list[list[int]], num_classes: int) -> Roster:
    """A Roster straight from each teacher's global class indices (no names, no task file)."""
    width = max(len(known) for known in classes)
    local_to_global = torch.zeros(len(classes), width, dtype=torch.long)
    local_mask = torch.zeros(len(classes), width, dtype=torch.bool)
    coverage = torch.zeros(len(classes), num_classes, dtype=torch.bool)
    for k, known in enumerate(classes):
        local_to_global[k, : len(known)] = torch.tensor(known, dtype=torch.long)
        local_mask[k, : len(known)] = True
        coverage[k, known] = True
    return Roster(local_to_global, local_mask, coverage, tuple(f"t{k}" for k in range(len(classes))))


def random_roster(num_classes: int, teachers: int, per_teacher: int, generator: torch.Generator) -> Roster:
    """Every class known to some teacher, each teacher about `per_teacher` classes (±10%), the
    surplus slots landing on random classes so teachers overlap the way real rosters do."""
    order = torch.randperm(num_classes, generator=generator).tolist()
    classes: list[set[int]] = [set() for _ in range(teachers)]
    for i, c in enumerate(order):
        classes[i % teachers].add(c)
    spread = max(1, per_teacher // 10)
    for known in classes:
        size = per_teacher + int(torch.randint(-spread, spread + 1, (1,), generator=generator))
        size = min(num_classes, max(size, len(known)))
        while len(known) < size:
            known.add(int(torch.randint(num_classes, (1,), generator=generator)))
    return roster_from_classes([sorted(known) for known in classes], num_classes)


def random_logits(batch: int, roster: Roster, generator: torch.Generator, scale: float = 3.0) -> torch.Tensor:
    """[B, K, L] teacher logits; padded slots hold junk the roster's mask must hide."""
    k, width = roster.local_mask.shape
    return scale * torch.randn(batch, k, width, generator=generator, dtype=torch.float64)
