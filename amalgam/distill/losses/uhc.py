"""The teachers combined into one distribution over the union of their classes, as "Unifying
Heterogeneous Classifiers" (Vongkulbhisal et al., CVPR 2019) defines it: a convex problem in
u = log q, solved per image by Newton steps whose system is a diagonal plus K rank-one terms, so
each step costs O(C·K + K³) instead of a dense C×C solve."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amalgam.tasks.spec import Roster

UHC_MAX_STEPS = 50  # Newton steps at most; every tested sample converged within 25 (see `_uhc_solve`)
UHC_TOLERANCE = 1e-9  # on max_c |gradient_c|: each class's mass matches its teachers' to 1e-9
UHC_DECREMENT_TOLERANCE = 1e-10  # on gradient·step, about twice the objective's distance to its minimum
UHC_RIDGE = 1e-12  # on the Newton system's diagonal: it keeps every step finite (see `_newton_step`)
UHC_MAX_MOVE = 10.0  # nats: the most a step moves any log-probability (see `_line_search`)
UHC_FIRST_MOVE = 30.0  # nats, for the first step: from the uniform start no class's mass is small
UHC_HALVINGS = 30  # of a step in one line search: 10 nats down to 1e-8
UHC_OBJECTIVE_SLACK = 1e-12  # relative: a rise the line search takes for float64 rounding of the objective


def uhc_union_probs(local_logits: torch.Tensor, roster: Roster, temperature: float = 1.0) -> torch.Tensor:
    """The teachers combined into one distribution q over the union, as "Unifying
    Heterogeneous Classifiers" (Vongkulbhisal et al., CVPR 2019) does: [B, C].

    q minimises Σ_k KL(p_k || q restricted to teacher k's classes and renormalised), so where
    teachers overlap they are made to agree, and the mass between two teachers' classes is
    set through the classes they share, never by averaging with a zero from a teacher that
    does not know the class. Uses every teacher and no label: a label-free target.

    In u = log q the objective is convex, Σ_k [logsumexp_{C_k}(u) − Σ_{c∈C_k} p_k(c)·u_c],
    so each sample is solved by damped Newton steps in float64 (the simple fixed point
    q(c) ∝ Σ_{k∋c} p_k(c) / Σ_{k∋c} 1/q(C_k) also descends, but needs thousands of steps
    when teachers disagree). Teachers that share no class with the others leave the split of
    mass between the groups open; each group keeps the mean log-probability the uniform start
    gave it, so teachers that share nothing get q ∝ exp(logits/T − that teacher's mean logit/T).
    Every sample is brought to the optimum: see `_uhc_solve` for the criterion.
    """
    u, _ = _uhc_solve(local_logits, roster, temperature)
    return torch.softmax(u, dim=1).to(local_logits.dtype)


def _uhc_solve(local_logits: torch.Tensor, roster: Roster, temperature: float) -> tuple[torch.Tensor, int]:
    """u = log q up to a constant per sample ([B, C], float64), and the Newton steps taken (the
    most any sample took).

    Each sample stops on its own, once it is converged: max_c |gradient_c| < UHC_TOLERANCE and
    gradient·step < UHC_DECREMENT_TOLERANCE. The second test is needed because a class whose
    teachers give it almost nothing (p ≈ 1e-40) keeps a gradient equal to its mass, 1e-10 say,
    with the optimum still far below; the objective stays up to the sum of those masses above
    its minimum, and Newton lowers them by a factor e a step. Stopped samples cost nothing, so a
    batch costs what its slowest samples cost, not UHC_MAX_STEPS · batch. A sample also stops
    if its line search finds no lower objective (float64 can do no better there) or after
    UHC_MAX_STEPS; no tested sample did either. After every step, the classes only one teacher
    knows are put at their exact optimum given the rest (`_settle_lone_classes`).

    The count is returned, not kept anywhere, so a test can hold the solver to its reference's
    count. Teachers' values stay in their own classes ([B, K, L]) rather than the task's
    ([B, K, C]): with many classes each teacher knows a small share of them.
    """
    layout = _UhcLayout.of(roster, local_logits.device)
    num_classes = roster.num_classes
    scaled = (local_logits.double() / temperature).masked_fill(~layout.mask, float("-inf"))
    log_targets = torch.log_softmax(scaled, dim=2)  # [B, K, L]: log p_k, finite however confident
    targets = _to_classes(log_targets.exp(), layout, num_classes)  # [B, C]: Σ_{k∋c} p_k(c)
    u = _settle_lone_classes(targets.new_zeros(targets.shape), log_targets, layout)
    value = _uhc_objective(u, targets, layout)
    active = torch.arange(u.shape[0], device=u.device)  # samples not yet converged
    steps = 0
    for first in [True] + [False] * (UHC_MAX_STEPS - 1):
        restricted = torch.softmax(_gather_restricted(u[active], layout), dim=2)  # [b, K, L]: q_k
        mass = _to_classes(restricted, layout, num_classes)  # [b, C]: Σ_{k∋c} q_k(c)
        gradient = mass - targets[active]
        step = _centre_per_group(_newton_step(restricted, gradient, mass, layout), layout)
        unfinished = (gradient.abs().amax(dim=1) >= UHC_TOLERANCE) | (
            (gradient * step).sum(dim=1) >= UHC_DECREMENT_TOLERANCE
        )
        active, gradient, step = active[unfinished], gradient[unfinished], step[unfinished]
        if active.numel() == 0:
            break
        max_move = UHC_FIRST_MOVE if first else UHC_MAX_MOVE
        moved, stepped = _line_search(
            u[active], step, gradient, value[active], targets[active], layout, max_move
        )
        u[active] = _settle_lone_classes(stepped, log_targets[active], layout)
        value[active] = _uhc_objective(u[active], targets[active], layout)
        active = active[moved]
        steps += 1
    return u, steps


@dataclass(frozen=True)
class _UhcLayout:
    """Where each teacher slot's class is, and which slots of two teachers name one class.

    Built once per call from the roster so that every Newton step touches only the
    Σ_k |C_k| slots teachers have and the Σ_c n_c·(n_c − 1) pairs of slots on a shared class
    (n_c: teachers that know c), never a [B, K, C] or [B, C, C] tensor.
    """

    slot_class: torch.Tensor  # [K·L] global class of each slot (0 on padding)
    mask: torch.Tensor  # [K, L] real slots
    first: torch.Tensor  # [P] a slot of teacher k ...
    second: torch.Tensor  # [P] ... and the slot of another teacher l on the same class
    cell: torch.Tensor  # [P] k·K + l
    group: torch.Tensor  # [C] which group of teachers linked through shared classes knows each class
    group_size: torch.Tensor  # [G] classes in each group (float64)
    lone: torch.Tensor  # [K, L] real slots on a class no other teacher knows
    lone_slot: torch.Tensor  # [S] those slots, flat (k·L + l) ...
    lone_class: torch.Tensor  # [S] ... and their classes

    @classmethod
    def of(cls, roster: Roster, device: torch.device) -> _UhcLayout:
        index, mask, coverage = roster.local_to_global.cpu(), roster.local_mask.cpu(), roster.coverage.cpu()
        k, width = mask.shape
        slots = torch.arange(k * width).view(k, width)
        slot_of = torch.full(coverage.shape, -1, dtype=torch.long)  # [K, C]
        slot_of[torch.arange(k)[:, None].expand(k, width)[mask], index[mask]] = slots[mask]
        first, second, cell = [], [], []
        for teacher in range(k):
            own = slots[teacher][mask[teacher]]
            classes = index[teacher][mask[teacher]]
            shared = coverage[:, classes].clone()
            shared[teacher] = False
            other, position = shared.nonzero(as_tuple=True)
            first.append(own[position])
            second.append(slot_of[other, classes[position]])
            cell.append(teacher * k + other)
        group = _teacher_groups(coverage)
        lone = mask & (coverage.sum(dim=0)[index] == 1)
        return cls(index.flatten().to(device), mask.to(device), torch.cat(first).to(device),
                   torch.cat(second).to(device), torch.cat(cell).to(device), group.to(device),
                   torch.bincount(group).double().to(device), lone.to(device),
                   slots[lone].to(device), index[lone].to(device))


def _teacher_groups(coverage: torch.Tensor) -> torch.Tensor:
    """[C] a label per class: classes of teachers linked by a chain of shared classes share one.

    The objective does not change when one group's u moves by a constant (nothing ties its
    mass to another group's), so the Newton step is taken off those directions exactly.
    """
    teachers = coverage.shape[0]
    linked = (coverage.double() @ coverage.double().T) > 0  # [K, K] share a class
    for _ in range(teachers.bit_length()):  # paths of up to 2^n links after n squarings
        linked = (linked.double() @ linked.double()) > 0
    teacher_group = linked.double().argmax(dim=1)  # the lowest teacher each one reaches
    class_group = teacher_group[coverage.double().argmax(dim=0)]  # via the first teacher knowing c
    return torch.unique(class_group, return_inverse=True)[1]


def _gather_restricted(u: torch.Tensor, layout: _UhcLayout) -> torch.Tensor:
    """[B, K, L] u at each teacher's classes, −inf on padding (a softmax over it is q_k)."""
    k, width = layout.mask.shape
    gathered = u.gather(1, layout.slot_class.expand(u.shape[0], -1)).view(u.shape[0], k, width)
    return gathered.masked_fill(~layout.mask, float("-inf"))


def _to_classes(local: torch.Tensor, layout: _UhcLayout, num_classes: int) -> torch.Tensor:
    """[B, K, L] → [B, C], summing over the teachers that know each class; padding must be 0."""
    flat = local.flatten(1)
    return flat.new_zeros(flat.shape[0], num_classes).scatter_add_(
        1, layout.slot_class.expand_as(flat), flat
    )


def _newton_step(
    restricted: torch.Tensor, gradient: torch.Tensor, mass: torch.Tensor, layout: _UhcLayout,
    ridge: float = UHC_RIDGE,
) -> torch.Tensor:
    """H⁻¹·gradient [B, C] for the Hessian H = Σ_k (diag(q_k) − q_k q_kᵀ) + ridge·I + 11ᵀ/C,
    exactly, without forming H.

    Why: a dense solve costs O(C³) a sample, minutes a batch of 64 at C = 1000 on one CPU
    thread (bench/bench_uhc_solver.py). H is a diagonal minus K rank-one terms, so the
    Woodbury identity reduces it to a K×K system. The 11ᵀ/C term needs no extra row:
    H₀ = Σ_k (diag(q_k) − q_k q_kᵀ) has 1 in its null space (each q_k sums to 1), so H maps
    the all-ones direction to (1 + ridge)·1 and the directions summing to zero to themselves
    through A − QQᵀ alone (A = diag(Σ_k q_k) + ridge·I, Q = [q_1 … q_K]).

    Why the capacitance M = I − QᵀA⁻¹Q is not computed that way: its smallest eigenvalues are
    of the ridge's size (the directions H₀ leaves flat), and 1 − Σ_c q_k(c)²/A_c would lose
    them to cancellation. Since Σ_c q_k(c) = 1, its row sums are exactly
    ridge·Σ_c q_k(c)/A_c, so M is assembled from positive terms only: diagonal = that sum
    plus the off-diagonal weights W_kl = Σ_c q_k(c)·q_l(c)/A_c, off-diagonal = −W_kl. M is then
    symmetric and strictly diagonally dominant, which Gaussian elimination solves stably
    without scaling, and no entry divides a large number by a tiny A_c: q_k(c)/A_c ≤ 1.
    Against the exact step (50-digit arithmetic, each q_k summing to 1 exactly, masses down to
    1e-100) this was within 1e-14 relative where the dense float64 solve and the naive M
    were off by up to 1e-10 (at a ridge of 1e-6). At today's 1e-12, with the step taken off the
    flat directions (`_centre_per_group`), 60-digit checks gave 1e-12 relative on steps up to
    1e6 nats and 3e-5 on one of 7e11 nats, which the line search cuts to 10 anyway.
    """
    b, num_classes = gradient.shape
    k, width = layout.mask.shape
    diagonal = mass + ridge  # A
    mean = gradient.mean(dim=1, keepdim=True)  # 0 up to rounding: both sides sum to K
    centred = gradient - mean
    q = restricted.flatten(1)  # [B, K·L]
    slot_class = layout.slot_class.expand(b, -1)
    scaled = q / diagonal.gather(1, slot_class)  # q_k(c) / A_c, in [0, 1]
    pairs = layout.first.shape[0]
    products = scaled.gather(1, layout.first.expand(b, pairs)) * q.gather(1, layout.second.expand(b, pairs))
    weights = q.new_zeros(b, k * k).scatter_add_(1, layout.cell.expand_as(products), products).view(b, k, k)
    slack = ridge * scaled.view(b, k, width).sum(dim=2)
    capacitance = torch.diag_embed(slack + weights.sum(dim=2)) - weights
    rhs = (scaled * centred.gather(1, slot_class)).view(b, k, width).sum(dim=2)  # QᵀA⁻¹y
    s = torch.linalg.solve(capacitance, rhs)
    correction = _to_classes(restricted * s[:, :, None], layout, num_classes)  # Q·s
    return (centred + correction) / diagonal + mean / (1.0 + ridge)


def _uhc_objective(u: torch.Tensor, targets: torch.Tensor, layout: _UhcLayout) -> torch.Tensor:
    return torch.logsumexp(_gather_restricted(u, layout), dim=2).sum(dim=1) - (targets * u).sum(dim=1)


def _centre_per_group(values: torch.Tensor, layout: _UhcLayout) -> torch.Tensor:
    """[b, C] less its mean over each group of linked teachers. On a step: the same move of the
    objective, without the drift the tiny ridge would let rounding make between groups. On u:
    the groups' split, which the objective leaves open, fixed where the uniform start had it."""
    sums = values.new_zeros(values.shape[0], layout.group_size.shape[0]).index_add_(1, layout.group, values)
    return values - (sums / layout.group_size)[:, layout.group]


def _settle_lone_classes(u: torch.Tensor, log_targets: torch.Tensor, layout: _UhcLayout) -> torch.Tensor:
    """u with every class that only one teacher knows put exactly where that teacher's
    q_k(c) = p_k(c), the shared classes kept, then centred per group: [b, C].

    Why: such a class enters the objective through its teacher's term alone, so given the
    shared classes' u its optimum is closed-form, u_c = log p_k(c) + logsumexp_shared(u) −
    log Σ_shared p_k (just log p_k(c) for a teacher that shares nothing): an exact block
    minimisation, which never raises the objective. Newton alone brings a class of mass
    p ≈ 1e-30 down by about one nat a step and stops, rightly by its gradient, with that
    class's log-probability still tens of nats off; those log-probabilities set how q splits
    between groups that share no class (each group's mean u is kept equal), so the split
    depended on where the iteration stopped, 0.1 off in median for disjoint teachers with
    logits of spread 10. Settled, disjoint teachers get exactly q ∝ exp(logits/T − their mean).
    """
    restricted = _gather_restricted(u, layout)  # [b, K, L]
    shared = layout.mask & ~layout.lone
    offset = torch.logsumexp(restricted.masked_fill(~shared, float("-inf")), dim=2) - torch.logsumexp(
        log_targets.masked_fill(~shared, float("-inf")), dim=2
    )  # [b, K]; NaN for a teacher with no shared class, where the group's centring sets it
    offset = offset.masked_fill(~shared.any(dim=1), 0.0)
    settled = (log_targets + offset[:, :, None]).flatten(1)[:, layout.lone_slot]
    u = u.scatter(1, layout.lone_class.expand(u.shape[0], -1), settled)
    return _centre_per_group(u, layout)


def _line_search(
    u: torch.Tensor, step: torch.Tensor, gradient: torch.Tensor, value: torch.Tensor,
    targets: torch.Tensor, layout: _UhcLayout, max_move: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, u − t·step for the largest t of min(1, max_move / max|step|) halved up to
    UHC_HALVINGS times that lowers the objective (`value` at u) by at least
    1e-4·t·(gradient·step) (Armijo), give or take float64 rounding: (moved [b] bool, u [b, C]).

    Why the cap: once a class's mass is far below the ridge (1e-6 before) and its teachers
    want more, the Newton step on it is its target over the ridge, 1e5 nats and more; twelve
    halvings left it too long, every try was refused, and the same step repeated until the
    step limit, leaving gradients of order 1. u is a log-probability: no step needs to move a
    class more than a few nats, so capping the step first makes the first try nearly always
    right and the objective is evaluated about once a step. Samples whose every try fails
    (the objective is flat to rounding along the step) report moved = False and keep u.
    """
    decrease = (gradient * step).sum(dim=1).clamp(min=0)  # the objective's slope along −step
    scale = (max_move / step.abs().amax(dim=1)).clamp(max=1.0)
    slack = UHC_OBJECTIVE_SLACK * (1 + value.abs())
    u = u.clone()
    pending = torch.arange(u.shape[0], device=u.device)
    for _ in range(UHC_HALVINGS):
        candidate = u[pending] - scale[pending, None] * step[pending]
        candidate_value = _uhc_objective(candidate, targets[pending], layout)
        bound = value[pending] - 1e-4 * scale[pending] * decrease[pending] + slack[pending]
        accepted = candidate_value <= bound
        u[pending[accepted]] = candidate[accepted]
        pending = pending[~accepted]
        if pending.numel() == 0:
            break
        scale[pending] /= 2
    moved = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    moved[pending] = False
    return moved, u
