"""What an epoch reports about its losses: each term the method returned, and the one quantity
training and validation share.

A method's training loss is a weighted sum of its named terms (FitNet: `loss_ce` plus 10x
`loss_hint`), while validation can only score the student's predictions (cross-entropy). Set
side by side, `train loss 7.8 | val loss 0.64` reads like a gap that is not there; so every
epoch also records the plain, unweighted cross-entropy of the student's logits on its
training batches (`train_ce`), the same quantity as `val_ce`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

TRAIN_CE = "train_ce"
_SEEN = "_seen"  # images the running sums cover (a mid-epoch resume may start them late)


def batch_measures(terms: dict[str, torch.Tensor], logits: torch.Tensor,
                   labels: torch.Tensor | None) -> dict[str, float]:
    """Each loss term as the method weighted it, and the student's plain CE, as Python floats
    (one device sync for all of them); no CE when the labels are hidden (`--labels none`)."""
    values = [torch.as_tensor(t, device=logits.device).detach().float().reshape(()) for t in terms.values()]
    names = list(terms)
    if labels is not None:
        values.append(F.cross_entropy(logits.detach().float(), labels))
        names.append(TRAIN_CE)
    return dict(zip(names, torch.stack(values).tolist(), strict=True))


def add_measures(sums: dict[str, float] | None, measures: dict[str, float], n: int) -> dict[str, float]:
    """Running sums weighted by batch size, so the epoch's figures are per-image means."""
    out = dict(sums or {})
    for name, value in measures.items():
        out[name] = out.get(name, 0.0) + value * n
    out[_SEEN] = out.get(_SEEN, 0) + n
    return out


def epoch_measures(sums: dict[str, float] | None,
                   reduce: Callable[[list[float]], list[float]] = lambda v: v) -> dict:
    """{"train_terms": {name: mean}, "train_ce": mean} from the running sums; `reduce` sums the
    values over torchrun's ranks (every rank runs the same method, so the names agree)."""
    names = sorted(sums or {})
    totals = dict(zip(names, reduce([float(sums[n]) for n in names]), strict=True)) if names else {}
    seen = max(totals.pop(_SEEN, 0.0), 1.0)
    means = {name: total / seen for name, total in totals.items()}
    return {"train_terms": {k: v for k, v in means.items() if k != TRAIN_CE},
            "train_ce": means.get(TRAIN_CE)}


def epoch_line(row: dict, epochs: int) -> str:
    """`epoch 3/12: train loss 7.81 = loss_ce 0.62 + loss_hint 7.19, acc … | CE train 0.62 val 0.64 | …`"""
    terms = row.get("train_terms") or {}
    parts = f" = {' + '.join(f'{k} {v:.4f}' for k, v in terms.items())}" if len(terms) > 1 else ""
    line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}{parts}"
    if row.get("train_acc") is not None:  # None under --labels none: no training label is read
        line += f", acc {row['train_acc']:.2%}"
    if row.get("train_ce") is not None:
        line += f" | CE train {row['train_ce']:.4f} val {row['val_loss']:.4f}"
    else:
        line += f" | val loss {row['val_loss']:.4f}"
    return (line + f" | val acc {row['val_acc']:.2%} macro-F1 {row['val_macro_f1']:.3f}"
            f" | {row['seconds']:.1f}s")
