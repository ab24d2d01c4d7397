"""Additive secret sharing over Z_2^64: accuracy, homomorphism, limits, and randomness.

Real randomness throughout (no mocks, except one test that swaps os.urandom to
prove it is the source). The statistical tests are sized for a false alarm rate
around 1e-7 each, and each one is shown to reject a deliberately broken generator.
"""

from __future__ import annotations

import doctest
import inspect
import itertools
import random
from fractions import Fraction

import numpy as np
import pytest

from common import secret_sharing as ss
from common.errors import SharingError
from common.secret_sharing import (
    SharedStateDict, add_shares, add_state_dict_shares, decode, encode, mul_public,
    random_words, reconstruct, reconstruct_state_dict, scale_state_dict_shares, share,
    share_state_dict,
)

F = 16
MAX_ERROR = 2.0 ** -(F + 1)
N_WORDS = 1 << 16
Z_BOUND = 6.04         # |z| of one of 64 bit positions: two-sided p = 1e-7 / 64
CHI2_64_BOUND = 141.0  # chi-square with 64 degrees of freedom: p = 1e-7


def limit(n: int, f: int = F) -> Fraction:
    return Fraction(2 ** (63 - f), n)


def largest_float_below(bound: Fraction) -> float:
    x = float(bound)
    while Fraction(x) >= bound:
        x = np.nextafter(x, 0.0)
    return x


def smallest_float_at_or_above(bound: Fraction) -> float:
    return float(np.nextafter(largest_float_below(bound), np.inf))


# --- statistics on bits -----------------------------------------------------------

def bit_counts(words: np.ndarray) -> np.ndarray:
    """How many of `words` have each of the 64 bits set (bit 0 = least significant)."""
    bits = np.unpackbits(words.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1,
                         bitorder="little")
    return bits.sum(axis=0, dtype=np.int64)


def uniform_bits_z(words: np.ndarray) -> np.ndarray:
    """Per-bit z-scores against Binomial(N, 1/2)."""
    n = words.size
    return (bit_counts(words) - n / 2) / np.sqrt(n / 4)


def looks_uniform(words: np.ndarray) -> bool:
    z = uniform_bits_z(words)
    return bool(np.abs(z).max() < Z_BOUND and (z ** 2).sum() < CHI2_64_BOUND)


