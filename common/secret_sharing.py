"""Additive secret sharing over the ring Z_2^64 (or Z_2^32), with fixed-point encoding.

A real value x is encoded as round(x * 2^f) mod 2^64 (f = 16 fractional bits by
default) and split into n shares that add up to it mod 2^64. The first n-1
shares are uniformly random words: the AES-256-CTR keystream under a fresh 256-bit
seed from the operating system's CSPRNG (``os.urandom``, i.e. getrandom(2)), one
seed per share; any n-1 shares reveal nothing. Shares add share-wise, and a public
integer multiplies them share-wise. Encoding errs by at most 2^-(f+1) per value
(beyond that, only the output dtype's own rounding).

    >>> shares = share(encode(np.array([1.5, -2.25])), n=3)
    >>> decode(reconstruct(mul_public(shares, 2)))
    array([ 3. , -4.5])

Whole state dicts, one ``SharedStateDict`` per party (integer arrays such as
BatchNorm's ``num_batches_tracked`` are shared as integers, exactly)::

    parties = share_state_dict({"w": np.ones(3, np.float32)}, n=3)
    reconstruct_state_dict(parties)["w"]        # array([1., 1., 1.], dtype=float32)

Seeded shares: a party sends each other party k only a 32-byte seed, whose
keystream *is* k's share, and keeps one "correction" share, encode(x) minus all
of those, so that the n shares still add up to x. A receiver expands a seed from
the public layout (names, shapes, dtypes) of the model::

    correction, seeds = seeded_share_state_dict(weights, n_parties=3, own_index=0)
    share_1 = expand_seed_state_dict(seeds[1], layout_of(weights), party=1, n_parties=3)
    reconstruct_seeded_state_dict(correction, seeds)  # == weights, to 2^-17

Seeded shares can live in the 32-bit ring instead (``ring_bits=32``): uint32 words,
arithmetic mod 2^32, |x| * 2^f * n < 2^31, half the bytes to expand, send and add.
A share carries its ring (``SharedStateDict.ring_bits``, the dtype of its words);
shares of different rings are never mixed::

    correction, seeds = seeded_share_state_dict(weights, 3, 0, ring_bits=32)
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common.errors import SharingError

FRAC_BITS = 16
# Each party's encoded value stays below 2^63 / n in magnitude (2^31 / n in the
# 32-bit ring), so the sum of n of them cannot wrap; the check is on the rounded
# value, so it is exact in either ring.
MAX_PARTIES = 512
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = FLOAT_DTYPES + INT_DTYPES  # what a state dict may hold, and the wire allows

RING_BITS = (32, 64)  # the rings a share may live in: Z_2^32 or Z_2^64
_WORD_DTYPES = {32: np.dtype(np.uint32), 64: np.dtype(np.uint64)}

WordSource = Callable[[int], np.ndarray]
"""Returns that many uniformly random uint64 words (tests pass their own)."""

_BLOCK = 1 << 15  # elements per block: temporaries stay in cache

SEED_BYTES = 32  # a seed is an AES-256 key: 256 bits, never folded to fewer
# AES-256-CTR rather than ChaCha20: 4.7 against 3.9 GB/s here (cryptography 50, 256 KiB
# blocks; os.urandom gives 0.3). Every key is a fresh seed from os.urandom, or an HMAC
# of one, and produces exactly one keystream, so the all-zero initial counter block is
# safe: no (key, nonce) pair is ever used twice.
_CTR_NONCE = bytes(16)
_ZEROS = memoryview(bytes(8 * _BLOCK))  # plaintext whose encryption is the keystream
_TENSOR_KEY_LABEL = b"PneumoSyft share words v1\x00"


# --- randomness ---------------------------------------------------------------

def new_seed() -> bytes:
    """A fresh 32-byte seed from the OS CSPRNG (os.urandom).

        >>> len(new_seed())
        32
    """
    return os.urandom(SEED_BYTES)


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        size = len(seed) if isinstance(seed, (bytes, bytearray)) else type(seed).__name__
        raise SharingError(f"a seed must be {SEED_BYTES} raw bytes, got {size}")
    return bytes(seed)


class _KeyStream:
    """The AES-256-CTR keystream under one key, read in order as little-endian words."""

    def __init__(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(_CTR_NONCE)).encryptor()

    def fill(self, out: np.ndarray) -> None:
        """Overwrite the C-contiguous uint32 or uint64 array `out` with the next words
        (uint32 words take 4 keystream bytes each, not the low half of a uint64)."""
        raw = memoryview(out).cast("B")
        for start in range(0, len(raw), len(_ZEROS)):
            stop = min(start + len(_ZEROS), len(raw))
            self._encryptor.update_into(_ZEROS[: stop - start], raw[start:stop])
        if sys.byteorder == "big":
            out.byteswap(inplace=True)


def expand_seed(seed: bytes, count: int, *, ring_bits: int = 64) -> np.ndarray:
    """`count` uniform words of the ring (uint64, or uint32 for ring_bits=32), the same
    for anyone who holds the 32-byte `seed`.

        >>> seed = new_seed()
        >>> np.array_equal(expand_seed(seed, 4), expand_seed(seed, 4))
        True
        >>> np.array_equal(expand_seed(seed, 4)[:2], expand_seed(seed, 2))  # a stream
        True
        >>> expand_seed(seed, 4, ring_bits=32).dtype
        dtype('uint32')
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise SharingError(f"word count must be a non-negative integer, got {count!r}")
    out = np.empty(count, dtype=_word_dtype(ring_bits))
    _KeyStream(_check_seed(seed)).fill(out)
    return out


