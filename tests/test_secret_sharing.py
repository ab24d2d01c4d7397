"""Additive secret sharing over Z_2^64: accuracy, homomorphism, limits, and randomness,
with full shares and with seeded shares (a correction share plus seeds), these also
over Z_2^32.

Real randomness throughout (no mocks, except one test that swaps os.urandom to
prove it is the source of every seed). The statistical tests are sized for a false alarm rate
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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from common import secret_sharing as ss
from common.errors import SharingError
from common.secret_sharing import (
    SharedStateDict, TensorSpec, add_seeds_into, add_shares, add_state_dict_shares, decode,
    encode, expand_seed, expand_seed_state_dict, layout_of, mul_public, new_seed, random_words,
    reconstruct, reconstruct_seeded_state_dict, reconstruct_state_dict, scale_state_dict_shares,
    seeded_share_state_dict, share, share_state_dict,
)

F = 16
MAX_ERROR = 2.0 ** -(F + 1)
N_WORDS = 1 << 16
Z_BOUND = 6.04         # |z| of one of 64 bit positions: two-sided p = 1e-7 / 64
CHI2_BOUND = {64: 141.0,  # chi-square with 64 degrees of freedom: p = 1e-7
              32: 92.1}   # with 32 (32-bit words; Z_BOUND then errs on the safe side)


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
    """How many of `words` have each of their 64 (or 32) bits set (bit 0 = least
    significant)."""
    width = words.dtype.itemsize
    bits = np.unpackbits(words.astype(f"<u{width}").view(np.uint8).reshape(-1, width), axis=1,
                         bitorder="little")
    return bits.sum(axis=0, dtype=np.int64)


def uniform_bits_z(words: np.ndarray) -> np.ndarray:
    """Per-bit z-scores against Binomial(N, 1/2)."""
    n = words.size
    return (bit_counts(words) - n / 2) / np.sqrt(n / 4)


def looks_uniform(words: np.ndarray) -> bool:
    z = uniform_bits_z(words)
    return bool(np.abs(z).max() < Z_BOUND and (z ** 2).sum() < CHI2_BOUND[z.size])


def same_bit_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Two-sample, per-bit two-proportion test (equal sample sizes)."""
    assert a.size == b.size
    assert a.dtype == b.dtype
    z = (bit_counts(a) - bit_counts(b)) / np.sqrt(a.size / 2)
    return bool(np.abs(z).max() < Z_BOUND and (z ** 2).sum() < CHI2_BOUND[z.size])


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
    assert repr(party) == ("SharedStateDict(party=0, n_parties=2, frac_bits=16, ring_bits=64, "
                           "tensors=1, values=4)")


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


def test_every_seed_comes_from_os_urandom(monkeypatch):
    requested = []

    def fake_urandom(size: int) -> bytes:
        requested.append(size)
        return bytes([len(requested)]) * size

    monkeypatch.setattr(ss.os, "urandom", fake_urandom)
    shares = share(encode(np.arange(32.0)), n=3)
    assert requested == [32, 32]  # one full 256-bit seed per random share, nothing else
    assert np.array_equal(shares[0], expand_seed(bytes([1]) * 32, 32))
    assert np.array_equal(shares[1], expand_seed(bytes([2]) * 32, 32))
    _, seeds = seeded_share_state_dict({"w": np.ones(4)}, 3, own_index=2)
    assert requested == [32] * 4 and seeds == [bytes([3]) * 32, bytes([4]) * 32, None]


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


# --- seeded shares -----------------------------------------------------------------

def seeded_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Floats over several blocks, integer buffers at their dtypes' extremes, an empty one."""
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(scale=3, size=(2 * ss._BLOCK + 17,)).astype(np.float32),
            "fc.bias": rng.normal(scale=1e4, size=(3, 5)),
            "bn.num_batches_tracked": np.array(2 ** 40 + 3, dtype=np.int64),
            "counts": np.array([-128, 0, 127], dtype=np.int8),
            "mask": np.array([0, 255], dtype=np.uint8),
            "big": np.array([-(2 ** 31), 2 ** 31 - 1], dtype=np.int32),
            "empty": np.zeros((0, 4), dtype=np.float32)}


