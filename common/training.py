"""Training and evaluation loops: pure torch/numpy, no file or network access.

Approved training plans call these inside a hospital domain; the researcher calls
them locally on mock data. Inputs are uint8 images N x 1 x H x W (numpy arrays or torch
tensors) and labels 0 = normal, 1 = pneumonia. Outputs are plain data: float32 numpy
weights, Python floats and lists, never a module or a tensor.

    result = train(images, labels, epochs=3, seed=0)
    metrics = evaluate(test_images, test_labels, result["weights"])
    metrics["auc"], metrics["confusion_matrix"]          # 0.93, [[tn, fp], [fn, tp]]
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import DataError
from common.models import MIN_IMAGE_SIZE, build_model

ROC_THRESHOLDS = np.linspace(0.0, 1.0, 101)
OPTIMISERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
_EVAL_BATCH = 256


# --------------------------------------------------------------------------- data

def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def prepare(images: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Check images and labels and turn them into model inputs and targets.

    Images (N,1,H,W) or (N,H,W), uint8 (scaled by 1/255) or float in [0, 1], are
    standardised per image (zero mean, unit variance), which makes the model
    insensitive to exposure. Labels must be N values in {0, 1}.
    """
    pixels, targets = _as_numpy(images), _as_numpy(labels).reshape(-1)
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4 or pixels.shape[1] != 1:
        raise DataError(f"images must have shape (N, 1, H, W), got {pixels.shape}")
    if min(pixels.shape[2:]) < MIN_IMAGE_SIZE:
        raise DataError(f"images are {pixels.shape[2]}x{pixels.shape[3]} px; "
                        f"at least {MIN_IMAGE_SIZE} px needed")
    if len(pixels) != len(targets):
        raise DataError(f"{len(pixels)} images but {len(targets)} labels")
    if len(pixels) == 0:
        raise DataError("no images given")
    if not np.isin(targets, (0, 1)).all():
        raise DataError("labels must be 0 (normal) or 1 (pneumonia)")
    if pixels.dtype == np.uint8:
        x = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    elif np.issubdtype(pixels.dtype, np.floating):
        x = torch.from_numpy(pixels.astype(np.float32))
    else:
        raise DataError(f"images must be uint8 or float, got {pixels.dtype}")
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) / (std + 1e-6)
    return (x.contiguous(memory_format=torch.channels_last),  # see `_model`
            torch.from_numpy(targets.astype(np.int64)))


# --------------------------------------------------------------------------- weights

def weights_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict as float32 numpy copies in C order (buffers included)."""
    return {name: np.array(value.detach().cpu().numpy(), dtype=np.float32, order="C")
            for name, value in module.state_dict().items()}


def load_weights(module: nn.Module, weights: dict[str, Any]) -> nn.Module:
    """Load `weights` (arrays by state-dict name) into `module`, checking names and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    state = {}
    for name, reference in expected.items():
        value = torch.as_tensor(_as_numpy(weights[name]))
        if tuple(value.shape) != tuple(reference.shape):
            raise ValueError(f"weight {name!r} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(reference.shape)}")
        state[name] = value.to(reference.dtype)
    module.load_state_dict(state)
    return module