def random_words(count: int) -> np.ndarray:
    """`count` uniform uint64 words: a keystream under a fresh seed from os.urandom.

        >>> random_words(2).dtype
        dtype('uint64')
    """
    return expand_seed(new_seed(), count)


def _tensor_streams(seeds: Sequence[bytes], name: str) -> list[_KeyStream]:
    """One keystream per seed for the array `name`: its key is HMAC-SHA256(seed, name),
    so each array's share words depend only on the seed and its name, not on order."""
    streams = []
    for seed in seeds:
        mac = hmac.HMAC(seed, hashes.SHA256())
        mac.update(_TENSOR_KEY_LABEL + name.encode("utf-8"))
        streams.append(_KeyStream(mac.finalize()))
    return streams


def _mix_streams(words: np.ndarray, streams: Sequence[_KeyStream], scratch: np.ndarray,
                 op: np.ufunc, block: slice = slice(None)) -> None:
    """words[block] = op(words[block], next keystream words) for each stream, in the
    ring of words' dtype (op: np.add or np.subtract; `scratch`, of the same dtype,
    holds at least one block)."""
    words = words[block]
    pad = scratch[: words.size]
    for stream in streams:
        stream.fill(pad)
        op(words, pad, out=words)


def _copy_and_mix(data: np.ndarray, streams: Sequence[_KeyStream], scratch: np.ndarray,
                  block: slice, out: np.ndarray) -> None:
    """out = data[block] + the next keystream words of every stream."""
    if streams:  # the first keystream straight into out: no copy pass
        streams[0].fill(out)
        np.add(out, data[block], out=out)
    else:
        np.copyto(out, data[block])
    _mix_streams(out, streams[1:], scratch, np.add)


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


def _word_dtype(ring_bits: int) -> np.dtype:
    """The word dtype of the ring Z_2^ring_bits: uint32 or uint64."""
    if isinstance(ring_bits, bool) or not isinstance(ring_bits, (int, np.integer)) \
            or int(ring_bits) not in _WORD_DTYPES:
        raise SharingError(f"ring_bits must be 32 or 64, got {ring_bits!r}")
    return _WORD_DTYPES[int(ring_bits)]


def _signed(words: np.ndarray) -> np.ndarray:
    """The same words as two's complement integers (int32 or int64 view)."""
    return words.view(f"i{words.dtype.itemsize}")