def expand_all(seeds, layout, n):
    return [expand_seed_state_dict(seed, layout, k, n) for k, seed in enumerate(seeds)
            if seed is not None]


def test_expand_seed_is_aes_256_ctr_from_a_zero_counter_as_little_endian_words():
    seed = bytes(range(32))
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    expected = np.frombuffer(encryptor.update(bytes(8 * 5000)), dtype="<u8")
    words = expand_seed(seed, 5000)
    assert words.dtype == np.uint64 and np.array_equal(words, expected)
    long = expand_seed(seed, 3 * ss._BLOCK + 5)  # continues across internal chunks
    assert np.array_equal(long[:5000], expected) and long.size == 3 * ss._BLOCK + 5
    assert expand_seed(seed, 0).size == 0


def test_expand_seed_refuses_anything_but_32_bytes():
    for bad in (bytes(16), bytes(31), bytes(33), "x" * 32, None, 7):
        with pytest.raises(SharingError, match="seed must be 32 raw bytes"):
            expand_seed(bad, 4)
    assert len(new_seed()) == 32 and new_seed() != new_seed()


def test_expanded_seeds_look_uniform_and_independent_of_each_other():
    a, b = expand_seed(new_seed(), N_WORDS), expand_seed(new_seed(), N_WORDS)
    assert looks_uniform(a) and looks_uniform(b)
    assert looks_uniform(a - b) and looks_uniform(a ^ b)  # no shared structure
    # Neighbouring seeds (one bit apart) give unrelated streams too.
    seed = bytearray(new_seed())
    first = expand_seed(bytes(seed), N_WORDS)
    seed[0] ^= 1
    assert looks_uniform(first ^ expand_seed(bytes(seed), N_WORDS))


def test_one_seed_gives_unrelated_words_to_each_array_whatever_the_order():
    seed = new_seed()
    layout = [TensorSpec("a", (N_WORDS,), "float32"), TensorSpec("b", (N_WORDS,), "int64")]
    share_ab = expand_seed_state_dict(seed, layout, party=1, n_parties=2)
    share_ba = expand_seed_state_dict(seed, layout[::-1], party=1, n_parties=2)
    a, b = share_ab.tensors["a"].data, share_ab.tensors["b"].data
    assert looks_uniform(a) and looks_uniform(b) and looks_uniform(a ^ b)
    assert np.array_equal(share_ba.tensors["a"].data, a)  # words depend on name, not order
    assert not np.array_equal(a, expand_seed(seed, N_WORDS))  # a derived key per array


def assert_both_reconstructions(correction, seeds, shares, weights, decodings=None):
    """From the seeds and from the expanded shares, the weights come back: same names,
    shapes and dtypes, floats within MAX_ERROR (and equal to `decodings` when given),
    integers exactly."""
    for restored in (reconstruct_seeded_state_dict(correction, seeds),
                     reconstruct_state_dict(shares)):
        assert list(restored) == list(weights)
        for name, value in weights.items():
            got = restored[name]
            assert got.shape == value.shape and got.dtype == value.dtype
            if value.dtype.kind == "f":
                if decodings is not None:
                    assert np.array_equal(got.reshape(-1), decodings[name]), name
                assert np.abs(got - value).max(initial=0) <= MAX_ERROR
            else:
                assert np.array_equal(got, value)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_seeded_shares_reconstruct_exactly_for_every_own_index(n):
    weights = seeded_weights(n)
    layout = layout_of(weights)
    for own in range(n):
        correction, seeds = seeded_share_state_dict(weights, n, own)
        assert (correction.party, correction.n_parties, correction.frac_bits) == (own, n, F)
        assert [k for k, seed in enumerate(seeds) if seed is None] == [own]
        shares = [correction, *expand_all(seeds, layout, n)]
        assert_both_reconstructions(correction, seeds, shares, weights)
        # Exact in the ring: the n shares add up to the encoding, word for word.
        total = reconstruct([np.concatenate([p.tensors[name].data for name in weights])
                             for p in shares])
        expected = np.concatenate([encode(v, F if v.dtype.kind == "f" else 0, n).reshape(-1)
                                   for v in weights.values()])
        assert np.array_equal(total, expected)


