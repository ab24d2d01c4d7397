"""DP-SGD training with Opacus: Poisson sampling, per-sample clipping, Gaussian noise.

The noise multiplier is not the researcher's to choose: the domain sizes it for the
ε she asks for at the dataset's δ (`common.dp_accounting.dp_sgd_mechanism`) and the
plan trains with it. What the run spent is reported by Opacus' own RDP accountant,
which must agree with the domain's charge.

Neither is the randomness. The researcher's `seed` chooses the model's initialisation
only; the Gaussian noise and the Poisson sampling of the batches (amplification by
subsampling assumes nobody knows which images were in which batch) come from one
generator seeded with `noise_seed`, 64 bits the domain draws from the operating
system's CSPRNG at run time (`secrets`; drawn here when none is given), and torch's
global generator is reseeded from it too once the model is built. Opacus' mitigation of
floating-point attacks on the noise (each draw the sum of four Gaussians) is on. What
remains: torch's CPU generator is a Mersenne Twister, not a CSPRNG (Opacus' secure
mode needs torchcsprng, which has no build for this torch); its 64-bit seed and
outputs never leave the sandbox.

    mechanism = dp_sgd_mechanism(target_epsilon=3, delta=1e-5, n_samples=len(labels),
                                 batch_size=64, epochs=2)
    result = train_private(images, labels, noise_multiplier=mechanism.noise_multiplier,
                           max_grad_norm=1.0, delta=1e-5, epochs=2, batch_size=64)
    result["epsilon"]                                          # 2.99

Models Opacus cannot privatise as they are (BatchNorm mixes samples, as in resnet18)
are refused with the reason; small_cnn has no normalisation and trains as it is.
"""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from common.dp_accounting import ALPHAS
from common.training import _model, prepare, weights_to_numpy


def zero_non_finite_samples(module: nn.Module) -> int:
    """Give every sample whose per-sample gradient is not finite a zero gradient; returns
    how many. Weights crafted to overflow on one chosen image would otherwise turn its
    gradient into inf, Opacus' clipping into NaN and the run into a failure, and whether a
    run failed is not covered by the noise: a label in one bit. Zeroing depends on that
    sample alone, so clipping still bounds its contribution and the guarantee holds, and
    the run's outcome no longer depends on which image overflowed."""
    grads = [p.grad_sample for p in module.parameters()
             if isinstance(getattr(p, "grad_sample", None), torch.Tensor)]
    if not grads:
        return 0
    n = grads[0].shape[0]
    finite = torch.ones(n, dtype=torch.bool)
    for grad in grads:
        finite &= torch.isfinite(grad.reshape(n, -1)).all(dim=1)
    dropped = int((~finite).sum())
    if dropped:
        for grad in grads:
            grad[~finite] = 0
    return dropped


def private_model_problems(module: nn.Module) -> list[str]:
    """Why Opacus cannot train `module` with per-sample gradients (empty when it can)."""
    from opacus.validators import ModuleValidator

    return [str(error) for error in ModuleValidator.validate(module, strict=False)]