def _check_frac_bits(frac_bits: int, ring_bits: int = 64) -> None:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)) \
            or not 0 <= frac_bits <= ring_bits - 2:
        raise SharingError(f"frac_bits must be an integer from 0 to {ring_bits - 2} in the "
                           f"{ring_bits}-bit ring, got {frac_bits!r}")


def _check_words(array: np.ndarray, what: str, rings: Sequence[int] = (64,)) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype not in [_WORD_DTYPES[r] for r in rings]:
        kinds = " or ".join(f"uint{r}" for r in rings)
        raise SharingError(f"{what} must be a {kinds} numpy array (encode() first)")
    return array


def _check_range(flat: np.ndarray, frac_bits: int, n: int, what: str,
                 ring_bits: int = 64) -> None:
    """Refuse NaN/inf and |round(x * 2^f)| * n >= 2^(r-1) in the r-bit ring, exactly:
    the encodings of n such values then add up without wrapping. (In the 64-bit ring
    the rounding never matters: the limit is >= 2^54, where every float64 is an
    integer. In the 32-bit ring a value just below 2^(31-f)/n can round onto it.)"""
    if flat.size == 0:
        return
    hi, lo = flat.max(), flat.min()  # NaN propagates through max/min
    if flat.dtype.kind == "f":
        if not (math.isfinite(hi) and math.isfinite(lo)):
            raise SharingError(f"cannot encode {what}: it holds NaN or infinite values")
        largest = max(Fraction(float(hi)), -Fraction(float(lo)))
    else:
        largest = Fraction(max(int(hi), -int(lo)))
    top = ring_bits - 1
    encoded = round(largest * (1 << frac_bits))  # what rint gives: ties to even
    if encoded * n >= 1 << top:
        rounded = "" if largest * (1 << frac_bits) * n >= 1 << top else \
            f" (rounded to {encoded} x 2^-{frac_bits})"
        raise SharingError(
            f"cannot encode {what}: largest |value| {float(largest):.6g}{rounded} is not below "
            f"the limit 2^({top}-{frac_bits})/{n} = {2.0 ** (top - frac_bits) / n:.6g} "
            f"(n={n} parties, f={frac_bits} fractional bits, {ring_bits}-bit ring)")


