"""`fitnet+X`: a logit method X plus FitNet's hint term, each one a line of data.

Partial teachers' logits say nothing about pairs of classes no single teacher knows, while a
teacher's feature map still responds to images of classes it never saw; the hints may carry
that and X's logit term what each teacher knows about its own classes.
"""

from __future__ import annotations

from amalgam.distill.methods.base import register_method
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.kd import CoveringTeachersKD
from amalgam.distill.methods.partial_kd import PartialKD
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.distill.methods.uhc_kd import UnionClassifierKD
from amalgam.distill.methods.union_kd import UnionKD

HINTED_LOGIT_METHODS = (CoveringTeachersKD, PartialKD, UnionKD, UnionClassifierKD)

for logits in HINTED_LOGIT_METHODS:
    register_method(SumOfTerms(f"fitnet+{logits.name}", (logits, FitNetHints)))
