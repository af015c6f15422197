"""The method registry: just a dict from `--method` name to class."""

from __future__ import annotations

from amalgam.distill.methods.base import Method, MethodOptions, TeacherOutputs
from amalgam.distill.methods.ce import CrossEntropy
from amalgam.distill.methods.dkd import DecoupledKD
from amalgam.distill.methods.fitnet import FitNet
from amalgam.distill.methods.hinted import with_hints
from amalgam.distill.methods.kd import SeedRuleKD
from amalgam.distill.methods.partial_kd import PartialKD
from amalgam.distill.methods.simkd import SimKD
from amalgam.distill.methods.union_kd import UnionKD
from amalgam.errors import UserError
from amalgam.tasks.spec import Roster

METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (
        CrossEntropy, SeedRuleKD, PartialKD, UnionKD, DecoupledKD, FitNet, SimKD,
        *(with_hints(logit_method) for logit_method in (SeedRuleKD, PartialKD, UnionKD)),
    )
}
# The winner of the issue-4 comparison on `fashion` (README, "Method comparison").
DEFAULT_METHOD = "fitnet"


def build_method(name: str, roster: Roster, options: MethodOptions) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; use one of {sorted(METHODS)}")
    return METHODS[name](roster, options)


__all__ = ["METHODS", "DEFAULT_METHOD", "Method", "MethodOptions", "TeacherOutputs", "build_method"]