def test_a_seed_expands_to_the_same_share_on_both_sides():
    """The receiver knows only the model's public layout (from zero weights, any order)."""
    weights = seeded_weights()
    correction, seeds = seeded_share_state_dict(weights, 3, own_index=0)
    public = {name: np.zeros(w.shape, w.dtype) for name, w in reversed(weights.items())}
    receiver_layout = layout_of(public)
    assert sorted(receiver_layout) == sorted(layout_of(weights)) == sorted(layout_of(correction))
    for k in (1, 2):
        receiver = expand_seed_state_dict(seeds[k], receiver_layout, k, 3)
        again = expand_seed_state_dict(bytes(seeds[k]), layout_of(weights), k, 3)
        for name in weights:
            assert np.array_equal(receiver.tensors[name].data, again.tensors[name].data)
    # What the sender subtracted is exactly what the receivers expand.
    restored = reconstruct_state_dict(
        [correction] + [expand_seed_state_dict(seeds[k], receiver_layout, k, 3) for k in (1, 2)])
    assert np.array_equal(restored["counts"], weights["counts"])


def test_add_seeds_into_is_the_share_wise_sum_in_place():
    weights = seeded_weights()
    layout = layout_of(weights)
    correction, seeds = seeded_share_state_dict(weights, 3, own_index=1)
    others = [seeds[0], seeds[2]]
    expected = correction
    for k, seed in ((0, seeds[0]), (2, seeds[2])):  # shares of other parties, relabelled
        words = expand_seed_state_dict(seed, layout, 1, 3)
        expected = add_state_dict_shares(expected, words)
    buffers = {name: t.data for name, t in correction.tensors.items()}
    total = add_seeds_into(correction, others)
    assert total is correction
    for name, tensor in total.tensors.items():
        assert tensor.data is buffers[name]  # in place: no new model-sized arrays
        assert np.array_equal(tensor.data, expected.tensors[name].data)
    decoded = decode(total.tensors["fc.bias"].data).reshape(3, 5)
    assert np.abs(decoded - weights["fc.bias"]).max() <= MAX_ERROR


def test_federated_sum_from_seeded_shares():
    """Each hospital keeps its correction and sends seeds; aggregator j adds its own
    correction and the seeds sent to j; the partial sums add up to the total."""
    n = 4
    rng = np.random.default_rng(5)
    hospitals = [{"w": rng.normal(size=(40, 3)).astype(np.float32),
                  "steps": np.array(rng.integers(1, 1000), dtype=np.int64)} for _ in range(n)]
    outboxes = [seeded_share_state_dict(h, n, own_index=j) for j, h in enumerate(hospitals)]
    partials = [add_seeds_into(correction, [outboxes[k][1][j] for k in range(n) if k != j])
                for j, (correction, _) in enumerate(outboxes)]
    result = reconstruct_state_dict(partials)
    assert result["steps"] == sum(int(h["steps"]) for h in hospitals)
    expected = sum(h["w"].astype(np.float64) for h in hospitals)
    np.testing.assert_allclose(result["w"], expected, rtol=2.0 ** -23, atol=n * MAX_ERROR)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_seeded_shares_any_n_minus_1_look_uniform_whatever_the_secret(n):
    zeros = {"w": np.zeros(N_WORDS, np.float32)}
    large = {"w": np.full(N_WORDS, largest_float_below(limit(n)) * 0.999, np.float32)}
    layout = [TensorSpec("w", (N_WORDS,), "float32")]
    views = []
    for secret in (zeros, large):
        correction, seeds = seeded_share_state_dict(secret, n, own_index=0)
        shares = [correction.tensors["w"].data] + [
            s.tensors["w"].data for s in expand_all(seeds, layout, n)]
        for subset in itertools.combinations(range(n), n - 1):
            words = reconstruct([shares[i] for i in subset])
            assert looks_uniform(words), f"sum of shares {subset}"
        views.append(shares)
        assert not looks_uniform(reconstruct(shares))  # all n together give it away
    for party in range(n):  # each share's distribution does not depend on the secret
        assert same_bit_distribution(views[0][party], views[1][party])