def _as_real_array(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise SharingError(f"cannot encode {what}: dtype {x.dtype} is not a real number type")
    return x


def _blocks(size: int) -> Iterator[slice]:
    return (slice(start, min(start + _BLOCK, size)) for start in range(0, size, _BLOCK))


# --- encoding -------------------------------------------------------------------

def _encode_into(flat: np.ndarray, out: np.ndarray, frac_bits: int,
                 then: Callable[[slice], None] | None = None) -> None:
    """out = encode(flat), block by block (range already checked); `then(block)` runs
    after each block is encoded, while out[block] is still in cache."""
    signed = _signed(out)
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
                np.multiply(signed[block], signed.dtype.type(1 << frac_bits),
                            out=signed[block])
        if then is not None:
            then(block)


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
    """out[...] = signed(words) / 2^f, in out's float dtype (one rounding)."""
    out[...] = _signed(words)
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

    Shares 0..n-2 are uniform words, each the keystream of a fresh os.urandom seed
    (`rng` replaces that source, for tests only); the last is x - sum(others).
    n = 1 is allowed and returns a copy: one party, no secrecy.

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
    """out = sum of parts[i][block], in their ring."""
    if len(parts) == 1:
        np.copyto(out, parts[0][block])
    else:
        np.add(parts[0][block], parts[1][block], out=out)
    for part in parts[2:]:
        np.add(out, part[block], out=out)


def _sum_words(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise sum, in their ring, of equally long flat arrays of one word dtype."""
    out = np.empty(parts[0].size, dtype=parts[0].dtype)
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


def _public_word(k: int, dtype: np.dtype = _WORD_DTYPES[64]) -> np.integer:
    """k mod 2^r as a word of the r-bit ring's dtype."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SharingError(f"public multiplier must be an integer, got {k!r}")
    return dtype.type(int(k) % (1 << (8 * dtype.itemsize)))


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
    """One party's share of one named array: its shape, original dtype, and flat words
    of its ring (uint64, or uint32 in the 32-bit ring)."""

    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise SharingError(f"unsupported dtype {self.dtype!r}; one of {', '.join(DTYPES)}")
        if any(d < 0 for d in self.shape):
            raise SharingError(f"negative dimension in shape {self.shape}")
        words = _check_words(self.data, "share data", RING_BITS)
        if words.ndim != 1 or words.size != math.prod(self.shape):
            raise SharingError(f"share data holds {words.size} words, shape {self.shape} needs "
                               f"{math.prod(self.shape)}")

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def ring_bits(self) -> int:
        return 8 * self.data.dtype.itemsize


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class SharedStateDict:
    """Party `party`'s (0-based) share of a whole state dict, among `n_parties`.

    Float arrays are fixed point with `frac_bits`; integer arrays are plain integers.
    Every word is in the ring Z_2^ring_bits (uint64 words, or uint32 for 32).
    """

    party: int
    n_parties: int
    frac_bits: int
    tensors: dict[str, SharedTensor]
    ring_bits: int = 64

    def __post_init__(self) -> None:
        _check_n(self.n_parties)
        words = _word_dtype(self.ring_bits)
        _check_frac_bits(self.frac_bits, int(self.ring_bits))
        if isinstance(self.party, bool) or not isinstance(self.party, (int, np.integer)) \
                or not 0 <= self.party < self.n_parties:
            raise SharingError(f"party index {self.party!r} is not in 0..{self.n_parties - 1}")
        for attr in ("party", "n_parties", "frac_bits", "ring_bits"):  # plain ints, e.g. JSON
            object.__setattr__(self, attr, int(getattr(self, attr)))
        for name, tensor in self.tensors.items():
            if not isinstance(name, str) or not isinstance(tensor, SharedTensor):
                raise SharingError(f"tensors must map names to SharedTensor, got {name!r}")
            if tensor.data.dtype != words:
                raise SharingError(f"{name!r} holds {tensor.data.dtype} words, but the share is "
                                   f"in the {self.ring_bits}-bit ring ({words} words)")

    def __repr__(self) -> str:  # never print share words
        size = sum(t.data.size for t in self.tensors.values())
        return (f"SharedStateDict(party={self.party}, n_parties={self.n_parties}, "
                f"frac_bits={self.frac_bits}, ring_bits={self.ring_bits}, "
                f"tensors={len(self.tensors)}, values={size})")


def _frac_for(dtype: str, frac_bits: int) -> int:
    return frac_bits if dtype in FLOAT_DTYPES else 0


class TensorSpec(NamedTuple):
    """Name, shape and dtype of one array: the public part of a share."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _spec_and_values(name: str, value: np.ndarray) -> tuple[TensorSpec, np.ndarray]:
    if not isinstance(name, str):
        raise SharingError(f"state dict names must be strings, got {name!r}")
    array = _as_real_array(value, repr(name))
    if array.dtype.name not in DTYPES:
        raise SharingError(f"cannot share {name!r}: unsupported dtype {array.dtype} "
                           f"(one of {', '.join(DTYPES)})")
    return TensorSpec(name, tuple(int(d) for d in array.shape), array.dtype.name), \
        array.reshape(-1)


def _state_arrays(weights: Mapping[str, np.ndarray], n: int, frac_bits: int,
                  ring_bits: int = 64) -> list[tuple[TensorSpec, np.ndarray]]:
    """Each array's spec and flat values, checked for names, dtypes and range."""
    _check_n(n)
    _word_dtype(ring_bits)
    _check_frac_bits(frac_bits, ring_bits)
    arrays = [_spec_and_values(name, value) for name, value in weights.items()]
    for spec, flat in arrays:
        _check_range(flat, _frac_for(spec.dtype, frac_bits), n, repr(spec.name), ring_bits)
    return arrays


def layout_of(state: Mapping[str, np.ndarray] | SharedStateDict) -> tuple[TensorSpec, ...]:
    """The public layout of a state dict (of arrays, or a share of one), in its order.

    A receiver of seeds can build it from the model alone, e.g. from zero weights.

        >>> layout_of({"w": np.zeros((2, 3), np.float32)})
        (TensorSpec(name='w', shape=(2, 3), dtype='float32'),)
    """
    if isinstance(state, SharedStateDict):
        return tuple(TensorSpec(name, t.shape, t.dtype) for name, t in state.tensors.items())
    return tuple(_spec_and_values(name, value)[0] for name, value in state.items())


def _total_size(specs: Sequence[TensorSpec]) -> int:
    return sum(math.prod(spec.shape) for spec in specs)


def _subtract_arrays(words: np.ndarray, others: Sequence[np.ndarray], block: slice) -> None:
    for other in others:
        np.subtract(words[block], other[block], out=words[block])


def share_state_dict(weights: Mapping[str, np.ndarray], n: int, frac_bits: int = FRAC_BITS,
                     *, rng: WordSource | None = None) -> list[SharedStateDict]:
    """Encode and share every array of a state dict; element i goes to party i.

        >>> parties = share_state_dict({"w": np.float32([0.5]), "steps": np.int64(7)}, n=2)
        >>> [p.party for p in parties], parties[0].tensors["steps"].dtype
        ([0, 1], 'int64')
    """
    arrays = _state_arrays(weights, n, frac_bits)
    total = _total_size([spec for spec, _ in arrays])
    buffers = [_draw(total, rng) for _ in range(n - 1)] + [np.empty(total, dtype=np.uint64)]
    start, tensors = 0, [{} for _ in range(n)]
    for spec, flat in arrays:
        span = slice(start, start + flat.size)
        randoms, last = [r[span] for r in buffers[:-1]], buffers[-1][span]
        _encode_into(flat, last, _frac_for(spec.dtype, frac_bits),
                     functools.partial(_subtract_arrays, last, randoms))
        for party, buffer in enumerate(buffers):
            tensors[party][spec.name] = SharedTensor(spec.shape, spec.dtype, buffer[span])
        start = span.stop
    return [SharedStateDict(party, n, frac_bits, tensors[party]) for party in range(n)]


# --- seeded shares of state dicts ------------------------------------------------------

def _check_index(index: int, n: int, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < n:
        raise SharingError(f"{what} {index!r} is not in 0..{n - 1}")
    return int(index)


def _check_seed_list(seeds: Sequence[bytes]) -> list[bytes]:
    if isinstance(seeds, (bytes, bytearray, str)) or not isinstance(seeds, Sequence):
        raise SharingError("seeds must be a list of 32-byte seeds")
    checked = [_check_seed(seed) for seed in seeds]
    if len(set(checked)) != len(checked):
        raise SharingError("the same seed was given twice (one share counted twice)")
    return checked


def seeded_share_state_dict(weights: Mapping[str, np.ndarray], n_parties: int, own_index: int,
                            frac_bits: int = FRAC_BITS, *, ring_bits: int = 64
                            ) -> tuple[SharedStateDict, list[bytes | None]]:
    """Share a state dict as one correction share plus a fresh seed for each other party.

    Returns (correction, seeds): seeds[k] (None at own_index) expands to party k's
    share with `expand_seed_state_dict`; the correction, party own_index's share, is
    encode(weights) - sum of those shares (mod 2^ring_bits), computed block by block.
    With ring_bits=32 every word is a uint32 (half the bytes of the default 64-bit
    ring) and |x| * 2^f * n must stay below 2^31.

        >>> correction, seeds = seeded_share_state_dict({"w": np.float32([0.5])}, 3, 1)
        >>> correction.party, [len(s) if s else s for s in seeds]
        (1, [32, None, 32])
        >>> reconstruct_seeded_state_dict(correction, seeds)["w"]
        array([0.5], dtype=float32)
        >>> correction, seeds = seeded_share_state_dict({"w": np.float32([0.5])}, 3, 1,
        ...                                             ring_bits=32)
        >>> correction.ring_bits, correction.tensors["w"].data.dtype
        (32, dtype('uint32'))
    """
    arrays = _state_arrays(weights, n_parties, frac_bits, ring_bits)
    own_index = _check_index(own_index, n_parties, "own party index")
    seeds = [None if k == own_index else new_seed() for k in range(n_parties)]
    others = [seed for seed in seeds if seed is not None]
    word = _word_dtype(ring_bits)
    buffer = np.empty(_total_size([spec for spec, _ in arrays]), dtype=word)
    scratch = np.empty(min(_BLOCK, buffer.size), dtype=word)
    start, tensors = 0, {}
    for spec, flat in arrays:
        out = buffer[start:start + flat.size]
        streams = _tensor_streams(others, spec.name)
        _encode_into(flat, out, _frac_for(spec.dtype, frac_bits),
                     functools.partial(_mix_streams, out, streams, scratch, np.subtract))
        tensors[spec.name] = SharedTensor(spec.shape, spec.dtype, out)
        start += flat.size
    return SharedStateDict(own_index, n_parties, frac_bits, tensors, ring_bits), seeds


def _check_spec(spec: Sequence) -> TensorSpec:
    """A (name, shape, dtype) triple, checked."""
    try:
        name, shape, dtype = spec
        shape = tuple(shape)
    except (TypeError, ValueError):
        raise SharingError(f"a layout entry must be (name, shape, dtype), got {spec!r}") from None
    if not isinstance(name, str) or dtype not in DTYPES or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
            for d in shape):
        raise SharingError(f"bad layout entry {spec!r}: needs a name, non-negative integer "
                           f"dimensions and one of {', '.join(DTYPES)}")
    return TensorSpec(name, tuple(int(d) for d in shape), dtype)


def expand_seed_state_dict(seed: bytes, layout: Sequence[TensorSpec], party: int,
                           n_parties: int, frac_bits: int = FRAC_BITS, *,
                           ring_bits: int = 64) -> SharedStateDict:
    """Party `party`'s share, expanded from its seed and the public `layout`, in the
    ring the sender shared in (ring_bits).

        >>> weights = {"w": np.float32([0.5, 2.0]), "steps": np.int64(3)}
        >>> correction, seeds = seeded_share_state_dict(weights, 2, own_index=0)
        >>> other = expand_seed_state_dict(seeds[1], layout_of(weights), 1, 2)
        >>> reconstruct_state_dict([correction, other])["w"]
        array([0.5, 2. ], dtype=float32)
    """
    seed = _check_seed(seed)
    word = _word_dtype(ring_bits)
    specs = [_check_spec(spec) for spec in layout]
    if len({spec.name for spec in specs}) != len(specs):
        raise SharingError("layout names an array twice")
    buffer = np.empty(_total_size(specs), dtype=word)
    start, tensors = 0, {}
    for spec in specs:
        words = buffer[start:start + math.prod(spec.shape)]
        (stream,) = _tensor_streams([seed], spec.name)
        stream.fill(words)
        tensors[spec.name] = SharedTensor(spec.shape, spec.dtype, words)
        start += words.size
    return SharedStateDict(party, n_parties, frac_bits, tensors, ring_bits)


def add_seeds_into(total: SharedStateDict, seeds: Sequence[bytes]) -> SharedStateDict:
    """Add the shares that `seeds` expand to into `total`, in place, block by block
    (no model-sized temporary), in total's ring; returns `total`. What an aggregator
    does with its correction share and the seeds the other parties sent it.

        >>> correction, seeds = seeded_share_state_dict({"w": np.float32([4.0])}, 2, 0)
        >>> decode(add_seeds_into(correction, [seeds[1]]).tensors["w"].data)
        array([4.])
    """
    seeds = _check_seed_list(seeds)
    scratch = np.empty(_BLOCK, dtype=_word_dtype(total.ring_bits))
    for name, tensor in total.tensors.items():
        if not tensor.data.flags.writeable:
            raise SharingError(f"cannot add into {name!r}: its share words are read-only")
        streams = _tensor_streams(seeds, name)
        for block in _blocks(tensor.data.size):
            _mix_streams(tensor.data, streams, scratch, np.add, block)
    return total


def reconstruct_seeded_state_dict(correction: SharedStateDict,
                                  seeds: Sequence[bytes | None]) -> dict[str, np.ndarray]:
    """Decode the secret from its correction share and all the other parties' seeds,
    as `seeded_share_state_dict` returned them (None at the correction's index),
    block by block, in the correction's ring; the same result as expanding every seed
    and reconstructing.

        >>> correction, seeds = seeded_share_state_dict({"b": np.float64([-1.25])}, 3, 2)
        >>> reconstruct_seeded_state_dict(correction, seeds)
        {'b': array([-1.25])}
    """
    if isinstance(seeds, (bytes, bytearray, str)) or not isinstance(seeds, Sequence) \
            or len(seeds) != correction.n_parties \
            or [k for k, seed in enumerate(seeds) if seed is None] != [correction.party]:
        raise SharingError(f"need {correction.n_parties} seeds, None exactly at the correction's "
                           f"index {correction.party}")
    others = _check_seed_list([seed for seed in seeds if seed is not None])
    scratch = np.empty(_BLOCK, dtype=_word_dtype(correction.ring_bits))
    result = {}
    for name, tensor in correction.tensors.items():
        add_streams = functools.partial(_copy_and_mix, tensor.data,
                                        _tensor_streams(others, name), scratch)
        result[name] = _reconstruct_tensor(add_streams, tensor, correction.frac_bits, name)
    return result


def _check_compatible(a: SharedStateDict, b: SharedStateDict, what: str) -> None:
    if a.ring_bits != b.ring_bits:
        raise SharingError(f"{what}: one share is in the {a.ring_bits}-bit ring, another in the "
                           f"{b.ring_bits}-bit ring; shares of different rings do not mix")
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
        for name, t in a.tensors.items()}, a.ring_bits)


