"""Private inference: a prediction on a secret-shared X-ray with a secret-shared model, by
two computing parties that do not collude and a dealer of correlated randomness that
colludes with neither (`dealer.py`, `party.py`, `circuit.py`, `channel.py`).

The image holder and the model holder each split their input into two additive shares
in Z_2^64 (16 fractional bits), party 0's expanded from a seed: party 0 receives 32
bytes, party 1 the completing tensor. Only the image holder adds the output's shares.

    from common.mpc import private_predict_local
    logits = private_predict_local("small_cnn", weights, images)   # both parties here
"""

from __future__ import annotations

import secrets
import threading
from typing import Mapping

import numpy as np

from common.mpc import ring
from common.mpc.channel import local_pair
from common.mpc.circuit import Step, compile_model
from common.mpc.dealer import deal
from common.mpc.party import Party


def share_inputs(values: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray]]:
    """(party 0's seed, party 1's shares) of real-valued arrays, encoded in the ring."""
    seed = secrets.token_bytes(32)
    stream = ring.Stream(seed)
    return seed, {name: ring.encode(v) - stream.words(name, np.shape(v))
                  for name, v in values.items()}


def inputs_from_seed(seed: bytes, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Party 0's shares, expanded from the seed its input holder sent."""
    stream = ring.Stream(seed)
    return {name: stream.words(name, shape) for name, shape in shapes.items()}


def reveal(share0: np.ndarray, share1: np.ndarray) -> np.ndarray:
    """The image holder's opening of the output: the real values of two shares."""
    return ring.decode(share0 + share1)


def prepare(steps: list[Step], images: np.ndarray, weights: Mapping[str, np.ndarray]
            ) -> tuple[list[tuple[np.ndarray, dict]], list]:
    """What each party holds before a run: ((image share, weight shares), material) for
    parties 0 and 1, as the image holder, the model holder and the dealer hand them out."""
    image_seed, image_share1 = share_inputs({"image": images})
    weight_seed, weight_shares1 = share_inputs(dict(weights))
    shapes = {name: np.shape(v) for name, v in weights.items()}
    inputs = [(inputs_from_seed(image_seed, {"image": images.shape})["image"],
               inputs_from_seed(weight_seed, shapes)),
              (image_share1["image"], weight_shares1)]
    return inputs, list(deal(steps))


def run_both(steps: list[Step], inputs: list, materials: list, channels: list) -> list:
    """Parties 0 and 1 in threads of this process over `channels`: their output shares."""
    outputs: list = [None, None]
    errors: list = []

    def work(i: int) -> None:
        try:
            outputs[i] = Party(i, channels[i], materials[i]).run(steps, *inputs[i])
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return outputs


def private_predict_local(model_name: str, weights: Mapping[str, np.ndarray],
                          images: np.ndarray) -> np.ndarray:
    """Logits of `images` (N, 1, H, W) under `weights`, computed on shares."""
    steps = compile_model(model_name, images.shape[-1], batch=images.shape[0])
    inputs, materials = prepare(steps, images, weights)
    return reveal(*run_both(steps, inputs, materials, list(local_pair())))


__all__ = ["compile_model", "deal", "Party", "share_inputs", "inputs_from_seed", "reveal",
           "prepare", "run_both", "private_predict_local"]