def test_an_expanded_seed_says_nothing_about_the_value():
    """A party's share from a fresh seed is the same whatever the value it helps hide."""
    layout = [TensorSpec("w", (N_WORDS,), "float64")]
    shares = []
    for value in (0.0, 12345.678):
        _, seeds = seeded_share_state_dict({"w": np.full(N_WORDS, value)}, 2, own_index=0)
        shares.append(expand_seed_state_dict(seeds[1], layout, 1, 2).tensors["w"].data)
    assert looks_uniform(shares[0]) and looks_uniform(shares[1])
    assert same_bit_distribution(shares[0], shares[1])


def test_seeded_sharing_refuses_bad_input():
    weights = {"w": np.ones(3)}
    with pytest.raises(SharingError, match=r"own party index 3 is not in 0..2"):
        seeded_share_state_dict(weights, 3, 3)
    with pytest.raises(SharingError, match="own party index True"):
        seeded_share_state_dict(weights, 3, True)
    with pytest.raises(SharingError, match="number of parties"):
        seeded_share_state_dict(weights, 0, 0)
    with pytest.raises(SharingError, match="not below the limit"):
        seeded_share_state_dict({"w": np.array([2.0 ** 46])}, 3, 0)
    correction, seeds = seeded_share_state_dict(weights, 3, 1)
    for bad in (seeds[:2], [None, seeds[0], seeds[2]], [seeds[0], None, None], b"x" * 96):
        with pytest.raises(SharingError, match="need 3 seeds, None exactly at"):
            reconstruct_seeded_state_dict(correction, bad)
    with pytest.raises(SharingError, match="same seed was given twice"):
        reconstruct_seeded_state_dict(correction, [seeds[0], None, seeds[0]])
    with pytest.raises(SharingError, match="same seed was given twice"):
        add_seeds_into(correction, [seeds[0], seeds[0]])
    with pytest.raises(SharingError, match="seed must be 32 raw bytes, got 31"):
        add_seeds_into(correction, [seeds[0][:31]])
    with pytest.raises(SharingError, match="list of 32-byte seeds"):
        add_seeds_into(correction, seeds[0])
    frozen = SharedStateDict(0, 2, F, {"w": ss.SharedTensor((2,), "float64",
                                                            np.zeros(2, np.uint64))})
    frozen.tensors["w"].data.flags.writeable = False
    with pytest.raises(SharingError, match="'w': its share words are read-only"):
        add_seeds_into(frozen, [new_seed()])
    bad_layouts = [([("w", (-1,), "float32")], "non-negative"),
                   ([("w", (2,), "float16")], "float16"),
                   ([("w", (2,))], r"must be \(name, shape, dtype\)"),
                   ([("w", (2,), "int8"), ("w", (1,), "int8")], "names an array twice")]
    for layout, message in bad_layouts:
        with pytest.raises(SharingError, match=message):
            expand_seed_state_dict(new_seed(), layout, 0, 2)


# --- seeded shares in the 32-bit ring ------------------------------------------------

TWO_31 = 2 ** 31


def largest_encoding(n: int) -> int:
    """The largest M with M * n < 2^31: the largest legal |round(x * 2^f)| in ring 32."""
    return (TWO_31 - 1) // n


