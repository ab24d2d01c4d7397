"""Evaluation metrics released with differential privacy: a noisy score histogram.

Inside the domain the plan counts the held-out images by label and by score bin (20
bins of the pneumonia probability); one patient is in exactly one cell, so the
histogram has L2 sensitivity 1. The domain adds Gaussian noise to every cell (the
noise is the server's, never the plan's) and derives everything it releases from
the noisy counts: accuracy, sensitivity and specificity at 0.5, and the ROC curve
and its AUC at the bin edges.

    counts = score_histogram(scores, labels)                   # exact, stays inside
    noisy = add_gaussian_noise(counts, sigma=7.7)              # what leaves
    metrics_from_histogram(noisy)["auc"]                       # 0.91
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 20
EDGES = np.linspace(0.0, 1.0, BINS + 1)  # the ROC's thresholds: the lower bin edges
DECISION_BIN = BINS // 2                 # scores >= 0.5 are called pneumonia


def score_histogram(scores: Any, labels: Any) -> list[list[int]]:
    """[[normal images per score bin], [pneumonia images per score bin]]. A score that is
    not a number (weights crafted to overflow on a chosen image) counts in the lowest bin:
    every image is in exactly one cell whatever the weights, so the histogram never fails
    on one image (a failure would be a release the noise does not cover)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=1.0,
                           neginf=0.0)
    scores = np.clip(scores, 0.0, 1.0)
    labels = np.asarray(labels).reshape(-1)
    bins = np.minimum((scores * BINS).astype(int), BINS - 1)
    return [np.bincount(bins[labels == label], minlength=BINS).astype(int).tolist()
            for label in (0, 1)]


def evaluate_histogram(images: Any, labels: Any, weights: dict, *, model: str) -> dict:
    """The exact histogram of `weights`' scores on images/labels (for the domain's noise)."""
    from common.training import pneumonia_scores, prepare

    x, y = prepare(images, labels)
    return {"histogram": score_histogram(pneumonia_scores(x, weights, model), y.numpy()),
            "n_samples": int(len(y))}


def add_gaussian_noise(histogram: list[list[int]], sigma: float,
                       rng: np.random.Generator | None = None) -> list[list[float]]:
    """Every count plus N(0, sigma²), from the operating system's entropy by default."""
    rng = rng or np.random.default_rng()
    counts = np.asarray(histogram, dtype=np.float64)
    return (counts + rng.normal(0.0, float(sigma), counts.shape)).tolist()


def metrics_from_histogram(histogram: Any) -> dict:
    """Accuracy, sensitivity, specificity (at 0.5), ROC at the bin edges and its AUC,
    and the (noisy) number of images, from a [[normal], [pneumonia]] histogram. Negative
    noisy counts count as 0 (post-processing keeps the guarantee)."""
    counts = np.clip(np.asarray(histogram, dtype=np.float64), 0.0, None)
    normal, pneumonia = counts[0], counts[1]
    positives, negatives = max(pneumonia.sum(), 1e-9), max(normal.sum(), 1e-9)
    # at threshold EDGES[k]: images in bins k.. are called pneumonia
    tpr = np.append(np.cumsum(pneumonia[::-1])[::-1] / positives, 0.0)
    fpr = np.append(np.cumsum(normal[::-1])[::-1] / negatives, 0.0)
    tpr, fpr = np.clip(tpr, 0, 1), np.clip(fpr, 0, 1)
    auc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
    tp, tn = pneumonia[DECISION_BIN:].sum(), normal[:DECISION_BIN].sum()
    return {"accuracy": float((tp + tn) / (positives + negatives)),
            "sensitivity": float(tp / positives), "specificity": float(tn / negatives),
            "auc": min(max(auc, 0.0), 1.0),
            "roc": {"thresholds": [float(t) for t in EDGES], "fpr": [float(v) for v in fpr],
                    "tpr": [float(v) for v in tpr]},
            "n_samples": int(round(positives + negatives))}
