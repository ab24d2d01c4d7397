"""Plots for the researcher notebooks: small functions, plain data in, a Figure out.

Every function takes numpy arrays, lists or dicts (what the domain returns) and
returns a `matplotlib.figure.Figure` built without pyplot, so nothing global is
touched: a notebook shows the figure when it is a cell's last value, a script
calls ``fig.savefig(path)``.

    fig = training_curves(trained["history"])
    fig = roc_curve(metrics["roc"], auc=metrics["auc"])
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

CLASS_NAMES = ("normal", "pneumonia")
_CLASS_COLOURS = ("tab:blue", "tab:red")


def _images_2d(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) -> (N, H, W)."""
    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"expected one channel, got images of shape {images.shape}")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected images (N, 1, H, W) or (N, H, W), got {images.shape}")
    return images


def mock_grid(images: np.ndarray, labels: Sequence[int], *, per_class: int = 6,
              class_names: Sequence[str] = CLASS_NAMES,
              title: str = "Mock X-rays (synthetic), by class") -> Figure:
    """A grid of images: one row per class, the first `per_class` images of each."""
    images, labels = _images_2d(images), np.asarray(labels).reshape(-1)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    fig = Figure(figsize=(1.6 * per_class, 1.8 * len(class_names)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(class_names), per_class, squeeze=False))
    for row, name in enumerate(class_names):
        chosen = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap="gray", vmin=0,
                          vmax=255 if images.dtype == np.uint8 else None)
            else:
                ax.set_axis_off()
            if col == 0:
                ax.set_ylabel(f"{name}\n({len(np.flatnonzero(labels == row))})")
    fig.suptitle(title)
    return fig