def ring32_weights(n: int) -> dict[str, np.ndarray]:
    """Floats at the very edge of the 32-bit limit (and just inside it after rounding),
    ordinary floats over several blocks, integers at their limit, an empty array."""
    rng = np.random.default_rng(32 + n)
    top = largest_encoding(n)
    edge = np.array([top, -top, top + 0.25, -(top + 0.25), top - 0.5, 0.0, -0.0]) / 2.0 ** F
    below32 = np.float32(top / 2.0 ** F)  # the largest float32 whose encoding is legal
    while round(Fraction(float(below32)) * 2 ** F) > top:
        below32 = np.nextafter(below32, np.float32(0))
    return {"conv.weight": rng.normal(scale=0.05, size=2 * ss._BLOCK + 17).astype(np.float32),
            "edge32": np.array([below32, -below32, 1.5, -2.25], dtype=np.float32),
            "edge64": edge,
            "bn.num_batches_tracked": np.array(top, dtype=np.int64),
            "counts": np.array([-128, 0, 127], dtype=np.int8),
            "big": np.array([-top, top], dtype=np.int32),
            "empty": np.zeros((0, 4), dtype=np.float32)}


def ring32_encoding(value: np.ndarray) -> np.ndarray:
    """The exact encoding of `value` in Z_2^32, computed independently: in float64,
    where x * 2^16 and rounding it (ties to even) are exact at these magnitudes."""
    flat = value.reshape(-1)
    if value.dtype.kind == "f":
        flat = np.rint(flat.astype(np.float64) * 2.0 ** F)
    return (flat.astype(np.int64) % 2 ** 32).astype(np.uint32)


def ring_sum(arrays) -> np.ndarray:
    total = arrays[0].copy()
    for array in arrays[1:]:
        np.add(total, array, out=total)  # wraps in the arrays' own ring
    return total


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_ring32_seeded_shares_reconstruct_exactly_at_the_limit(n):
    weights = ring32_weights(n)
    layout = layout_of(weights)
    encodings = {name: ring32_encoding(value) for name, value in weights.items()}
    decodings = {name: (encodings[name].view(np.int32) / 2.0 ** F).astype(value.dtype)
                 for name, value in weights.items() if value.dtype.kind == "f"}
    assert decodings["edge64"].tolist() == [  # the edge cases, checked in exact arithmetic
        float(round(Fraction(v) * 2 ** F)) / 2 ** F for v in weights["edge64"].tolist()]
    for own in range(n):
        correction, seeds = seeded_share_state_dict(weights, n, own, ring_bits=32)
        assert correction.ring_bits == 32 and correction.party == own
        assert all(t.data.dtype == np.uint32 for t in correction.tensors.values())
        shares = [correction] + [expand_seed_state_dict(seed, layout, k, n, ring_bits=32)
                                 for k, seed in enumerate(seeds) if seed is not None]
        for name, value in weights.items():  # exact in the ring, word for word
            words = ring_sum([p.tensors[name].data for p in shares])
            assert words.dtype == np.uint32
            assert np.array_equal(words, encodings[name]), name
        assert_both_reconstructions(correction, seeds, shares, weights, decodings)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_ring32_limit_is_exact_and_refusal_names_it(n):
    top = largest_encoding(n)
    limit_text = rf"2\^\(31-{F}\)/{n} = .*\(n={n} parties, f={F} fractional bits, 32-bit ring\)"
    above = [(top + 1) / 2.0 ** F,              # encodes one past the largest legal value
             smallest_float_at_or_above(Fraction(TWO_31, n * 2 ** F)),  # |x| 2^f n >= 2^31
             (top + 0.5 + 2.0 ** -8) / 2.0 ** F]  # below that bound, but rounds onto it
    for value in above:
        for sign in (1, -1):
            with pytest.raises(SharingError, match=limit_text):
                seeded_share_state_dict({"w": np.array([0.0, sign * value])}, n, 0, ring_bits=32)
    below32 = ring32_weights(n)["edge32"][0]
    with pytest.raises(SharingError, match=limit_text):
        seeded_share_state_dict({"w": np.array([np.nextafter(below32, np.float32(np.inf))])},
                                n, 0, ring_bits=32)
    with pytest.raises(SharingError, match=r"rounded to \d+ x 2\^-16"):
        seeded_share_state_dict({"w": np.array([above[2]])}, n, 0, ring_bits=32)
    int_text = rf"'steps': .* 2\^\(31-0\)/{n} = .*f=0 fractional bits, 32-bit ring"
    for bad_int in (np.int64(top + 1), np.int32(-(top + 1))):
        with pytest.raises(SharingError, match=int_text):
            seeded_share_state_dict({"steps": bad_int}, n, 0, ring_bits=32)
    # The 64-bit ring takes all of these, as before.
    assert seeded_share_state_dict({"w": np.array(above)}, n, 0)[0].ring_bits == 64


