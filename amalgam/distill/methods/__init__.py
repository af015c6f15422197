"""The method registry: just a dict from `--method` name to a method class or a sum of terms."""

from __future__ import annotations

from collections.abc import Callable

from amalgam.distill.methods.base import Method, MethodOptions, TeacherOutputs
from amalgam.distill.methods.ce import CrossEntropy
from amalgam.distill.methods.dkd import DecoupledKD
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.kd import CoveringTeachersKD
from amalgam.distill.methods.partial_kd import PartialKD
from amalgam.distill.methods.simkd import SimKD
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.distill.methods.union_kd import UnionKD
from amalgam.errors import UserError
from amalgam.tasks.spec import Roster

# Builds a method from (roster, options), and tells its `name` and `options_used` unbuilt.
MethodFactory = Callable[[Roster, MethodOptions], Method]

# `fitnet+X`: partial teachers' logits say nothing about pairs of classes no single teacher
# knows, while a teacher's feature map still responds to images of classes it never saw; the
# hints may carry that and X's logit term what each teacher knows about its own classes.
HINTED_LOGIT_METHODS = (CoveringTeachersKD, PartialKD, UnionKD)

METHODS: dict[str, MethodFactory] = {
    method.name: method
    for method in (
        CrossEntropy, CoveringTeachersKD, PartialKD, UnionKD, DecoupledKD,
        SumOfTerms("fitnet", (CrossEntropy, FitNetHints)),
        SimKD,
        *(SumOfTerms(f"fitnet+{logits.name}", (logits, FitNetHints)) for logits in HINTED_LOGIT_METHODS),
    )
}
# The winner of the issue-4 comparison on `fashion` (README, "Method comparison").
DEFAULT_METHOD = "fitnet"


def build_method(name: str, roster: Roster, options: MethodOptions) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; use one of {sorted(METHODS)}")
    return METHODS[name](roster, options)


__all__ = ["METHODS", "DEFAULT_METHOD", "Method", "MethodFactory", "MethodOptions", "TeacherOutputs",
           "build_method"]
