"""A computing party of the two-party inference: it holds additive shares (Z_2^64, 16
fractional bits) of the image and the model, and the dealer's material, and runs the
circuit with the other party, opening only masked values.

* convolution and linear layers: Beaver triples for the whole layer (open X - A and
  W - B once; the rest is local ring algebra), then local truncation;
* ReLU, exactly: the sign of x from a masked opening c = x + r and a Kogge-Stone carry
  chain on the boolean shares of r (6 rounds of AND with bit triples, 64 lanes per word),
  a random bit to turn the sign into an arithmetic share, one Beaver product x·(1 - sign);
* 2x2 max-pooling: max(a, b) = b + relu(a - b), rows then columns;
* the global average pool: a local sum times a public constant.

Only the output's shares leave: the image holder adds them.

    party = Party(0, channel, material)
    logits_share = party.run(steps, image_share, weight_shares)
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

from common.mpc import ring
from common.mpc.circuit import Step
from common.mpc.dealer import KOGGE_STONE_LEVELS, Material, weight_shape

ONE = np.uint64(1)
PAD = np.uint64((-(1 << 40)) % (1 << 64))  # far below any activation: odd rows, ceil mode


class Party:
    """Party 0 or 1 of one inference."""

    def __init__(self, index: int, channel, material: Material):
        if index not in (0, 1) or material.party != index:
            raise ValueError("party index and material disagree")
        self.index, self.channel, self.material = index, channel, material
        self.compute_seconds: dict[str, float] = defaultdict(float)  # by step kind
        self._kind = "setup"

    # -- openings --------------------------------------------------------------------
    def _exchange(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        flat = np.concatenate([a.ravel() for a in arrays]) if len(arrays) > 1 else arrays[0].ravel()
        theirs = self.channel.exchange(flat)
        out, start = [], 0
        for a in arrays:
            out.append(theirs[start:start + a.size].reshape(a.shape))
            start += a.size
        return out

    def open(self, *shares: np.ndarray) -> list[np.ndarray]:
        """The values of additive shares (each masked by the caller)."""
        return [mine + theirs for mine, theirs in zip(shares, self._exchange(shares))]

    def open_xor(self, *shares: np.ndarray) -> list[np.ndarray]:
        return [mine ^ theirs for mine, theirs in zip(shares, self._exchange(shares))]

    def _first(self, words: np.ndarray) -> np.ndarray:
        """A public value's share: all of it at party 0, nothing at party 1."""
        return words if self.index == 0 else np.zeros_like(words)

    # -- linear layers ---------------------------------------------------------------
    def _layer(self, step: Step, x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
        m, label = self.material, step.label
        w = weights[f"{step.weight}.weight"]
        bias = weights[f"{step.weight}.bias"]
        a = m.own(f"{label}/A", step.in_shape)
        b = m.own(f"{label}/B", weight_shape(step))
        c = m.completing(f"{label}/C", step.out_shape)
        e, f = self.open(x - a, w - b)
        started = time.perf_counter()
        product = ((lambda p, q: ring.conv2d(p, q, step.padding)) if step.kind == "conv"
                   else ring.linear)
        z = c + product(e, b) + product(a, f)
        if self.index == 0:
            z = z + product(e, f)
        z = ring.truncate_share(z, self.index)
        z = z + (bias[None, :, None, None] if step.kind == "conv" else bias[None, :])
        self.compute_seconds[self._kind] += time.perf_counter() - started
        return z

    # -- comparisons -----------------------------------------------------------------
    def _relu(self, label: str, x: np.ndarray) -> np.ndarray:
        """Shares of max(x, 0), exactly (the sign from a masked opening and a carry chain)."""
        m, shape, i = self.material, x.shape, self.index
        r = m.own(f"{label}/r", shape)
        c, = self.open(x + r)
        started = time.perf_counter()
        # x = c - r = c + ~r + 1: the sign is bit 63 of that sum, r boolean-shared
        rb = m.completing(f"{label}/rb", shape)
        b = ~rb if i == 0 else rb
        p = (c ^ b) if i == 0 else b
        g = c & b
        big_g = g ^ (p & ONE)  # the carry-in of 1
        big_p = p
        self.compute_seconds[self._kind] += time.perf_counter() - started
        for level in range(KOGGE_STONE_LEVELS):
            k = np.uint64(1 << level)
            name = f"{label}/and{level}"
            (ag, bg, cg), (ap, bp, cp) = [
                (m.own(f"{name}.{j}/a", shape), m.own(f"{name}.{j}/b", shape),
                 m.completing(f"{name}.{j}/c", shape)) for j in (0, 1)]
            x1, y1, x2, y2 = big_p, big_g << k, big_p, big_p << k
            e1, f1, e2, f2 = self.open_xor(x1 ^ ag, y1 ^ bg, x2 ^ ap, y2 ^ bp)
            started = time.perf_counter()
            and1 = cg ^ (e1 & bg) ^ (ag & f1)
            and2 = cp ^ (e2 & bp) ^ (ap & f2)
            if i == 0:
                and1 ^= e1 & f1
                and2 ^= e2 & f2
            big_g, big_p = big_g ^ and1, and2
            self.compute_seconds[self._kind] += time.perf_counter() - started
        sign = ((p >> np.uint64(63)) ^ (big_g >> np.uint64(62))) & ONE
        s = m.own_bits(f"{label}/s", shape)
        d, = self.open_xor(sign ^ s)
        started = time.perf_counter()
        sa = m.completing(f"{label}/sa", shape)
        sign_arith = (d if i == 0 else np.zeros_like(d)) + sa * (ONE - np.uint64(2) * d)
        keep = self._first(np.ones(shape, dtype=np.uint64)) - sign_arith  # 1 - sign
        a, bm = m.own(f"{label}/mul/a", shape), m.own(f"{label}/mul/b", shape)
        cm = m.completing(f"{label}/mul/c", shape)
        self.compute_seconds[self._kind] += time.perf_counter() - started
        e, f = self.open(x - a, keep - bm)
        z = cm + e * bm + a * f
        return z + e * f if i == 0 else z

    def _maxpool(self, step: Step, x: np.ndarray) -> np.ndarray:
        n, ch, h, w = x.shape
        if h % 2 or w % 2:  # ceil mode: a row or column far below every value
            padded = np.zeros((n, ch, h + h % 2, w + w % 2), dtype=np.uint64)
            if self.index == 0:
                padded[...] = PAD
            padded[:, :, :h, :w] = x
            x = padded
        a, b = x[:, :, 0::2, :], x[:, :, 1::2, :]
        rows = b + self._relu(f"{step.label}/rows", a - b)
        a, b = rows[:, :, :, 0::2], rows[:, :, :, 1::2]
        return b + self._relu(f"{step.label}/cols", np.ascontiguousarray(a - b))

    def _avgpool(self, step: Step, x: np.ndarray) -> np.ndarray:
        _, _, h, w = x.shape
        total = x.sum(axis=(2, 3), dtype=np.uint64)
        scale = np.uint64(round((1 << ring.FRAC_BITS) / (h * w)))
        return ring.truncate_share(total * scale, self.index)

    # -- the whole circuit ------------------------------------------------------------
    def run(self, steps: Sequence[Step], image: np.ndarray,
            weights: Mapping[str, np.ndarray]) -> np.ndarray:
        """This party's share of the logits of `image` (its share) under the shared model."""
        x = image
        for step in steps:
            self.channel.label = self._kind = step.kind
            if step.kind in ("conv", "linear"):
                x = self._layer(step, x, weights)
            elif step.kind == "maxpool":
                x = self._maxpool(step, x)
            elif step.kind == "relu":
                x = self._relu(f"{step.label}/relu", x)
            elif step.kind == "avgpool":
                x = self._avgpool(step, x)
        self.channel.label = "done"
        return x