def _model(model: str, image_size: int, weights: dict | None) -> nn.Module:
    """A fresh `model`, loaded with `weights` unless they are None, in channels-last
    memory format: oneDNN's convolutions then run about twice as fast on a CPU (8 against
    15 ms a small_cnn step at 28 px, 31 against 61 at 64 px, one thread), and the same
    weights and seed still give the same result."""
    module = build_model(model, image_size=image_size)
    if weights is not None:
        load_weights(module, weights)
    return module.to(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- loops

def class_weights(targets: torch.Tensor, balancing: str) -> torch.Tensor | None:
    """Cross-entropy class weights: None for "none"; for "balanced", N / (2 * N_class)
    of this hospital's own labels (a skewed partition then weighs both classes equally).

        >>> class_weights(torch.tensor([0, 1, 1, 1]), "balanced")
        tensor([2.0000, 0.6667])
    """
    if balancing == "none":
        return None
    if balancing != "balanced":
        raise ValueError(f"class balancing must be 'none' or 'balanced', got {balancing!r}")
    counts = torch.bincount(targets, minlength=2).to(torch.float32).clamp(min=1.0)
    return len(targets) / (2.0 * counts)


def held_out_count(n: int, fraction: float) -> int:
    """How many of n images `validation_split` holds out (at least one on each side when
    fraction > 0 and n >= 2; none for fraction 0).

        >>> held_out_count(640, 0.1), held_out_count(640, 0.0)
        (64, 0)
    """
    if not fraction or fraction <= 0 or n < 2:
        return 0
    return min(max(1, int(round(n * float(fraction)))), n - 1)


VALIDATION_SEED = 7919


def passes_made(n_train: int, *, epochs: int, batch_size: int, local_steps: int = 0) -> int:
    """How many passes over `n_train` images `train` makes (one history entry each):
    `epochs`, or fewer when `local_steps` runs out first (a pass is ceil(n / batch) steps).

        >>> passes_made(200, epochs=5, batch_size=32, local_steps=15)
        3
    """
    if not local_steps:
        return int(epochs)
    per_pass = max(1, -(-int(n_train) // int(batch_size)))
    return min(int(epochs), -(-int(local_steps) // per_pass))


def validation_split(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of n images, `held_out_count(n, fraction)` of them
    held out at random, the same ones whatever the training seed: a federation varies
    the seed every round (batch order), and its held-out images must stay held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held = held_out_count(n, fraction)
    return order[held:], order[:held]


def _proximal_term(module: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's (mu / 2) * ||w - w_global||^2 over the trainable parameters."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor))


def train(images: Any, labels: Any, *, model: str = "small_cnn", epochs: int = 3,
          lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          initial_weights: dict[str, np.ndarray] | None = None,
          proximal_mu: float = 0.0, class_balancing: str = "none",
          validation_fraction: float = 0.0, optimiser: str = "adam",
          local_steps: int = 0, gradient_correction: dict | None = None) -> dict:
    """Train `model` with Adam (or plain SGD) and cross-entropy; deterministic for a seed.

    `local_steps` > 0 stops after that many optimiser steps (at most `epochs` passes):
    in a federation every hospital then takes the same number of steps, however many
    images it holds, and with `optimiser="sgd"` its update is the sum of its gradient
    steps, which a server optimiser (FedAvgM) can carry momentum across;
    `proximal_mu` > 0 adds FedProx's proximal term towards `initial_weights`;
    `class_balancing="balanced"` weighs the loss by inverse class frequency;
    `gradient_correction` ({parameter name: array}) is added to every step's gradient
    (SCAFFOLD's c - c_i, `common.scaffold`); the result then says how many steps it took;
    `validation_fraction` holds out that share of the images, never trained on, and
    reports aggregate metrics of the model received (`initial_weights`, before any
    local step) on them: in a federation, the validation of the last global model.

    Returns ``{"weights": {name: float32 array}, "history": {"loss": [...],
    "accuracy": [...]}, "n_samples": N trained on, "model": model}`` (per-epoch
    training loss and accuracy), plus ``"validation": {"loss", "accuracy", "auc",
    "n_samples"}`` of the received model when images were held out.
    """
    x, y = prepare(images, labels)
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError("epochs and batch_size must be positive")
    if not 0.0 <= float(validation_fraction) < 1.0 or float(proximal_mu) < 0.0:
        raise ValueError("validation_fraction must be in [0, 1) and proximal_mu >= 0")
    if optimiser not in OPTIMISERS or int(local_steps) < 0:
        raise ValueError(f"optimiser must be one of {', '.join(OPTIMISERS)} and "
                         "local_steps >= 0")
    trained_on, held_out = validation_split(len(x), float(validation_fraction))
    x_train, y_train = x[trained_on], y[trained_on]
    passes = passes_made(len(x_train), epochs=int(epochs), batch_size=int(batch_size),
                         local_steps=int(local_steps))
    steps_left = int(local_steps) or math.inf  # without a cap, `passes` bounds the steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _model(model, x.shape[-1], initial_weights or None)
        anchor = [p.detach().clone() for p in module.parameters()] if proximal_mu else []
        validation = (validation_metrics(x[held_out], y[held_out], weights_to_numpy(module),
                                         model) if len(held_out) else None)
        order = torch.Generator().manual_seed(seed)
        step = OPTIMISERS[optimiser](module.parameters(), lr=lr)
        correction = _correction(module, gradient_correction)
        steps_taken = 0
        loss_fn = nn.CrossEntropyLoss(weight=class_weights(y_train, class_balancing))
        history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        module.train()
        for _ in range(passes):
            total_loss, correct, seen = 0.0, 0, 0
            for batch in torch.randperm(len(x_train), generator=order).split(int(batch_size)):
                if steps_left == 0:
                    break
                logits = module(x_train[batch])
                loss = loss_fn(logits, y_train[batch])
                if proximal_mu:
                    loss = loss + _proximal_term(module, anchor, float(proximal_mu))
                step.zero_grad()
                loss.backward()
                for parameter, added in correction:
                    parameter.grad.add_(added)
                step.step()
                steps_left -= 1
                steps_taken += 1
                total_loss += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == y_train[batch]).sum())
                seen += len(batch)
            history["loss"].append(total_loss / seen)
            history["accuracy"].append(correct / seen)
    result = {"weights": weights_to_numpy(module), "history": history,
              "n_samples": int(len(x_train)), "model": model}
    if validation is not None:
        result["validation"] = validation
    if gradient_correction is not None:
        result["steps"] = steps_taken
    return result


def _correction(module: nn.Module, correction: dict | None) -> list:
    """(parameter, tensor) pairs to add to the gradients; none without a correction, and
    zeros for parameters it does not name (SCAFFOLD's first round)."""
    if correction is None:
        return []
    unknown = set(correction) - {name for name, _ in module.named_parameters()}
    if unknown:
        raise ValueError(f"gradient_correction names no parameter {sorted(unknown)[0]!r}")
    return [(p, torch.broadcast_to(torch.as_tensor(np.asarray(correction[name], np.float32)),
                                   p.shape).clone())
            for name, p in module.named_parameters() if name in correction]


def validation_metrics(x: torch.Tensor, y: torch.Tensor, weights: dict, model: str) -> dict:
    """Loss, accuracy and AUC of prepared held-out images: aggregate numbers only."""
    scores = pneumonia_scores(x, weights, model)
    metrics = binary_metrics(scores, y.numpy())
    p = np.clip(np.where(y.numpy() == 1, scores, 1.0 - scores), 1e-7, 1.0)
    return {"loss": float(-np.log(p).mean()), "accuracy": metrics["accuracy"],
            "auc": metrics["auc"], "n_samples": metrics["n_samples"]}


def pneumonia_scores(x: torch.Tensor, weights: dict[str, np.ndarray], model: str) -> np.ndarray:
    """Pneumonia probability per prepared image (kept inside: never released as such)."""
    module = _model(model, x.shape[-1], weights).eval()
    with torch.no_grad():
        logits = torch.cat([module(chunk) for chunk in x.split(_EVAL_BATCH)])
    return torch.softmax(logits, dim=1)[:, 1].numpy().astype(np.float64)


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """The ROC AUC of `scores` against 0/1 `labels` (both classes present): the
    Mann-Whitney statistic with tied scores given their average rank, as sklearn's
    ``roc_auc_score`` computes it, in numpy (a sandbox need not import sklearn).

        >>> auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    labels, scores = np.asarray(labels).reshape(-1) == 1, np.asarray(scores, np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    if len(values) < len(scores):  # ties: each gets the mean rank of its group
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Aggregate metrics of scores against 0/1 labels: accuracy at 0.5, AUC (None when
    only one class is present), confusion matrix [[tn, fp], [fn, tp]] and the ROC curve
    at 101 fixed thresholds 0.00, 0.01, ..., 1.00."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).reshape(-1)
    predicted = scores >= 0.5
    positive = labels == 1
    tp, fn = int((predicted & positive).sum()), int((~predicted & positive).sum())
    fp, tn = int((predicted & ~positive).sum()), int((~predicted & ~positive).sum())
    both = 0 < positive.sum() < len(labels)
    above = scores[None, :] >= ROC_THRESHOLDS[:, None]
    tpr = above[:, positive].mean(axis=1) if positive.any() else np.zeros(len(ROC_THRESHOLDS))
    fpr = above[:, ~positive].mean(axis=1) if (~positive).any() else np.zeros(len(ROC_THRESHOLDS))
    return {
        "accuracy": float((tp + tn) / len(labels)),
        "auc": auc_score(labels, scores) if both else None,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "roc": {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]},
        "n_samples": int(len(labels)),
    }


def evaluate(images: Any, labels: Any, weights: dict[str, np.ndarray], *,
             model: str = "small_cnn") -> dict:
    """Evaluate `weights` on images/labels; only aggregate, plain-Python metrics:
    accuracy, auc, confusion_matrix, roc {"fpr", "tpr"} (at ROC_THRESHOLDS), n_samples."""
    x, y = prepare(images, labels)
    return binary_metrics(pneumonia_scores(x, weights, model), y.numpy())