def same_bit_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Two-sample, per-bit two-proportion test (equal sample sizes)."""
    assert a.size == b.size
    z = (bit_counts(a) - bit_counts(b)) / np.sqrt(a.size / 2)
    return bool(np.abs(z).max() < Z_BOUND and (z ** 2).sum() < CHI2_64_BOUND)


def biased_words(count: int) -> np.ndarray:
    """Every bit set with probability 1/2 + 1/64: a weak but real bias."""
    words = [random_words(count) for _ in range(6)]
    return words[0] | (words[1] & words[2] & words[3] & words[4] & words[5])


def words_63_bit(count: int) -> np.ndarray:
    """A classic mistake: randint(0, 2**63), whose top bit is always 0."""
    return random_words(count) >> np.uint64(1)


# --- encode / decode --------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_encode_decode_error_within_half_ulp_across_magnitudes(n):
    rng = np.random.default_rng(n)  # test data only; shares never use numpy's RNG
    top = float(limit(n))
    magnitudes = 10.0 ** rng.uniform(-8, np.log10(top), size=20_000)
    x = np.concatenate([magnitudes * rng.choice([-1.0, 1.0], size=magnitudes.size),
                        rng.uniform(-1, 1, size=5_000), [0.0, -0.0],
                        [largest_float_below(limit(n)), -largest_float_below(limit(n))],
                        top * (1 - rng.uniform(0, 1e-6, size=100))])
    x = x[np.abs(x) <= largest_float_below(limit(n))]
    error = np.abs(decode(encode(x, F, n_parties=n), F) - x)
    assert error.max() <= MAX_ERROR


def test_encode_float32_and_integers_exactly_and_negatives_two_complement():
    x32 = np.random.default_rng(0).normal(scale=100, size=10_000).astype(np.float32)
    assert np.abs(decode(encode(x32)) - x32.astype(np.float64)).max() <= MAX_ERROR
    assert encode(np.array([-1.0]))[0] == 2 ** 64 - 2 ** F
    assert encode(np.array([0.0, -0.0])).tolist() == [0, 0]
    assert encode(np.array([2.0 ** -17 * 3]))[0] == 2  # round half to even, error 2^-17
    ints = np.array([-(2 ** 46), -1, 0, 5, 2 ** 46 + 12345], dtype=np.int64)
    assert decode(encode(ints)).tolist() == ints.astype(float).tolist()
    assert encode(ints, frac_bits=0).view(np.int64).tolist() == ints.tolist()


def test_encode_keeps_shape_and_decode_returns_float64():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8
    encoded = encode(x)
    assert encoded.shape == (2, 3, 4) and encoded.dtype == np.uint64
    decoded = decode(encoded)
    assert decoded.dtype == np.float64 and np.array_equal(decoded, x)


# --- limits ----------------------------------------------------------------------

@pytest.mark.parametrize("n,f", [(1, 16), (2, 16), (3, 16), (7, 16), (3, 8), (5, 30)])
def test_limit_is_exact_for_floats(n, f):
    below, above = largest_float_below(limit(n, f)), smallest_float_at_or_above(limit(n, f))
    for value in (below, -below):
        assert decode(encode(np.array([value]), f, n), f)[0] == pytest.approx(value, abs=2.0 ** -f)
    for value in (above, -above, above * 2):
        with pytest.raises(SharingError, match=rf"2\^\(63-{f}\)/{n} .*n={n} parties, f={f}"):
            encode(np.array([0.0, value]), f, n)


@pytest.mark.parametrize("n", [1, 3, 4])
def test_limit_is_exact_for_integers_and_float32(n):
    largest = (2 ** 47 - 1) // n  # n * largest < 2^47 <= n * (largest + 1)
    assert decode(encode(np.array([largest, -largest]), F, n)).tolist() == [largest, -largest]
    with pytest.raises(SharingError, match="not below the limit"):
        encode(np.array([largest + 1]), F, n)
    with pytest.raises(SharingError, match="not below the limit"):
        encode(np.array([-(largest + 1)]), F, n)
    below32 = np.float32(float(limit(n)))
    while Fraction(float(below32)) >= limit(n):
        below32 = np.nextafter(below32, np.float32(0))
    assert decode(encode(np.array([below32]), F, n))[0] == float(below32)
    with pytest.raises(SharingError):
        encode(np.array([np.nextafter(below32, np.float32(np.inf))]), F, n)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused(bad):
    for dtype in (np.float32, np.float64):
        with pytest.raises(SharingError, match="NaN or infinite"):
            encode(np.array([1.0, bad, 2.0], dtype=dtype))
    with pytest.raises(SharingError, match=r"'w'.*NaN or infinite"):
        share_state_dict({"w": np.array([bad], dtype=np.float32)}, n=2)


def test_error_message_names_largest_value_limit_n_and_f():
    with pytest.raises(SharingError) as info:
        encode(np.array([1.0, -3e13]), 16, n_parties=5)
    message = str(info.value)
    assert "\n" not in message
    assert "3e+13" in message and "2^(63-16)/5" in message and "2.81475e+13" in message
    assert "n=5" in message and "f=16" in message


def test_sums_of_n_values_at_the_limit_do_not_wrap():
    n = 3
    top = largest_float_below(limit(n))
    values = np.array([top, -top, top / 3])
    parties = [share(encode(values, F, n), n) for _ in range(n)]
    total = parties[0]
    for other in parties[1:]:
        total = add_shares(total, other)
    assert np.array_equal(decode(reconstruct(total)), n * values)


def test_bad_arguments_refused():
    with pytest.raises(SharingError, match="frac_bits"):
        encode(np.zeros(1), frac_bits=63)
    with pytest.raises(SharingError, match="number of parties"):
        share(encode(np.zeros(1)), 0)
    with pytest.raises(SharingError, match="number of parties"):
        share(encode(np.zeros(1)), ss.MAX_PARTIES + 1)
    with pytest.raises(SharingError, match="uint64"):
        share(np.zeros(3), 2)
    with pytest.raises(SharingError, match="not a real number"):
        encode(np.array(["a"]))
    with pytest.raises(SharingError, match="integer"):
        mul_public([np.zeros(1, np.uint64)], 1.5)
    with pytest.raises(SharingError, match="different shapes"):
        reconstruct([np.zeros(2, np.uint64), np.zeros(3, np.uint64)])


# --- share-wise arithmetic ---------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shares_add_and_scale_like_the_secrets(n):
    rng = np.random.default_rng(10 + n)
    x, y = rng.normal(scale=1e3, size=(2, 4, 50))
    sx, sy = share(encode(x, F, n), n), share(encode(y, F, n), n)
    assert len(sx) == n and all(s.shape == (4, 50) and s.dtype == np.uint64 for s in sx)
    assert np.abs(decode(reconstruct(sx)) - x).max() <= MAX_ERROR
    assert np.abs(decode(reconstruct(add_shares(sx, sy))) - (x + y)).max() <= 2 * MAX_ERROR
    for k in (0, 1, 7, -3, 2 ** 64 + 2):  # k is taken mod 2^64: 2^64 + 2 acts as 2
        expected = (k % 2 ** 64 if k > 2 ** 63 else k) * x
        got = decode(reconstruct(mul_public(sx, k)))
        assert np.abs(got - expected).max() <= max(abs(k) % 2 ** 63, 1) * MAX_ERROR


def test_state_dict_roundtrip_keeps_names_shapes_dtypes_and_integers_exact():
    rng = np.random.default_rng(3)
    weights = {
        "conv1.weight": rng.normal(size=(8, 1, 3, 3)).astype(np.float32),
        "bn1.running_var": rng.uniform(0.5, 2, size=8).astype(np.float64),
        "bn1.num_batches_tracked": np.array(123456789, dtype=np.int64),
        "counts": np.array([[-5, 0, 7]], dtype=np.int32),
        "mask": np.array([0, 255], dtype=np.uint8),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    parties = share_state_dict(weights, n=3)
    assert [p.party for p in parties] == [0, 1, 2]
    assert all(p.n_parties == 3 and p.frac_bits == F for p in parties)
    restored = reconstruct_state_dict(parties[::-1])  # any order of parties
    assert list(restored) == list(weights)
    for name, value in weights.items():
        assert restored[name].shape == value.shape and restored[name].dtype == value.dtype
        if value.dtype.kind == "f":
            assert np.abs(restored[name] - value).max(initial=0) <= MAX_ERROR
        else:
            assert np.array_equal(restored[name], value)


def test_state_dict_sums_and_scalings_reconstruct_to_the_federated_sum():
    rng = np.random.default_rng(4)
    hospitals = [{"w": rng.normal(size=(5, 5)).astype(np.float32),
                  "steps": np.array(rng.integers(1, 1000), dtype=np.int64)} for _ in range(3)]
    counts = [120, 75, 300]
    shared = [share_state_dict(h, n=3) for h in hospitals]
    # Aggregator i scales and adds the i-th share of every hospital.
    partials = []
    for i in range(3):
        total = scale_state_dict_shares(shared[0][i], counts[0])
        for h in (1, 2):
            total = add_state_dict_shares(total, scale_state_dict_shares(shared[h][i], counts[h]))
        partials.append(total)
    result = reconstruct_state_dict(partials)
    expected_w = sum(c * h["w"].astype(np.float64) for c, h in zip(counts, hospitals))
    np.testing.assert_allclose(result["w"], expected_w, rtol=2.0 ** -23,
                               atol=sum(counts) * MAX_ERROR)
    assert result["w"].dtype == np.float32
    assert result["steps"] == sum(c * int(h["steps"]) for c, h in zip(counts, hospitals))
    assert result["steps"].dtype == np.int64


def test_inconsistent_state_dict_shares_are_refused():
    a = share_state_dict({"w": np.ones(3), "b": np.ones(2)}, n=3)
    with pytest.raises(SharingError, match="names differ.*'b'"):
        add_state_dict_shares(a[0], share_state_dict({"w": np.ones(3)}, n=3)[0])
    with pytest.raises(SharingError, match=r"'w' is \(3,\) float64 in one and \(4,\)"):
        add_state_dict_shares(a[0], share_state_dict({"w": np.ones(4), "b": np.ones(2)}, n=3)[0])
    with pytest.raises(SharingError, match="frac_bits differs"):
        add_state_dict_shares(a[0], share_state_dict({"w": np.ones(3), "b": np.ones(2)}, 3, 8)[0])
    with pytest.raises(SharingError, match="n_parties differs"):
        add_state_dict_shares(a[0], share_state_dict({"w": np.ones(3), "b": np.ones(2)}, 2)[0])
    with pytest.raises(SharingError, match="party 0 and party 1"):
        add_state_dict_shares(a[0], a[1])
    with pytest.raises(SharingError, match=r"got parties \[0, 1\]"):
        reconstruct_state_dict(a[:2])
    with pytest.raises(SharingError, match=r"got parties \[0, 0, 1\]"):
        reconstruct_state_dict([a[0], a[0], a[1]])
    with pytest.raises(SharingError, match="does not fit int8"):
        reconstruct_state_dict([scale_state_dict_shares(p, 3)
                                for p in share_state_dict({"c": np.int8([100])}, 2)])
    with pytest.raises(SharingError, match="unsupported dtype float16"):
        share_state_dict({"h": np.ones(2, np.float16)}, 2)
    with pytest.raises(SharingError, match="party index 3"):
        SharedStateDict(3, 3, F, {})


def test_repr_never_prints_share_words():
    party = share_state_dict({"w": np.full(4, 1234.5)}, n=2)[0]
    assert repr(party) == "SharedStateDict(party=0, n_parties=2, frac_bits=16, tensors=1, values=4)"


# --- randomness ------------------------------------------------------------------

def test_bit_tests_reject_broken_generators():
    assert looks_uniform(random_words(N_WORDS))
    assert not looks_uniform(biased_words(N_WORDS))
    assert not looks_uniform(words_63_bit(N_WORDS))
    assert not same_bit_distribution(random_words(N_WORDS), biased_words(N_WORDS))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_any_n_minus_1_shares_look_uniform_but_all_n_do_not(n):
    secret = encode(np.random.default_rng(n).uniform(0, 1e4, size=N_WORDS), F, n)
    shares = share(secret, n)
    for subset in itertools.combinations(range(n), n - 1):
        for i in subset:
            assert looks_uniform(shares[i]), f"share {i} of {n}"
        # Their sum (and XOR) is uniform too: together they still say nothing.
        assert looks_uniform(reconstruct([shares[i] for i in subset])), f"sum of {subset}"
        assert looks_uniform(np.bitwise_xor.reduce([shares[i] for i in subset])), f"xor {subset}"
    assert not looks_uniform(reconstruct(shares))  # all n together give the secret away


@pytest.mark.parametrize("party", [0, 1, 2])
def test_share_distribution_does_not_depend_on_the_secret(party):
    n = 3
    zeros = encode(np.zeros(N_WORDS), F, n)
    large = encode(np.full(N_WORDS, -float(limit(n)) * 0.999), F, n)
    assert same_bit_distribution(share(zeros, n)[party], share(large, n)[party])
    # The same two-sample test catches a 2-party sharing drawn from a 63-bit generator.
    assert not same_bit_distribution(share(zeros, 2, rng=words_63_bit)[1],
                                     share(large, 2, rng=words_63_bit)[1])


def test_state_dict_shares_look_uniform():
    weights = {"a": np.zeros((256, 128), np.float32),
               "b": np.full(N_WORDS - 256 * 128, 7, np.int64)}
    for party in share_state_dict(weights, n=3)[:2]:
        words = np.concatenate([t.data for t in party.tensors.values()])
        assert looks_uniform(words)


def test_randomness_comes_from_os_urandom(monkeypatch):
    requested = []

    def fake_urandom(size: int) -> bytes:
        requested.append(size)
        return bytes(range(256)) * (size // 256) + bytes(size % 256)

    monkeypatch.setattr(ss.os, "urandom", fake_urandom)
    secret = encode(np.arange(32.0))
    shares = share(secret, n=3)
    assert sum(requested) == 2 * 32 * 8  # (n-1) x 32 words, all from os.urandom
    pattern = np.frombuffer(bytes(range(256)), dtype="<u8")
    assert np.array_equal(shares[0], pattern) and np.array_equal(shares[1], pattern)


def test_shares_are_fresh_and_not_reproducible_by_seeding_python_or_numpy():
    secret = encode(np.arange(1000.0))
    draws = []
    for _ in range(2):
        np.random.seed(1234)
        random.seed(1234)
        draws.append(share(secret, n=2)[0])
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(share(secret, 2)[0], share(secret, 2)[0])
    source = inspect.getsource(ss)
    for weak in ("np.random", "numpy.random", "import random", "default_rng", "MT19937"):
        assert weak not in source


def test_docstring_examples_run():
    result = doctest.testmod(ss)
    assert result.attempted > 0 and result.failed == 0