def train_private(images: Any, labels: Any, *, noise_multiplier: float, max_grad_norm: float,
                  delta: float, model: str = "small_cnn", epochs: int = 3, lr: float = 1e-3,
                  batch_size: int = 64, seed: int = 0,
                  initial_weights: dict[str, np.ndarray] | None = None,
                  noise_seed: int | None = None,
                  grad_sample_mode: str = "hooks", **federated_knobs: Any) -> dict:
    """Train `model` with DP-SGD (Adam, Poisson batches of expected size `batch_size`).

    `seed` chooses the initialisation; `noise_seed` (default: 64 bits from `secrets`)
    seeds the noise and the batch sampling (see the module docstring).

    Returns ``{"weights", "history": {"loss", "accuracy"}, "n_samples", "model",
    "epsilon", "delta", "noise_multiplier", "max_grad_norm", "steps", "non_finite_samples"}``
    (the samples whose gradient was zeroed, see `zero_non_finite_samples`); ``epsilon``
    is Opacus' RDP accounting of this run at `delta`. The federated knobs of a
    training config (``proximal_mu``, ``class_balancing``, ``validation_fraction``,
    ``optimiser``, ``local_steps``)
    are accepted only at their defaults: DP-SGD here implements none of them.
    """
    from opacus import PrivacyEngine

    from common.training_config import PARAMETERS_BY_NAME, federated_knobs_set

    unknown = sorted(set(federated_knobs) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise TypeError(f"train_private() got unexpected arguments {', '.join(unknown)}")
    refused = federated_knobs_set(federated_knobs)
    if refused:
        raise ValueError(f"DP-SGD training does not take {', '.join(refused)}; leave it at "
                         "its default")

    x, y = prepare(images, labels)
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError("epochs and batch_size must be positive")
    if not (noise_multiplier > 0 and max_grad_norm > 0):
        raise ValueError("noise_multiplier and max_grad_norm must be above 0")
    private_seed = secrets.randbits(64) if noise_seed is None else int(noise_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Opacus' per-sample gradients assume the default memory format: channels-last
        # (what `_model` returns for speed) changed a DP run's losses, so not here
        module = _model(model, x.shape[-1], initial_weights or None).to(
            memory_format=torch.contiguous_format)
        x = x.contiguous()
        torch.manual_seed(private_seed)  # nothing random past the init is the researcher's
        randomness = torch.Generator().manual_seed(private_seed)
        problems = private_model_problems(module)
        if problems:
            raise ValueError(f"model {model} cannot be trained with DP-SGD as it is: "
                             f"{problems[0]} (a model with GroupNorm instead of BatchNorm can)")
        for layer in module.modules():  # Opacus' hooks forbid in-place ops on their outputs
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
        optimiser = torch.optim.Adam(module.parameters(), lr=lr)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=int(batch_size),
            generator=randomness)  # Opacus' Poisson sampler draws from the loader's generator
        with warnings.catch_warnings():  # "Secure RNG turned off": see the module docstring
            warnings.simplefilter("ignore", UserWarning)
            engine = PrivacyEngine(accountant="rdp")
        private, optimiser, loader = engine.make_private(
            module=module, optimizer=optimiser, data_loader=loader,
            noise_multiplier=float(noise_multiplier), max_grad_norm=float(max_grad_norm),
            poisson_sampling=True, grad_sample_mode=grad_sample_mode,
            noise_generator=randomness)
        optimiser.secure_mode = True  # four Gaussian draws per noise value (floating point)
        loss_fn = nn.CrossEntropyLoss()
        history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        private.train()
        steps = non_finite = 0
        for _ in range(int(epochs)):
            total_loss, correct, seen = 0.0, 0, 0
            for batch_x, batch_y in loader:
                steps += 1
                optimiser.zero_grad()
                if len(batch_x) == 0:  # a Poisson batch can be empty; the noise step still counts
                    optimiser.step()
                    continue
                logits = private(batch_x)
                loss = loss_fn(logits, batch_y)
                loss.backward()
                non_finite += zero_non_finite_samples(private)
                optimiser.step()
                total_loss += float(loss.detach()) * len(batch_x)
                correct += int((logits.argmax(1) == batch_y).sum())
                seen += len(batch_x)
            history["loss"].append(total_loss / max(seen, 1))
            history["accuracy"].append(correct / max(seen, 1))
    return {"weights": weights_to_numpy(private._module), "history": history,
            "n_samples": int(len(x)), "model": model,
            "epsilon": float(engine.accountant.get_epsilon(delta, alphas=list(ALPHAS))),
            "delta": float(delta),
            "noise_multiplier": float(noise_multiplier), "max_grad_norm": float(max_grad_norm),
            "steps": steps, "non_finite_samples": non_finite}
