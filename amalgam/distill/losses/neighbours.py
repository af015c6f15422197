"""Targets smoothed over each training image's nearest neighbours (`--target-neighbours K`).

Partial teachers disagree most on pairs of classes no single teacher knows (one teacher calls
a coat a pullover, another calls a pullover a coat), and a combined target is then wrong on
whole groups of similar images at once, yet right on most of each group. Images that lie
close together in the teachers' own features mostly share a class, so averaging each image's
target over its K nearest training images (itself included) lets the group's majority
outvote its errors: one step of label propagation over a kNN graph (Zhou et al., NIPS 2003;
as in transductive few-shot learning). No label is read.

On the screening rosters (fashion-roster100/101, 600 images per class, K = 20) this lifted the
balanced target's accuracy on the training images from 85.3 to 86.8 and from 85.7 to 85.8 %
(README, "Amalgamation without labels").

The K nearest are found by cosine similarity, once per run. Exactly, over every pair, while
that fits `EXACT_SEARCH_BUDGET` (N² D multiply-adds; 5400 images of 1536 pooled channels: 1.4 s
on one CPU thread); beyond it approximately, as an inverted file does (faiss's IVF, written
here in torch rather than adding a dependency): spherical k-means cuts the set into about √N
cells, and the images of a cell are compared only with those of the `PROBED_CELLS` cells
nearest to it, ~√N / PROBED_CELLS times less work (100,000 images: seconds, not minutes).
Either way similarities are computed in blocks of rows of at most `NEIGHBOUR_BLOCK_BYTES`, so
memory does not grow with N², and the result is a pure function of the features (every rank
of a torchrun finds the same).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEIGHBOUR_BLOCK = 1024  # rows of the similarity matrix computed at once, at most ...
NEIGHBOUR_BLOCK_BYTES = 2**28  # ... and at most 256 MiB of it (64 rows at N = 1M)
# Pairs times width compared exactly: 2^40 is ~35 s on one CPU thread at the 3.2e10 multiply-adds
# per second measured above (26,000 images of 1536 channels); beyond it, the inverted file.
EXACT_SEARCH_BUDGET = 2**40
PROBED_CELLS = 8  # cells each cell's images are compared with, its own included
KMEANS_SAMPLE = 64  # rows per cell the coarse k-means is fitted on


def pooled_features(maps: list[torch.Tensor]) -> torch.Tensor:
    """[B, D]: each teacher's map [B, C_k, H, W] averaged over space (tokens [B, N, C_k]: over
    tokens) and scaled to unit length, concatenated, and the whole scaled to unit length, so
    every teacher counts the same whatever its width or activation scale."""
    parts = [F.normalize(_pooled(m.float()), dim=1) for m in maps]
    return F.normalize(torch.cat(parts, dim=1), dim=1)


def _pooled(features: torch.Tensor) -> torch.Tensor:
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    if features.dim() == 3:
        return features.mean(dim=1)
    raise ValueError(f"expected a feature map [B, C, H, W] or tokens [B, N, C], "
                     f"got shape {tuple(features.shape)}")


def nearest_neighbours(features: torch.Tensor, k: int, block: int = NEIGHBOUR_BLOCK,
                       block_bytes: int = NEIGHBOUR_BLOCK_BYTES,
                       exact_budget: int = EXACT_SEARCH_BUDGET) -> torch.Tensor:
    """[N, k] indices of each row's k most cosine-similar rows of `features` [N, D] (unit rows),
    itself first: its similarity to itself is 1, the largest possible. Exact while N² D fits
    `exact_budget`, else approximate (`exact_search` tells which)."""
    n = len(features)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    blocks = (block, block_bytes)
    if exact_search(n, features.shape[1], exact_budget):
        return _top_k(features, features, k, torch.arange(n), blocks)
    return _inverted_file_search(features, k, blocks)


def exact_search(n: int, dim: int, exact_budget: int = EXACT_SEARCH_BUDGET) -> bool:
    """Whether `nearest_neighbours` compares every pair of n rows of width dim."""
    return n * n * dim <= exact_budget


def _similarity(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return queries @ keys.T


def _top_k(queries: torch.Tensor, keys: torch.Tensor, k: int, own: torch.Tensor | None,
           blocks: tuple[int, int]) -> torch.Tensor:
    """[Q, k] positions in `keys` of each query's k most similar keys, block by block; `own[i]`,
    query i's own position among the keys, is put first (a duplicate must not push it out)."""
    rows = max(1, min(blocks[0], blocks[1] // (4 * max(1, len(keys)))))
    found = []
    for start in range(0, len(queries), rows):
        similarity = _similarity(queries[start:start + rows], keys)
        if own is not None:
            similarity[torch.arange(len(similarity)), own[start:start + rows]] = float("inf")
        found.append(similarity.topk(k, dim=1).indices)
    return torch.cat(found) if found else torch.zeros(0, k, dtype=torch.long)


def _inverted_file_search(features: torch.Tensor, k: int, blocks: tuple[int, int]) -> torch.Tensor:
    """Approximate `nearest_neighbours`: each cell's images against its nearest cells' images."""
    n = len(features)
    centroids = _spherical_kmeans(features, max(1, round(math.sqrt(n))), blocks)
    cell_of = _top_k(features, centroids, 1, None, blocks)[:, 0]
    sizes = torch.bincount(cell_of, minlength=len(centroids)).tolist()
    members = cell_of.argsort(stable=True).split(sizes)  # each cell's images, in index order
    ranked_cells = _top_k(centroids, centroids, len(centroids), torch.arange(len(centroids)), blocks)
    result = torch.empty(n, k, dtype=torch.long)
    for cell, queries in enumerate(members):
        if not len(queries):
            continue
        probed, candidates = 0, 0
        for probed, other in enumerate(ranked_cells[cell].tolist(), start=1):  # itself first
            candidates += len(members[other])
            if probed >= PROBED_CELLS and candidates >= k:
                break
        pool = torch.cat([members[other] for other in ranked_cells[cell, :probed].tolist()])
        # the cell's own images lead the pool, in order: query i sits at position i
        local = _top_k(features[queries], features[pool], k, torch.arange(len(queries)), blocks)
        result[queries] = pool[local]
    return result


def _spherical_kmeans(features: torch.Tensor, cells: int, blocks: tuple[int, int],
                      iterations: int = 10) -> torch.Tensor:
    """[cells, D] unit centroids, fitted on a fixed sample of at most `KMEANS_SAMPLE` rows per cell
    (faiss's default is 256), from a seeded start: the same features give the same cells."""
    generator = torch.Generator().manual_seed(0)
    sample = features[torch.randperm(len(features), generator=generator)[:KMEANS_SAMPLE * cells]]
    centroids = sample[:cells].clone()
    for _ in range(iterations):
        nearest = _top_k(sample, centroids, 1, None, blocks)[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample)
        filled = torch.bincount(nearest, minlength=cells) > 0  # an empty cell keeps its centroid
        centroids[filled] = F.normalize(sums[filled], dim=1)
    return centroids


def neighbour_mean(probs: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """[N, C]: row i is the mean of `probs` over the rows `neighbours[i]` (still distributions)."""
    return probs[neighbours].mean(dim=1)


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised: for one classifier exactly softmax(logits / T)."""
    log_p = probs.clamp_min(1e-30).log() / temperature
    return log_p.softmax(dim=1)