def test_ring32_sum_of_n_values_at_the_limit_does_not_wrap():
    n = 3
    top = largest_encoding(n) / 2.0 ** F
    outboxes = [seeded_share_state_dict({"w": np.array([top, -top, 0.5])}, n, j, ring_bits=32)
                for j in range(n)]
    partials = [add_seeds_into(correction, [outboxes[k][1][j] for k in range(n) if k != j])
                for j, (correction, _) in enumerate(outboxes)]
    assert reconstruct_state_dict(partials)["w"].tolist() == [n * top, -n * top, 1.5]


def test_ring32_expand_seed_draws_uint32_words_straight_from_the_keystream():
    seed = bytes(range(32))
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    expected = np.frombuffer(encryptor.update(bytes(4 * 5000)), dtype="<u4")
    words = expand_seed(seed, 5000, ring_bits=32)
    assert words.dtype == np.uint32 and np.array_equal(words, expected)
    long = expand_seed(seed, 3 * ss._BLOCK + 5, ring_bits=32)
    assert np.array_equal(long[:5000], expected)
    # Each 64-bit word's halves are two consecutive 32-bit words: the same keystream.
    assert np.array_equal(expand_seed(seed, 2500).view(np.uint32), expected)
    for bad in (16, 128, True, 32.0, "32"):
        with pytest.raises(SharingError, match="ring_bits must be 32 or 64"):
            expand_seed(seed, 4, ring_bits=bad)


def test_32_bit_tests_reject_broken_generators():
    words = expand_seed(new_seed(), N_WORDS, ring_bits=32)
    assert looks_uniform(words)
    biased = biased_words(N_WORDS).astype(np.uint32)  # low halves: still 1/2 + 1/64
    assert not looks_uniform(biased)
    assert not looks_uniform(words >> np.uint32(1))  # randint(0, 2**31): top bit always 0
    assert not same_bit_distribution(words, biased)


def test_ring32_expanded_words_look_uniform_and_unrelated():
    seed = new_seed()
    layout = [TensorSpec("a", (N_WORDS,), "float32"), TensorSpec("b", (N_WORDS,), "int64")]
    share32 = expand_seed_state_dict(seed, layout, party=1, n_parties=2, ring_bits=32)
    a, b = share32.tensors["a"].data, share32.tensors["b"].data
    assert a.dtype == b.dtype == np.uint32
    assert looks_uniform(a) and looks_uniform(b) and looks_uniform(a ^ b) and looks_uniform(a - b)
    other = expand_seed_state_dict(new_seed(), layout, 1, 2, ring_bits=32).tensors["a"].data
    assert looks_uniform(a ^ other)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring32_seeded_shares_any_n_minus_1_look_uniform_whatever_the_secret(n):
    zeros = {"w": np.zeros(N_WORDS, np.float32)}
    large = {"w": np.full(N_WORDS, largest_encoding(n) / 2.0 ** F * 0.999, np.float32)}
    layout = [TensorSpec("w", (N_WORDS,), "float32")]
    views = []
    for secret in (zeros, large):
        correction, seeds = seeded_share_state_dict(secret, n, own_index=0, ring_bits=32)
        shares = [correction.tensors["w"].data] + [
            expand_seed_state_dict(seed, layout, k, n, ring_bits=32).tensors["w"].data
            for k, seed in enumerate(seeds) if seed is not None]
        for subset in itertools.combinations(range(n), n - 1):
            assert looks_uniform(ring_sum([shares[i] for i in subset])), f"sum of {subset}"
        assert not looks_uniform(ring_sum(shares))  # all n together give it away
        views.append(shares)
    for party in range(n):
        assert same_bit_distribution(views[0][party], views[1][party])


