"""The dealer: correlated randomness for one inference, before any input exists.

Each party's material grows from a 32-byte seed of its own (`Material`): everything a
party needs that is plain random (its half of a triple's A and B, its share of the mask
r, ...) it expands itself; what must agree with the other half (a triple's C = A·B, the
boolean shares of r, the arithmetic share of a random bit) party 0 expands from its seed
too, and party 1 receives as the one tensor that completes it. So party 0 receives 32
bytes and party 1 32 bytes plus the corrections (TF Encrypted's seeded triples).

The dealer sees A, B, r and s, never an input: what the parties open (X - A, x + r, ...)
is masked by them. It must not collude with either computing party.
"""

from __future__ import annotations

import secrets
from typing import Sequence

import numpy as np

from common.mpc import ring
from common.mpc.circuit import Step, comparisons

KOGGE_STONE_LEVELS = 6  # log2(64): the carry into the sign bit


class Material:
    """One party's correlated randomness: its seed, and (party 1) the corrections."""

    def __init__(self, party: int, seed: bytes, corrections: dict[str, np.ndarray] | None = None):
        self.party, self._stream = party, ring.Stream(seed)
        self._corrections = dict(corrections or {})

    def own(self, label: str, shape: Sequence[int]) -> np.ndarray:
        """Plain random words of this party's own."""
        return self._stream.words(label, shape)

    def own_bits(self, label: str, shape: Sequence[int]) -> np.ndarray:
        return self._stream.bits(label, shape)

    def completing(self, label: str, shape: Sequence[int]) -> np.ndarray:
        """This party's share of a value that depends on both parties' random words."""
        if self.party == 0:
            return self._stream.words(label, shape)
        words = self._corrections.pop(label)
        if words.shape != tuple(shape):
            raise ValueError(f"the dealer's {label} has shape {words.shape}, not {tuple(shape)}")
        return words

    def exported(self) -> tuple[bytes, dict[str, np.ndarray]]:
        """(seed, corrections): what the dealer sends this party."""
        return self._stream._seed, dict(self._corrections)

    def nbytes(self) -> int:
        return 32 + sum(w.nbytes for w in self._corrections.values())


def weight_shape(step: Step) -> tuple[int, ...]:
    if step.kind == "conv":
        return (step.out_shape[1], step.in_shape[1], step.kernel, step.kernel)
    return (step.out_shape[1], step.in_shape[1])


def deal(steps: Sequence[Step]) -> tuple[Material, Material]:
    """Material for parties 0 and 1 for one run of `steps`."""
    seeds = [secrets.token_bytes(32), secrets.token_bytes(32)]
    streams = [ring.Stream(seed) for seed in seeds]
    corrections: dict[str, np.ndarray] = {}

    def both(label: str, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a0, a1 = streams[0].words(label, shape), streams[1].words(label, shape)
        return a0, a1, a0 + a1

    def complete_sum(label: str, value: np.ndarray) -> None:
        corrections[label] = value - streams[0].words(label, value.shape)

    def complete_xor(label: str, value: np.ndarray) -> None:
        corrections[label] = value ^ streams[0].words(label, value.shape)

    for step in steps:
        if step.kind in ("conv", "linear"):
            a = both(f"{step.label}/A", step.in_shape)[2]
            b = both(f"{step.label}/B", weight_shape(step))[2]
            if step.kind == "conv":
                c = ring.conv2d(a, b, step.padding)
            else:
                c = ring.linear(a, b)
            complete_sum(f"{step.label}/C", c)
        for label, shape in comparisons(step):
            r = both(f"{label}/r", shape)[2]
            complete_xor(f"{label}/rb", r)
            for level in range(KOGGE_STONE_LEVELS):
                for j in (0, 1):
                    name = f"{label}/and{level}.{j}"
                    x = np.bitwise_xor(*both(f"{name}/a", shape)[:2])
                    y = np.bitwise_xor(*both(f"{name}/b", shape)[:2])
                    complete_xor(f"{name}/c", x & y)
            s0, s1 = streams[0].bits(f"{label}/s", shape), streams[1].bits(f"{label}/s", shape)
            complete_sum(f"{label}/sa", s0 ^ s1)
            a = both(f"{label}/mul/a", shape)[2]
            b = both(f"{label}/mul/b", shape)[2]
            complete_sum(f"{label}/mul/c", a * b)
    return Material(0, seeds[0]), Material(1, seeds[1], corrections)
