"""Split a set among hospitals: IID, or label-skewed with a Dirichlet prior (classic FL).

    parts = label_skew(labels, k=3, alpha=0.5, seed=0)   # list of index arrays
"""

from __future__ import annotations

import numpy as np

from common.errors import DataError

MIN_PER_CLASS = 3


def _check(labels: np.ndarray, k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"number of partitions must be a positive integer, got {k!r}")
    if k > len(labels):
        raise DataError(f"cannot split {len(labels)} samples into {k} partitions")


def iid(labels: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """`k` disjoint random index sets covering all samples, sizes within one."""
    _check(labels, k)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, k)]


def label_skew(labels: np.ndarray, k: int, alpha: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """Per class, shares of the `k` partitions drawn from Dirichlet(alpha); smaller = more skewed.

    Every partition keeps at least a few samples of each class so that it can train.
    """
    _check(labels, k)
    if alpha <= 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        floor = min(MIN_PER_CLASS, len(members) // k)
        for i in range(k):
            parts[i] += members[i * floor:(i + 1) * floor].tolist()
        rest = members[k * floor:]
        shares = rng.dirichlet([alpha] * k)
        cuts = (np.cumsum(shares)[:-1] * len(rest)).astype(int)
        for i, chunk in enumerate(np.split(rest, cuts)):
            parts[i] += chunk.tolist()
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