def test_ring32_federated_sum_adds_and_scales_in_the_32_bit_ring():
    n = 3
    rng = np.random.default_rng(7)
    hospitals = [{"w": rng.normal(size=(40, 3)).astype(np.float32),
                  "steps": np.array(rng.integers(1, 1000), dtype=np.int64)} for _ in range(n)]
    counts = [3, 5, 7]
    outboxes = [seeded_share_state_dict(h, n, own_index=j, ring_bits=32)
                for j, h in enumerate(hospitals)]
    layout = layout_of(hospitals[0])
    partials = []
    for j in range(n):  # aggregator j: its own correction, and every other hospital's seed for j
        shares_for_j = [outboxes[j][0] if k == j else
                        expand_seed_state_dict(outboxes[k][1][j], layout, j, n, ring_bits=32)
                        for k in range(n)]
        scaled = [scale_state_dict_shares(s, count) for s, count in zip(shares_for_j, counts)]
        total = scaled[0]
        for other in scaled[1:]:
            total = add_state_dict_shares(total, other)
        partials.append(total)
    for partial in partials:
        assert partial.ring_bits == 32
        assert all(t.data.dtype == np.uint32 for t in partial.tensors.values())
    result = reconstruct_state_dict(partials)
    assert result["steps"] == sum(c * int(h["steps"]) for c, h in zip(counts, hospitals))
    expected = sum(c * h["w"].astype(np.float64) for c, h in zip(counts, hospitals))
    np.testing.assert_allclose(result["w"], expected, rtol=2.0 ** -22,
                               atol=sum(counts) * MAX_ERROR)


def test_shares_of_different_rings_are_never_mixed():
    weights = {"w": np.ones(3, np.float32)}
    c32, seeds = seeded_share_state_dict(weights, 2, 0, ring_bits=32)
    c64, _ = seeded_share_state_dict(weights, 2, 0)
    other64 = expand_seed_state_dict(seeds[1], layout_of(weights), 1, 2)  # the wrong ring
    with pytest.raises(SharingError, match="cannot reconstruct: one share is in the 32-bit ring, "
                                           "another in the 64-bit ring"):
        reconstruct_state_dict([c32, other64])
    with pytest.raises(SharingError, match="cannot add shares: .*32-bit ring.*64-bit ring"):
        add_state_dict_shares(c32, c64)
    with pytest.raises(SharingError, match=r"'w' holds uint32 words, but the share is in the "
                                           r"64-bit ring"):
        SharedStateDict(0, 2, F, {"w": c32.tensors["w"]})
    with pytest.raises(SharingError, match="holds uint64 words, but the share is in the 32-bit"):
        SharedStateDict(0, 2, F, {"w": c64.tensors["w"]}, ring_bits=32)
    for bad in (16, True, "32"):
        with pytest.raises(SharingError, match="ring_bits must be 32 or 64"):
            seeded_share_state_dict(weights, 2, 0, ring_bits=bad)
        with pytest.raises(SharingError, match="ring_bits must be 32 or 64"):
            expand_seed_state_dict(seeds[1], layout_of(weights), 1, 2, ring_bits=bad)
    with pytest.raises(SharingError, match="frac_bits must be an integer from 0 to 30 in the "
                                           "32-bit ring"):
        seeded_share_state_dict(weights, 2, 0, frac_bits=31, ring_bits=32)
    with pytest.raises(SharingError, match="share data must be a uint32 or uint64"):
        ss.SharedTensor((3,), "float32", np.zeros(3, np.int32))
    assert repr(c32) == ("SharedStateDict(party=0, n_parties=2, frac_bits=16, ring_bits=32, "
                         "tensors=1, values=3)")
