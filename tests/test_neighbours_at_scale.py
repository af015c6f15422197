"""`--target-neighbours` at scale: exact while N² D fits its budget, an inverted file beyond it,
similarities computed in blocks of bounded size either way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import amalgam.distill.losses.neighbours as neighbours
from amalgam.distill.losses.neighbours import exact_search, nearest_neighbours

# Recall@K of the approximate search against the exact one on clustered features (what
# teachers' pooled features look like: images of a class lie together); measured 0.99 here.
MIN_RECALL = 0.9


def clustered(n: int = 3000, dim: int = 32, clusters: int = 30, spread: float = 0.35) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(clusters, dim, generator=generator)
    labels = torch.arange(n) % clusters
    return F.normalize(centres[labels] + spread * torch.randn(n, dim, generator=generator), dim=1)


def exact(features: torch.Tensor, k: int) -> torch.Tensor:
    return nearest_neighbours(features, k, exact_budget=2**62)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(dim=2).float()
    return float(hits.mean())


def test_the_budget_decides_exact_or_approximate():
    assert exact_search(5400, 1536)  # the measured case (1.4 s) stays exact
    assert not exact_search(100_000, 1280)  # ~400 s exactly: approximate
    features = clustered(400)
    torch.testing.assert_close(exact(features, 5), nearest_neighbours(features, 5))


def test_approximate_neighbours_recall_the_exact_ones():
    features = clustered()
    truth = exact(features, 10)
    found = nearest_neighbours(features, 10, exact_budget=0)
    assert found.shape == truth.shape and found.dtype == torch.long
    assert found[:, 0].tolist() == list(range(len(features)))  # itself first
    assert bool((found >= 0).all())
    assert recall(found, truth) >= MIN_RECALL
    assert torch.equal(nearest_neighbours(features, 10, exact_budget=0), found)  # the same every time
    shuffled = truth[torch.randperm(len(truth), generator=torch.Generator().manual_seed(1))]
    assert recall(shuffled, truth) < 0.1  # so the recall check can fail


def test_approximate_search_keeps_itself_first_beside_a_duplicate_and_finds_k():
    features = clustered(500)
    features[7] = features[3]
    found = nearest_neighbours(features, 40, exact_budget=0)  # more than a cell holds: more cells probed
    assert found[:, 0].tolist() == list(range(500))
    assert int(found[3, 1]) == 7 and int(found[7, 1]) == 3
    assert all(len(set(row)) == 40 for row in found.tolist())


def test_memory_is_bounded_by_the_block(monkeypatch):
    sizes = []
    original = neighbours._similarity

    def spy(queries, keys):
        result = original(queries, keys)
        sizes.append(result.numel() * result.element_size())
        return result

    monkeypatch.setattr(neighbours, "_similarity", spy)
    features = clustered(2000)
    block_bytes = 4 * 2000 * 16  # 16 rows of the whole similarity matrix
    for budget in (2**62, 0):  # exact, then approximate
        sizes.clear()
        nearest_neighbours(features, 5, block_bytes=block_bytes, exact_budget=budget)
        assert sizes and max(sizes) <= block_bytes
    sizes.clear()
    nearest_neighbours(features, 5, exact_budget=2**62)  # the default block: the whole 2000 rows
    assert max(sizes) > block_bytes  # so the bound above can fail