def scale_state_dict_shares(s: SharedStateDict, k: int) -> SharedStateDict:
    """Share-wise product with a public integer `k` (e.g. a sample count).

        >>> parties = share_state_dict({"w": np.ones(1)}, 2)
        >>> reconstruct_state_dict([scale_state_dict_shares(p, 3) for p in parties])["w"]
        array([3.])
    """
    word = _public_word(k, _word_dtype(s.ring_bits))
    return SharedStateDict(s.party, s.n_parties, s.frac_bits, {
        name: SharedTensor(t.shape, t.dtype, np.multiply(t.data, word))
        for name, t in s.tensors.items()}, s.ring_bits)


def _reconstruct_tensor(sum_block: Callable[[slice, np.ndarray], None], tensor: SharedTensor,
                        frac_bits: int, name: str) -> np.ndarray:
    """Restore the original dtype from the summed words that `sum_block(block, out)`
    writes, block by block (integers range-checked as a whole)."""
    size, word = tensor.data.size, tensor.data.dtype
    if not tensor.is_float:
        words = np.empty(size, dtype=word)
        for block in _blocks(size):
            sum_block(block, words[block])
        signed = _signed(words)
        info = np.iinfo(tensor.dtype)
        if signed.size and (signed.min() < info.min or signed.max() > info.max):
            raise SharingError(f"reconstructed {name!r} does not fit {tensor.dtype} "
                               f"(range {signed.min()}..{signed.max()})")
        return signed.astype(tensor.dtype).reshape(tensor.shape)
    out = np.empty(size, dtype=tensor.dtype)
    words = np.empty(min(_BLOCK, size), dtype=word)
    for block in _blocks(size):
        w = words[: block.stop - block.start]
        sum_block(block, w)
        _decode_into(w, out[block], frac_bits)
    return out.reshape(tensor.shape)


def reconstruct_state_dict(parties: Sequence[SharedStateDict]) -> dict[str, np.ndarray]:
    """Add all n parties' shares and decode: names, shapes and dtypes as shared.
    The shares must all be in one ring (32- or 64-bit).

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
        result[name] = _reconstruct_tensor(functools.partial(_sum_block, parts), tensor,
                                           first.frac_bits, name)
    return result
