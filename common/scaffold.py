"""SCAFFOLD (Karimireddy et al., 2020, option II): control variates that correct the drift
of each hospital's local steps, which is what label skew causes.

The server keeps a control c, hospital i its own c_i (both zero at first). Each local SGD
step of hospital i adds c - c_i to its gradient; after K steps of learning rate lr from
the global model x to its model y_i, it moves its control by
Δc_i = (x - y_i) / (K lr) - c  (so c_i becomes c_i - c + (x - y_i) / (K lr)), and the
server moves c by the average of the Δc_i (every hospital takes part in every round).

In a federated job each hospital keeps its c_i in its state directory, never released;
it seals its Δc_i beside its weights (`with_control`), so the round's partial sums add up
to the average model *and* the average Δc_i, and every hospital steps c itself
(`common.strategies.Scaffold`).

    out = scaffold_round(images, labels, x, server_control=c, client_control=c_i, **config)
    sealed = contribute(key, with_control(out["weights"], out["control_delta"]), n, spec)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

CONTROL_PREFIX = "scaffold_control/"


def initial_model(config: Mapping[str, Any], image_size: int) -> dict[str, np.ndarray]:
    """The model `common.training.train` starts from without initial weights (its seed's)."""
    import torch

    from common.training import _model, weights_to_numpy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))
        return weights_to_numpy(_model(config["model"], image_size, None))


def parameter_names(model: str) -> list[str]:
    """The trainable parameters of `model` (what a control variate has an entry for)."""
    from common.models import build_model

    return [name for name, _ in build_model(model).named_parameters()]


def scaffold_round(images: Any, labels: Any, global_weights: Mapping[str, np.ndarray] | None,
                   *, server_control: Mapping[str, np.ndarray] | None,
                   client_control: Mapping[str, np.ndarray] | None, **config: Any) -> dict:
    """One hospital's SCAFFOLD round with `train`'s `config`: its result, plus
    ``control_delta`` (Δc_i, to seal) and ``client_control`` (the new c_i, to keep).
    SGD only, as the paper's."""
    from common.training import prepare, train

    if config.get("optimiser") != "sgd":
        raise ValueError("SCAFFOLD trains with plain SGD (optimiser: sgd)")
    names = parameter_names(config["model"])
    x = dict(global_weights) if global_weights else initial_model(
        config, int(prepare(images[:1], labels[:1])[0].shape[-1]))
    c = {n: np.broadcast_to(np.asarray((server_control or {}).get(n, 0.0), np.float64),
                            np.shape(x[n])) for n in names}
    c_i = {n: np.broadcast_to(np.asarray((client_control or {}).get(n, 0.0), np.float64),
                              np.shape(x[n])) for n in names}
    result = train(images, labels, **config, initial_weights=x,
                   gradient_correction={n: (c[n] - c_i[n]).astype(np.float32) for n in names})
    scale = 1.0 / (max(1, result["steps"]) * float(config["lr"]))
    delta = {n: ((np.asarray(x[n], np.float64) - result["weights"][n]) * scale - c[n]
                 ).astype(np.float32) for n in names}
    return dict(result, control_delta=delta,
                client_control={n: (c_i[n] + delta[n]).astype(np.float32) for n in names})


def with_control(weights: Mapping[str, np.ndarray],
                 control_delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a hospital contributes to a SCAFFOLD round: its weights and its Δc_i."""
    return {**weights, **{CONTROL_PREFIX + n: v for n, v in control_delta.items()}}


def split_control(average: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """(average weights, average Δc) of a SCAFFOLD round's combined partial sums."""
    weights = {n: v for n, v in average.items() if not n.startswith(CONTROL_PREFIX)}
    delta = {n[len(CONTROL_PREFIX):]: v for n, v in average.items()
             if n.startswith(CONTROL_PREFIX)}
    return weights, delta