def class_balance(labels_by_split: Mapping[str, Sequence[int]], *,
                  class_names: Sequence[str] = CLASS_NAMES,
                  title: str = "Class balance") -> Figure:
    """Grouped bars: images per class in each split, with the count and share on top."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    splits = list(labels_by_split)
    width = 0.8 / len(class_names)
    x = np.arange(len(splits))
    for c, name in enumerate(class_names):
        counts = [int(np.sum(np.asarray(labels_by_split[s]).reshape(-1) == c)) for s in splits]
        totals = [max(len(np.asarray(labels_by_split[s]).reshape(-1)), 1) for s in splits]
        bars = ax.bar(x + (c - (len(class_names) - 1) / 2) * width, counts, width, label=name,
                      color=_CLASS_COLOURS[c % len(_CLASS_COLOURS)])
        ax.bar_label(bars, labels=[f"{n} ({n / t:.0%})" for n, t in zip(counts, totals)],
                     fontsize=8)
    ax.set_xticks(x, splits)
    ax.set_ylabel("images")
    ax.margins(y=0.15)
    ax.legend()
    ax.set_title(title)
    return fig


def training_curves(history: Mapping[str, Sequence[float]], *,
                    title: str = "Training inside the domain") -> Figure:
    """Loss and accuracy per epoch, side by side (a history as `train` returns it)."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    loss_ax.plot(epochs, history["loss"], marker="o")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    acc_ax.plot(epochs, history["accuracy"], marker="o", color="tab:green")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("training accuracy")
    acc_ax.set_ylim(0, 1)
    for ax in (loss_ax, acc_ax):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def roc_curve(roc: Mapping[str, Sequence[float]], *, auc: float | None = None,
              title: str = "ROC curve (held-out split)") -> Figure:
    """The ROC curve from ``metrics["roc"]`` ({"fpr": [...], "tpr": [...]}), with chance."""
    fig = Figure(figsize=(4.2, 4), layout="constrained")
    ax = fig.subplots()
    fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
    order = np.lexsort((tpr, fpr))
    label = "model" if auc is None else f"model (AUC {auc:.3f})"
    ax.plot(fpr[order], tpr[order], label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def confusion_matrix(matrix: Sequence[Sequence[int]], *, class_names: Sequence[str] = CLASS_NAMES,
                     title: str = "Confusion matrix (held-out)") -> Figure:
    """A 2 x 2 matrix [[tn, fp], [fn, tp]] (rows: truth, columns: prediction), annotated."""
    counts = np.asarray(matrix, dtype=np.int64)
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8)
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > threshold else "black", fontsize=12)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def share_histogram(share_words: np.ndarray, weights: np.ndarray, *, bins: int = 50,
                    share_label: str = "one party's share of them",
                    title: str = "A share is noise") -> Figure:
    """Real weights next to one party's share words (uint64) scaled to [0, 1).

    A share is uniform over the ring Z_2^64: its histogram is flat, whatever the
    weights look like.
    """
    words = np.asarray(share_words)
    if words.dtype != np.uint64:
        raise ValueError(f"share words must be uint64, got {words.dtype}")
    fraction = words.reshape(-1).astype(np.float64) / 2.0 ** 64
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    real_ax, share_ax = fig.subplots(1, 2)
    real_ax.hist(np.asarray(weights, dtype=np.float64).reshape(-1), bins=bins, color="tab:green")
    real_ax.set_xlabel("weight value")
    real_ax.set_ylabel("count")
    real_ax.set_title("the real weights")
    share_ax.hist(fraction, bins=bins, range=(0, 1), color="tab:grey")
    share_ax.axhline(len(fraction) / bins, color="tab:red", linestyle="--", label="uniform")
    share_ax.set_xlabel("share word / 2^64")
    share_ax.set_title(share_label)
    share_ax.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def accuracy_per_round(curves: Mapping[str, Sequence[float]], *,
                       reference: Mapping[str, float] | None = None,
                       ylabel: str = "accuracy",
                       title: str = "Federated averaging: accuracy per round") -> Figure:
    """One line per label ({"plain FedAvg": [...], "secure FedAvg": [...]}), rounds from 1;
    `reference` adds dotted horizontal lines ({"always 'pneumonia'": 0.73})."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    styles = ("-", "--", "-.", ":")
    markers = ("o", "s", "^", "x")
    for k, (label, values) in enumerate(curves.items()):
        rounds = np.arange(1, len(values) + 1)
        ax.plot(rounds, values, linestyle=styles[k % 4], marker=markers[k % 4], label=label)
    for k, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=("grey", "black")[k % 2], linestyle=":", label=label)
    longest = max((len(v) for v in curves.values()), default=0)
    ax.set_xticks(np.arange(1, longest + 1))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return fig


def privacy_tradeoff(points: Mapping[float, float], *, metric: str = "AUC",
                     title: str = "Utility against privacy (mock data)") -> Figure:
    """A metric against ε: one point per ε of `points` ({ε: value}); ε = inf (no DP)
    is drawn as a dashed reference line."""
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.subplots()
    finite = sorted((e, v) for e, v in points.items() if np.isfinite(e))
    if finite:
        ax.plot([e for e, _ in finite], [v for _, v in finite], marker="o", label="DP-SGD")
    if np.inf in points:
        ax.axhline(points[np.inf], linestyle="--", color="grey", label="no DP (ε = ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("ε (smaller: more private)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def privacy_budget(accounts: Sequence[Mapping[str, float]], *,
                   title: str = "Privacy budget per dataset") -> Figure:
    """Spent (RDP composition), the plain sum of the releases' ε, and the budget, per
    dataset, from `scientist.privacy.my_budget()`."""
    fig = Figure(figsize=(5, 0.8 + 0.6 * max(len(accounts), 1)), layout="constrained")
    ax = fig.subplots()
    names = [a["dataset"] for a in accounts]
    rows = np.arange(len(accounts))
    ax.barh(rows, [a["budget"] for a in accounts], color="lightgrey", label="budget")
    ax.barh(rows, [a["spent_sum"] for a in accounts], height=0.5, color="tab:orange",
            alpha=0.6, label="sum of ε")
    ax.barh(rows, [a["spent"] for a in accounts], height=0.3, color="tab:red",
            label="spent (composed)")
    ax.set_yticks(rows, names)
    ax.set_xlabel("ε")
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig
