"""Arithmetic in the ring Z_2^64 (uint64 words that wrap) with 16 fractional bits, and
the labelled pseudo-random streams both parties and the dealer draw from.

    x = encode(np.float32([0.5, -1.25]))        # words
    decode(x)                                    # array([ 0.5 , -1.25])
    words = Stream(seed).words("conv0/A", (2, 3))   # the same for anyone with the seed

A product of two encoded values carries 32 fractional bits; `truncate_share` brings a
party's share back to 16 locally (SecureML's two-party truncation: off by at most one
unit in the last place, and wrong with probability about |x| / 2^63).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

import numpy as np

from common.secret_sharing import expand_seed

FRAC_BITS = 16
WORD = np.uint64
ONE = WORD(1)


def encode(x: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Real values as ring words (round to nearest)."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * (1 << frac_bits))
    if scaled.size and np.abs(scaled).max() >= 2.0 ** 62:
        raise ValueError("a value is too large for the 64-bit ring at this precision")
    return scaled.astype(np.int64).view(WORD)


def decode(words: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Ring words as real values (the upper half of the ring is negative)."""
    return np.asarray(words, dtype=WORD).view(np.int64).astype(np.float64) / (1 << frac_bits)


def truncate_share(share: np.ndarray, party: int, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Party `party`'s share of x / 2^frac_bits from its share of x, computed locally."""
    shift = WORD(frac_bits)
    if party == 0:
        return share >> shift
    return -((-share) >> shift)


class Stream:
    """Words drawn from a 32-byte seed under a label: one AES-CTR stream per label."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("a stream's seed is 32 bytes")
        self._seed = bytes(seed)

    def words(self, label: str, shape: Sequence[int]) -> np.ndarray:
        key = hmac.new(self._seed, label.encode(), hashlib.sha256).digest()
        count = int(np.prod(shape)) if len(shape) else 1
        return expand_seed(key, count).reshape(shape)

    def bits(self, label: str, shape: Sequence[int]) -> np.ndarray:
        """Words whose lowest bit only is random (a shared bit)."""
        return self.words(label, shape) & ONE


# ---------------------------------------------------------------------------- ring linear algebra
def im2col(x: np.ndarray, kernel: int, padding: int) -> np.ndarray:
    """(N, C, H, W) -> (N * H' * W', C * k * k) patches of a stride-1 convolution."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h, out_w = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    # windows: (N, C, H', W', k, k) -> (N, H', W', C, k, k)
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(
        n * out_h * out_w, c * kernel * kernel)


def conv2d(x: np.ndarray, weight: np.ndarray, padding: int) -> np.ndarray:
    """Ring convolution (stride 1) of words: x (N, C, H, W), weight (O, C, k, k) ->
    (N, O, H', W'); wraps modulo 2^64 like every ring operation."""
    n, _, h, w = x.shape
    out_channels, _, kernel, _ = weight.shape
    out_h, out_w = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    columns = im2col(x, kernel, padding)
    product = columns @ weight.reshape(out_channels, -1).T
    return np.ascontiguousarray(product.reshape(n, out_h, out_w, out_channels)
                                .transpose(0, 3, 1, 2))


def linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Ring x (N, I) @ weight (O, I)^T."""
    return x @ weight.T
