"""Membership inference: does a model give away which images it was trained on?

The loss-threshold attack (Yeom et al., 2018) guesses "member" when the model's loss on
an image is low. Its AUC over members (training images) and non-members (images of the
same distribution the model never saw) is 0.5 for a model that reveals nothing about
membership, and rises as a model memorises. Used to measure, not only promise, what
DP-SGD protects (`bench/bench_dp.py`).

    auc = loss_threshold_auc(result["weights"], "small_cnn", (train_x, train_y),
                             (held_out_x, held_out_y))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def per_image_losses(weights: dict, model: str, images: Any, labels: Any) -> np.ndarray:
    """Cross-entropy of the model with `weights` on each image."""
    from common.training import _model, prepare

    x, y = prepare(images, labels)
    module = _model(model, x.shape[-1], weights).eval()
    with torch.no_grad():
        logits = torch.cat([module(chunk) for chunk in x.split(256)])
    return nn.functional.cross_entropy(logits, y, reduction="none").numpy()


def loss_threshold_auc(weights: dict, model: str, members: tuple, non_members: tuple) -> float:
    """AUC of the loss-threshold attack: members scored by their negative loss."""
    from sklearn.metrics import roc_auc_score

    inside = per_image_losses(weights, model, *members)
    outside = per_image_losses(weights, model, *non_members)
    truth = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    return float(roc_auc_score(truth, -np.concatenate([inside, outside])))
