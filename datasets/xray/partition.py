"""Split a data set among hospitals: IID, or label-skewed with a Dirichlet prior.

Both return `k` disjoint, sorted int64 index arrays that together cover every sample.

    parts = iid(labels, k=3, seed=0)
    parts = label_skew(labels, k=3, alpha=0.5, seed=0)   # smaller alpha = more skewed
"""

from __future__ import annotations

import numpy as np

from common.errors import DataError

MIN_PER_CLASS = 5   # label_skew keeps up to this many samples of each class per partition


def _check(labels: np.ndarray, k: int) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"number of partitions must be a positive integer, got {k!r}")
    if k > len(labels):
        raise DataError(f"cannot split {len(labels)} samples into {k} partitions")
    return labels


def iid(labels: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """`k` random, disjoint index sets covering all samples, sizes within one.

        iid(np.array([0, 1, 1, 0, 1]), 2)      # e.g. [array([0, 3, 4]), array([1, 2])]
    """
    labels = _check(labels, k)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, int(k))]


def label_skew(labels: np.ndarray, k: int, alpha: float = 0.5,
               seed: int = 0) -> list[np.ndarray]:
    """Dirichlet label skew (the classic federated-learning benchmark split).

    For each class, the partitions' shares are drawn from Dirichlet(alpha, ..., alpha).
    So that every partition can train, each first receives min(MIN_PER_CLASS,
    n_class // k) samples of every class; a class with fewer than `k` samples is refused.
    """
    labels = _check(labels, k)
    if not float(alpha) > 0:
        raise DataError(f"alpha must be positive, got {alpha!r}")
    k = int(k)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        if len(members) < k:
            raise DataError(f"class {value} has only {len(members)} samples: "
                            f"cannot give each of {k} partitions one")
        floor = min(MIN_PER_CLASS, len(members) // k)
        for i in range(k):
            parts[i].append(members[i * floor:(i + 1) * floor])
        rest = members[k * floor:]
        counts = rng.multinomial(len(rest), rng.dirichlet(np.full(k, float(alpha))))
        for i, chunk in enumerate(np.split(rest, np.cumsum(counts)[:-1])):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
