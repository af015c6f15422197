"""The method registry: a dict from `--method` name to a method class or a sum of terms.

Every module of this package other than `base` and `sum_of_terms` is a method file that
registers itself (`register_method`). They are imported here: first the ones listed, in the
order `compare` shows them, then any other, so adding a method is one new file and, if it
has a new hyper-parameter, one `MethodOptions` field.
"""

from __future__ import annotations

import importlib
import pkgutil

from amalgam.distill.methods.base import (
    METHODS,
    Capabilities,
    Method,
    MethodFactory,
    MethodOptions,
    TeacherOutputs,
    register_method,
)
from amalgam.errors import UserError
from amalgam.tasks.spec import Roster

LISTED_FIRST = ("ce", "kd", "partial_kd", "union_kd", "uhc_kd", "dkd", "fitnet", "simkd",
                "fitnet_plus_logits", "amalgam_kd", "cfl", "adaptive")
NOT_METHOD_FILES = {"base", "sum_of_terms"}


def _import_method_files() -> None:
    found = {info.name for info in pkgutil.iter_modules(__path__)} - NOT_METHOD_FILES
    for module in (*LISTED_FIRST, *sorted(found - set(LISTED_FIRST))):
        importlib.import_module(f"{__name__}.{module}")


_import_method_files()

# Chosen on validation accuracy of drawn rosters that are never reported: the UHC target corrected
# by the label where the teachers combined are wrong beat `fitnet+uhc-kd` and CE on the screening
# rosters (docs/benchmarks/quality.md). It reads --temperature and --alpha, so the reference app's
# headline command means what it says.
DEFAULT_METHOD = "fitnet+uhc-ka"


def build_method(name: str, roster: Roster, options: MethodOptions) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; use one of: {', '.join(sorted(METHODS))}")
    return METHODS[name](roster, options)


__all__ = ["METHODS", "DEFAULT_METHOD", "Capabilities", "Method", "MethodFactory", "MethodOptions",
           "TeacherOutputs", "build_method", "register_method"]
