"""Additive secret sharing over the ring Z_2^64, with fixed-point encoding.

A real value x is encoded as round(x * 2^f) mod 2^64 (f = 16 fractional bits by
default) and split into n shares that add up to it mod 2^64. The first n-1
shares are uniformly random words from the operating system's CSPRNG
(``os.urandom``, i.e. getrandom(2)); any n-1 shares reveal nothing. Shares add
share-wise, and a public integer multiplies them share-wise. Encoding errs by at
most 2^-(f+1) per value (beyond that, only the output dtype's own rounding).

    >>> shares = share(encode(np.array([1.5, -2.25])), n=3)
    >>> decode(reconstruct(mul_public(shares, 2)))
    array([ 3. , -4.5])

Whole state dicts, one ``SharedStateDict`` per party (integer arrays such as
BatchNorm's ``num_batches_tracked`` are shared as integers, exactly)::

    parties = share_state_dict({"w": np.ones(3, np.float32)}, n=3)
    reconstruct_state_dict(parties)["w"]        # array([1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from common.errors import SharingError

FRAC_BITS = 16
# Each party's encoded value stays below 2^63 / n in magnitude, so the sum of n of
# them cannot wrap. With n <= 512 the limit is >= 2^54, where every float64 is an
# integer: rounding to nearest can never carry a legal value over the limit.
MAX_PARTIES = 512
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = FLOAT_DTYPES + INT_DTYPES  # what a state dict may hold, and the wire allows

WordSource = Callable[[int], np.ndarray]
"""Returns that many uniformly random uint64 words (tests pass their own)."""

_BLOCK = 1 << 15  # elements per block: temporaries stay in cache
_RANDOM_BYTES = 1 << 16  # bytes per os.urandom call
_TWO_63 = 1 << 63


# --- randomness ---------------------------------------------------------------

def random_words(count: int) -> np.ndarray:
    """`count` uniform uint64 words from the OS CSPRNG (os.urandom / getrandom).

        >>> random_words(2).dtype
        dtype('uint64')
    """
    out = np.empty(count, dtype=np.uint64)
    raw = memoryview(out).cast("B")
    for start in range(0, len(raw), _RANDOM_BYTES):
        stop = min(start + _RANDOM_BYTES, len(raw))
        raw[start:stop] = os.urandom(stop - start)
    return out


def _draw(count: int, rng: WordSource | None) -> np.ndarray:
    words = random_words(count) if rng is None else rng(count)
    if not (isinstance(words, np.ndarray) and words.dtype == np.uint64 and words.size == count):
        raise SharingError(f"random source must return {count} uint64 words")
    return words.reshape(-1)


# --- checks -------------------------------------------------------------------

def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_PARTIES:
        raise SharingError(f"number of parties must be an integer from 1 to {MAX_PARTIES}, "
                           f"got {n!r}")


def _check_frac_bits(frac_bits: int) -> None:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)) \
            or not 0 <= frac_bits <= 62:
        raise SharingError(f"frac_bits must be an integer from 0 to 62, got {frac_bits!r}")


def _check_words(array: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint64:
        raise SharingError(f"{what} must be a uint64 numpy array (encode() first)")
    return array


def _check_range(flat: np.ndarray, frac_bits: int, n: int, what: str) -> None:
    """Refuse NaN/inf and |x| >= 2^(63-f)/n, exactly (the bound is not rounded)."""
    if flat.size == 0:
        return
    hi, lo = flat.max(), flat.min()  # NaN propagates through max/min
    if flat.dtype.kind == "f":
        if not (math.isfinite(hi) and math.isfinite(lo)):
            raise SharingError(f"cannot encode {what}: it holds NaN or infinite values")
        largest = max(Fraction(float(hi)), -Fraction(float(lo)))
    else:
        largest = Fraction(max(int(hi), -int(lo)))
    if largest * (1 << frac_bits) * n >= _TWO_63:
        raise SharingError(
            f"cannot encode {what}: largest |value| {float(largest):.6g} is not below the limit "
            f"2^(63-{frac_bits})/{n} = {2.0 ** (63 - frac_bits) / n:.6g} "
            f"(n={n} parties, f={frac_bits} fractional bits)")


def _as_real_array(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise SharingError(f"cannot encode {what}: dtype {x.dtype} is not a real number type")
    return x


def _blocks(size: int) -> Iterator[slice]:
    return (slice(start, min(start + _BLOCK, size)) for start in range(0, size, _BLOCK))


# --- encoding -------------------------------------------------------------------

def _encode_into(flat: np.ndarray, out: np.ndarray, frac_bits: int,
                 subtract: Sequence[np.ndarray] = ()) -> None:
    """out = encode(flat) - sum(subtract) mod 2^64, block by block (range already checked)."""
    signed = out.view(np.int64)
    if flat.dtype.kind == "f":
        # float32 * 2^f is exact in float32, and so is rint's result: no float64 pass.
        work = np.float32 if flat.dtype == np.float32 else np.float64
        scale = work(2.0 ** frac_bits)
        tmp = np.empty(min(_BLOCK, flat.size), dtype=work)
    for block in _blocks(flat.size):
        if flat.dtype.kind == "f":
            t = tmp[: block.stop - block.start]
            np.multiply(flat[block], scale, out=t)
            np.rint(t, out=t)
            signed[block] = t
        else:
            signed[block] = flat[block]
            if frac_bits:
                np.multiply(signed[block], np.int64(1 << frac_bits), out=signed[block])
        for words in subtract:
            np.subtract(out[block], words[block], out=out[block])


def encode(x: np.ndarray, frac_bits: int = FRAC_BITS, n_parties: int = 1) -> np.ndarray:
    """Fixed-point encode: round(x * 2^f) mod 2^64, as uint64 (two's complement).

    Refuses NaN, inf and |x| >= 2^(63-f) / n_parties. Integer input is encoded exactly.

        >>> encode(np.array([1.0, -1.0]), frac_bits=2)
        array([                   4, 18446744073709551612], dtype=uint64)
    """
    _check_frac_bits(frac_bits)
    _check_n(n_parties)
    x = _as_real_array(x, "values")
    flat = x.reshape(-1)
    _check_range(flat, frac_bits, n_parties, "values")
    out = np.empty(flat.size, dtype=np.uint64)
    _encode_into(flat, out, frac_bits)
    return out.reshape(x.shape)


def _decode_into(words: np.ndarray, out: np.ndarray, frac_bits: int) -> None:
    """out[...] = int64(words) / 2^f, in out's float dtype (one rounding)."""
    out[...] = words.view(np.int64)
    if frac_bits:
        out *= out.dtype.type(2.0 ** -frac_bits)


def decode(r: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Inverse of `encode`: interpret as int64 and divide by 2^f (float64).

        >>> decode(encode(np.array([0.5, -3.25])))
        array([ 0.5 , -3.25])
    """
    _check_frac_bits(frac_bits)
    r = _check_words(r, "encoded values")
    out = np.empty(r.shape, dtype=np.float64)
    _decode_into(r, out, frac_bits)
    return out


# --- arrays of shares ---------------------------------------------------------------

def share(x_encoded: np.ndarray, n: int, rng: WordSource | None = None) -> list[np.ndarray]:
    """Split encoded values into `n` additive shares mod 2^64.

    Shares 0..n-2 are uniform CSPRNG words (`rng` is for tests only); the last is
    x - sum(others). n = 1 is allowed and returns a copy: one party, no secrecy.

        >>> s = share(encode(np.array([2.0])), n=2)
        >>> decode(s[0] + s[1])
        array([2.])
    """
    _check_n(n)
    x = _check_words(x_encoded, "x_encoded")
    flat = x.reshape(-1)
    randoms = [_draw(flat.size, rng) for _ in range(n - 1)]
    last = flat.copy()
    for block in _blocks(flat.size):
        for words in randoms:
            np.subtract(last[block], words[block], out=last[block])
    return [words.reshape(x.shape) for words in (*randoms, last)]


def _check_same_shapes(groups: Sequence[Sequence[np.ndarray]], what: str) -> None:
    for group in groups:
        for array in group:
            _check_words(array, what)
        if len({array.shape for array in group}) > 1:
            raise SharingError(f"{what} have different shapes: {sorted({a.shape for a in group})}")


def reconstruct(shares: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of all shares mod 2^64: the encoded secret.

        >>> reconstruct(share(np.array([7], dtype=np.uint64), n=3))
        array([7], dtype=uint64)
    """
    if len(shares) == 0:
        raise SharingError("reconstruct needs at least one share")
    _check_same_shapes([shares], "shares")
    return _sum_words([s.reshape(-1) for s in shares]).reshape(shares[0].shape)


def _sum_block(parts: Sequence[np.ndarray], block: slice, out: np.ndarray) -> None:
    """out = sum of parts[i][block] mod 2^64."""
    if len(parts) == 1:
        np.copyto(out, parts[0][block])
    else:
        np.add(parts[0][block], parts[1][block], out=out)
    for part in parts[2:]:
        np.add(out, part[block], out=out)


def _sum_words(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise sum mod 2^64 of equally long flat uint64 arrays."""
    out = np.empty(parts[0].size, dtype=np.uint64)
    for block in _blocks(out.size):
        _sum_block(parts, block, out[block])
    return out


def add_shares(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Share-wise sum: shares of x + y from shares of x and shares of y.

        >>> x, y = share(encode(np.array([1.0])), 2), share(encode(np.array([2.0])), 2)
        >>> decode(reconstruct(add_shares(x, y)))
        array([3.])
    """
    if len(a) != len(b):
        raise SharingError(f"cannot add {len(a)} shares to {len(b)} shares")
    _check_same_shapes(list(zip(a, b)), "shares to add")
    return [np.add(sa, sb) for sa, sb in zip(a, b)]


def _public_word(k: int) -> np.uint64:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SharingError(f"public multiplier must be an integer, got {k!r}")
    return np.uint64(int(k) % (1 << 64))


def mul_public(shares: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """Share-wise product with a public integer `k` (mod 2^64; negative k works).

    The caller keeps |k * x| within the encoder's limit: shares cannot tell.

        >>> decode(reconstruct(mul_public(share(encode(np.array([1.5])), 2), -3)))
        array([-4.5])
    """
    word = _public_word(k)
    _check_same_shapes([shares], "shares")
    return [np.multiply(s, word) for s in shares]


# --- state dicts --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class SharedTensor:
    """One party's share of one named array: its shape, original dtype, flat uint64 words."""

    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise SharingError(f"unsupported dtype {self.dtype!r}; one of {', '.join(DTYPES)}")
        if any(d < 0 for d in self.shape):
            raise SharingError(f"negative dimension in shape {self.shape}")
        words = _check_words(self.data, "share data")
        if words.ndim != 1 or words.size != math.prod(self.shape):
            raise SharingError(f"share data holds {words.size} words, shape {self.shape} needs "
                               f"{math.prod(self.shape)}")

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class SharedStateDict:
    """Party `party`'s (0-based) share of a whole state dict, among `n_parties`.

    Float arrays are fixed point with `frac_bits`; integer arrays are plain integers.
    """

    party: int
    n_parties: int
    frac_bits: int
    tensors: dict[str, SharedTensor]

    def __post_init__(self) -> None:
        _check_n(self.n_parties)
        _check_frac_bits(self.frac_bits)
        if isinstance(self.party, bool) or not isinstance(self.party, (int, np.integer)) \
                or not 0 <= self.party < self.n_parties:
            raise SharingError(f"party index {self.party!r} is not in 0..{self.n_parties - 1}")
        for attr in ("party", "n_parties", "frac_bits"):  # plain ints, e.g. for JSON
            object.__setattr__(self, attr, int(getattr(self, attr)))
        for name, tensor in self.tensors.items():
            if not isinstance(name, str) or not isinstance(tensor, SharedTensor):
                raise SharingError(f"tensors must map names to SharedTensor, got {name!r}")

    def __repr__(self) -> str:  # never print share words
        size = sum(t.data.size for t in self.tensors.values())
        return (f"SharedStateDict(party={self.party}, n_parties={self.n_parties}, "
                f"frac_bits={self.frac_bits}, tensors={len(self.tensors)}, values={size})")


def _frac_for(dtype: str, frac_bits: int) -> int:
    return frac_bits if dtype in FLOAT_DTYPES else 0


def share_state_dict(weights: Mapping[str, np.ndarray], n: int, frac_bits: int = FRAC_BITS,
                     *, rng: WordSource | None = None) -> list[SharedStateDict]:
    """Encode and share every array of a state dict; element i goes to party i.

        >>> parties = share_state_dict({"w": np.float32([0.5]), "steps": np.int64(7)}, n=2)
        >>> [p.party for p in parties], parties[0].tensors["steps"].dtype
        ([0, 1], 'int64')
    """
    _check_n(n)
    _check_frac_bits(frac_bits)
    layout = []
    for name, value in weights.items():
        if not isinstance(name, str):
            raise SharingError(f"state dict names must be strings, got {name!r}")
        array = _as_real_array(value, repr(name))
        if array.dtype.name not in DTYPES:
            raise SharingError(f"cannot share {name!r}: unsupported dtype {array.dtype} "
                               f"(one of {', '.join(DTYPES)})")
        flat = array.reshape(-1)
        _check_range(flat, _frac_for(array.dtype.name, frac_bits), n, repr(name))
        layout.append((name, array.shape, array.dtype.name, flat))
    total = sum(flat.size for *_, flat in layout)
    buffers = [_draw(total, rng) for _ in range(n - 1)] + [np.empty(total, dtype=np.uint64)]
    randoms, last = buffers[:-1], buffers[-1]
    start, tensors = 0, [{} for _ in range(n)]
    for name, shape, dtype, flat in layout:
        span = slice(start, start + flat.size)
        _encode_into(flat, last[span], _frac_for(dtype, frac_bits), [r[span] for r in randoms])
        for party, buffer in enumerate(buffers):
            tensors[party][name] = SharedTensor(shape, dtype, buffer[span])
        start = span.stop
    return [SharedStateDict(party, n, frac_bits, tensors[party]) for party in range(n)]


def _check_compatible(a: SharedStateDict, b: SharedStateDict, what: str) -> None:
    for attr in ("n_parties", "frac_bits"):
        if getattr(a, attr) != getattr(b, attr):
            raise SharingError(f"{what}: {attr} differs ({getattr(a, attr)} vs {getattr(b, attr)})")
    if a.tensors.keys() != b.tensors.keys():
        differ = sorted(a.tensors.keys() ^ b.tensors.keys())
        raise SharingError(f"{what}: names differ ({', '.join(map(repr, differ[:5]))}"
                           f"{', ...' if len(differ) > 5 else ''})")
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        if (ta.shape, ta.dtype) != (tb.shape, tb.dtype):
            raise SharingError(f"{what}: {name!r} is {ta.shape} {ta.dtype} in one and "
                               f"{tb.shape} {tb.dtype} in the other")


def add_state_dict_shares(a: SharedStateDict, b: SharedStateDict) -> SharedStateDict:
    """Share-wise sum of two parties' shares (same party index: aggregator i adds shares i).

        >>> x, y = share_state_dict({"w": np.ones(2)}, 2), share_state_dict({"w": np.ones(2)}, 2)
        >>> reconstruct_state_dict([add_state_dict_shares(p, q) for p, q in zip(x, y)])["w"]
        array([2., 2.])
    """
    _check_compatible(a, b, "cannot add shares")
    if a.party != b.party:
        raise SharingError(f"cannot add shares of party {a.party} and party {b.party}")
    return SharedStateDict(a.party, a.n_parties, a.frac_bits, {
        name: SharedTensor(t.shape, t.dtype, np.add(t.data, b.tensors[name].data))
        for name, t in a.tensors.items()})


def scale_state_dict_shares(s: SharedStateDict, k: int) -> SharedStateDict:
    """Share-wise product with a public integer `k` (e.g. a sample count).

        >>> parties = share_state_dict({"w": np.ones(1)}, 2)
        >>> reconstruct_state_dict([scale_state_dict_shares(p, 3) for p in parties])["w"]
        array([3.])
    """
    word = _public_word(k)
    return SharedStateDict(s.party, s.n_parties, s.frac_bits, {
        name: SharedTensor(t.shape, t.dtype, np.multiply(t.data, word))
        for name, t in s.tensors.items()})


def _reconstruct_tensor(parts: Sequence[np.ndarray], tensor: SharedTensor, frac_bits: int,
                        name: str) -> np.ndarray:
    """Sum the parties' words and restore the original dtype (floats block by block)."""
    if not tensor.is_float:
        signed = _sum_words(parts).view(np.int64)
        info = np.iinfo(tensor.dtype)
        if signed.size and (signed.min() < info.min or signed.max() > info.max):
            raise SharingError(f"reconstructed {name!r} does not fit {tensor.dtype} "
                               f"(range {signed.min()}..{signed.max()})")
        return signed.astype(tensor.dtype).reshape(tensor.shape)
    out = np.empty(parts[0].size, dtype=tensor.dtype)
    words = np.empty(min(_BLOCK, out.size), dtype=np.uint64)
    for block in _blocks(out.size):
        w = words[: block.stop - block.start]
        _sum_block(parts, block, w)
        _decode_into(w, out[block], frac_bits)
    return out.reshape(tensor.shape)


def reconstruct_state_dict(parties: Sequence[SharedStateDict]) -> dict[str, np.ndarray]:
    """Add all n parties' shares and decode: names, shapes and dtypes as shared.

        >>> reconstruct_state_dict(share_state_dict({"b": np.float32([-1.25])}, 3))
        {'b': array([-1.25], dtype=float32)}
    """
    if not parties:
        raise SharingError("reconstruct_state_dict needs the shares of all parties, got none")
    first = parties[0]
    for other in parties[1:]:
        _check_compatible(first, other, "cannot reconstruct")
    indices = sorted(p.party for p in parties)
    if indices != list(range(first.n_parties)):
        raise SharingError(f"need exactly one share from each of parties 0..{first.n_parties - 1},"
                           f" got parties {indices}")
    result = {}
    for name, tensor in first.tensors.items():
        parts = [p.tensors[name].data for p in parties]
        result[name] = _reconstruct_tensor(parts, tensor, first.frac_bits, name)
    return result
