"""Shares in transit: the PSSS wire format, X25519 sealed boxes, and authenticated sealing
of seeds and correction shares between federation members (real crypto, no mocks)."""

from __future__ import annotations

import ast
import doctest
import inspect
import json
import os
import stat
import struct

import numpy as np
import pytest

from common import sealing, secret_sharing, wire
from common.errors import SharingError
from common.sealing import (
    RoundContext, generate_keypair, key_from_text, key_to_text, load_private_key, open_and_sum,
    open_correction, open_from, open_sealed, open_seed, open_seeded_and_sum, open_share,
    public_key_from_private, save_private_key, seal, seal_correction, seal_from,
    seal_seed, seal_seeded_shares, seal_shares,
)
from common.secret_sharing import (
    add_state_dict_shares, expand_seed_state_dict, layout_of, new_seed, reconstruct_state_dict,
    scale_state_dict_shares, seeded_share_state_dict, share_state_dict,
)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
            "fc.bias": rng.normal(size=2),
            "bn.num_batches_tracked": np.array(17, dtype=np.int64),
            "empty": np.zeros((0, 3), dtype=np.int32)}


def repack(blob: bytes, edit) -> bytes:
    """Rewrite a blob's JSON header with `edit(header)`, keeping the payload."""
    _, version, length = struct.unpack_from("<4sBI", blob)
    header = json.loads(blob[9:9 + length])
    edit(header)
    text = json.dumps(header).encode()
    return b"PSSS" + bytes([version]) + struct.pack("<I", len(text)) + text + blob[9 + length:]


@pytest.fixture(scope="module")
def party():
    return share_state_dict(weights(), n=3)[1]


@pytest.fixture(scope="module")
def blob(party):
    return wire.dumps(party)


# --- wire format ------------------------------------------------------------------

def test_wire_roundtrip(party, blob):
    assert blob[:5] == b"PSSS\x01"
    assert (9 + struct.unpack_from("<I", blob, 5)[0]) % 8 == 0  # payload 8-byte aligned
    loaded = wire.loads(blob)
    assert (loaded.party, loaded.n_parties, loaded.frac_bits) == (1, 3, 16)
    assert list(loaded.tensors) == list(party.tensors)
    for name, tensor in party.tensors.items():
        got = loaded.tensors[name]
        assert (got.shape, got.dtype) == (tensor.shape, tensor.dtype)
        assert np.array_equal(got.data, tensor.data) and got.data.flags.writeable
    assert wire.loads(bytearray(blob)).tensors.keys() == party.tensors.keys()


def test_wire_roundtrip_of_a_uint64_bundle():
    arrays = {"a": np.arange(6, dtype=np.uint64).reshape(2, 3),
              "scalar": np.array(2 ** 64 - 1, dtype=np.uint64), "none": np.zeros(0, np.uint64)}
    loaded = wire.loads_arrays(wire.dumps_arrays(arrays))
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].shape == array.shape and np.array_equal(loaded[name], array)
    with pytest.raises(SharingError, match="uint64"):
        wire.dumps_arrays({"f": np.zeros(2)})
    with pytest.raises(SharingError, match="holds 'arrays', expected 'shares'"):
        wire.loads(wire.dumps_arrays(arrays))


def test_every_truncation_and_any_trailing_bytes_refused(blob):
    for cut in range(len(blob)):
        with pytest.raises(SharingError, match="truncated|not valid JSON"):
            wire.loads(blob[:cut])
    for extra in (b"\x00", bytes(8)):
        with pytest.raises(SharingError, match="trailing bytes"):
            wire.loads(blob + extra)


def test_bad_magic_and_unknown_version_refused(blob):
    with pytest.raises(SharingError, match="bad magic"):
        wire.loads(b"PSSX" + blob[4:])
    for version in (0, 2, 255):
        with pytest.raises(SharingError, match=f"unsupported share data version {version}"):
            wire.loads(blob[:4] + bytes([version]) + blob[5:])
    with pytest.raises(SharingError, match="must be bytes"):
        wire.loads("PSSS")


def first_tensor(key, value):
    def edit(header):
        header["tensors"][0][key] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (first_tensor("shape", [4, 1, 3, 4]), "truncated: payload"),   # header claims more
    (first_tensor("shape", [4, 1, 3, 2]), "trailing bytes"),       # header claims less
    (first_tensor("shape", [-4, 1, 3, 3]), "invalid shape"),
    (first_tensor("shape", [4.0, 1, 3, 3]), "invalid shape"),
    (first_tensor("shape", "36"), "invalid shape"),
    (first_tensor("dtype", "object"), "dtype 'object'"),
    (first_tensor("dtype", "float16"), "dtype 'float16'"),
    (first_tensor("name", 7), "tensor name"),
    (first_tensor("extra", 1), "each tensor needs exactly"),
    (lambda h: h["tensors"].append(dict(h["tensors"][0])), "repeated tensor name"),
    (lambda h: h.update(party=3), "party index 3"),
    (lambda h: h.update(party=True), "'party' is not an integer"),
    (lambda h: h.update(frac_bits=99), "frac_bits"),
    (lambda h: h.pop("n_parties"), "header fields"),
    (lambda h: h.update(kind="pickle"), "no known 'kind'"),
])
def test_header_lies_refused(blob, edit, message):
    with pytest.raises(SharingError, match=message):
        wire.loads(repack(blob, edit))


def test_malformed_header_json_refused():
    for bad in (b"{not json", b"[1, 2]", b'{"kind": "shares", "kind": "shares"}', b"\xff\xfe"):
        data = b"PSSS\x01" + struct.pack("<I", len(bad)) + bad
        with pytest.raises(SharingError, match="not valid JSON|no known 'kind'|repeats a key"):
            wire.loads(data)


def test_no_pickle_anywhere():
    """No module that handles shares imports or calls a pickle-like deserialiser."""
    unsafe = ("pickle", "marshal", "shelve", "dill", "joblib", "np.load", "torch.load")
    for module in (wire, sealing, secret_sharing):
        tree = ast.parse(inspect.getsource(module))
        used = {ast.unparse(node) for node in ast.walk(tree)
                if isinstance(node, (ast.Name, ast.Attribute, ast.alias, ast.keyword))}
        imported = {alias.name for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        assert not [u for u in used | imported if any(bad in u for bad in unsafe)], module.__name__


# --- sealed boxes ---------------------------------------------------------------

def test_seal_roundtrip_and_public_key_derivation():
    private, public = generate_keypair()
    assert len(private) == len(public) == 32 and private != public
    assert public_key_from_private(private) == public
    ciphertext = seal(b"hello share", public)
    assert b"hello share" not in ciphertext
    assert open_sealed(ciphertext, private) == b"hello share"
    assert seal(b"hello share", public) != ciphertext  # fresh ephemeral key each time


def test_sealed_share_opens_only_with_its_own_key(party):
    keys = [generate_keypair() for _ in range(3)]
    shares = share_state_dict(weights(), n=3)
    sealed = seal_shares(shares, [public for _, public in keys])
    opened = [open_share(ciphertext, private) for ciphertext, (private, _) in zip(sealed, keys)]
    restored = reconstruct_state_dict(opened)
    for name, value in weights().items():
        assert restored[name].dtype == value.dtype
        assert np.abs(restored[name] - value).max(initial=0) <= 2.0 ** -17
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        with pytest.raises(SharingError, match="^cannot open: sealed to another key or tampered$"):
            open_share(sealed[i], keys[j][0])


def test_tampered_or_truncated_ciphertext_refused():
    private, public = generate_keypair()
    ciphertext = seal(b"x" * 100, public)
    for position in (0, 31, 32, 47, 48, len(ciphertext) - 1):  # ephemeral key, MAC, body
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        with pytest.raises(SharingError, match="cannot open"):
            open_sealed(bytes(tampered), private)
    for cut in (0, 10, 48, len(ciphertext) - 1):
        with pytest.raises(SharingError, match="cannot open"):
            open_sealed(ciphertext[:cut], private)


def test_seal_shares_checks_order_count_and_key_sizes():
    shares = share_state_dict({"w": np.ones(2)}, n=2)
    keys = [generate_keypair()[1] for _ in range(2)]
    with pytest.raises(SharingError, match="2 shares but 1 public keys"):
        seal_shares(shares, keys[:1])
    with pytest.raises(SharingError, match="share 0 is not party 0's share"):
        seal_shares(shares[::-1], keys)
    with pytest.raises(SharingError, match="public key must be 32 raw bytes, got 31"):
        seal(b"x", keys[0][:31])
    with pytest.raises(SharingError, match="private key must be 32 raw bytes"):
        open_sealed(b"x" * 80, "not a key")


def test_federated_average_through_sealed_shares():
    """Three hospitals, three aggregators: the researcher sees only the average."""
    keys = [generate_keypair() for _ in range(3)]
    publics = [key_from_text(key_to_text(public)) for _, public in keys]  # as in a plan config
    updates, counts = [weights(seed) for seed in (1, 2, 3)], [50, 30, 20]
    outboxes = []
    for update, count in zip(updates, counts):
        scaled = {name: value * count for name, value in update.items()}
        outboxes.append(seal_shares(share_state_dict(scaled, n=3), publics))
    partial_sums = [wire.dumps(open_and_sum([outbox[i] for outbox in outboxes], private))
                     for i, (private, _) in enumerate(keys)]
    summed = reconstruct_state_dict([wire.loads(blob) for blob in partial_sums])
    for name in updates[0]:
        expected = sum(c * u[name].astype(np.float64) for c, u in zip(counts, updates)) / 100
        np.testing.assert_allclose(summed[name] / 100, expected, rtol=1e-6, atol=1e-4)
    assert summed["bn.num_batches_tracked"] == 17 * 100
    # Scaling on shares is the same as scaling before sharing.
    doubled = reconstruct_state_dict([scale_state_dict_shares(wire.loads(blob), 2)
                                      for blob in partial_sums])
    assert doubled["bn.num_batches_tracked"] == 2 * 17 * 100


def test_open_and_sum_refuses_what_is_not_one_share_per_hospital():
    keys = [generate_keypair() for _ in range(2)]
    publics = [public for _, public in keys]
    outboxes = [seal_shares(share_state_dict(weights(seed), n=2), publics) for seed in (1, 2)]
    private = keys[0][0]
    with pytest.raises(SharingError, match="no sealed shares"):
        open_and_sum([], private)
    with pytest.raises(SharingError, match="given twice"):
        open_and_sum([outboxes[0][0], outboxes[0][0]], private)  # one hospital counted twice
    with pytest.raises(SharingError, match="must be a list"):
        open_and_sum(outboxes[0][0], private)
    with pytest.raises(SharingError, match="another key"):
        open_and_sum([outboxes[0][0], outboxes[1][1]], private)  # a share for aggregator 1
    own = open_and_sum([outboxes[0][0], outboxes[1][0]], private)
    expected = add_state_dict_shares(open_share(outboxes[0][0], private),
                                     open_share(outboxes[1][0], private))
    assert own.party == 0
    for name, tensor in own.tensors.items():
        np.testing.assert_array_equal(tensor.data, expected.tensors[name].data)


# --- authenticated sealing -----------------------------------------------------------

NOT_FROM = "^cannot open: not sealed by this sender to this key for this round"
ROUND = RoundContext("round-1", n_parties=3)


@pytest.fixture(scope="module")
def members():
    """Three federation members' key pairs, and a researcher's (who knows every public key)."""
    return [generate_keypair() for _ in range(3)], generate_keypair()


def test_seal_from_roundtrip_is_fresh_and_hides_the_payload(members):
    (a, b, _), _ = members
    ciphertext = seal_from(a[0], b[1], b"secret seed bytes", ROUND)
    assert b"secret seed bytes" not in ciphertext
    assert open_from(b[0], a[1], ciphertext, ROUND) == b"secret seed bytes"
    assert seal_from(a[0], b[1], b"secret seed bytes", ROUND) != ciphertext  # fresh salt
    assert open_from(b[0], a[1], seal_from(a[0], b[1], b"", ROUND), ROUND) == b""


def test_only_the_named_sender_recipient_round_and_purpose_open(members):
    (a, b, c), _ = members
    ciphertext = seal_from(a[0], b[1], b"payload", ROUND, purpose="seed")
    assert open_from(b[0], a[1], ciphertext, ROUND, purpose="seed") == b"payload"
    refused = [
        (c[0], a[1], ROUND, "seed"),                                  # another recipient
        (b[0], c[1], ROUND, "seed"),                                  # another claimed sender
        (b[0], a[1], RoundContext("round-2", 3), "seed"),             # another round
        (b[0], a[1], RoundContext("round-1", 4), "seed"),             # another party count
        (b[0], a[1], ROUND, "correction"),                            # another purpose
    ]
    for private, sender, context, purpose in refused:
        with pytest.raises(SharingError, match=NOT_FROM):
            open_from(private, sender, ciphertext, context, purpose=purpose)


def test_a_researcher_who_knows_only_public_keys_cannot_forge(members):
    (a, b, _), researcher = members
    forged = seal_from(researcher[0], b[1], new_seed(), ROUND, purpose="seed")
    with pytest.raises(SharingError, match=NOT_FROM):
        open_seed(b[0], a[1], forged, ROUND)  # claims to come from a
    anonymous = seal(new_seed(), b[1])  # a sealed box anyone could make
    with pytest.raises(SharingError, match=NOT_FROM):
        open_seed(b[0], a[1], anonymous, ROUND)


def test_tampered_or_truncated_authenticated_ciphertext_refused(members):
    (a, b, _), _ = members
    ciphertext = seal_from(a[0], b[1], b"x" * 100, ROUND)
    for position in (0, 3, 4, 35, 36, 100, len(ciphertext) - 1):  # magic, salt, body, tag
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        with pytest.raises(SharingError, match=NOT_FROM):
            open_from(b[0], a[1], bytes(tampered), ROUND)
    for cut in (0, 4, 36, 51, len(ciphertext) - 1):
        with pytest.raises(SharingError, match=NOT_FROM):
            open_from(b[0], a[1], ciphertext[:cut], ROUND)
    with pytest.raises(SharingError, match=NOT_FROM):
        open_from(b[0], a[1], ciphertext + b"\x00", ROUND)


def test_authenticated_sealing_refuses_bad_arguments(members):
    (a, b, _), _ = members
    with pytest.raises(SharingError, match="not a usable X25519 key"):
        seal_from(a[0], bytes(32), b"x", ROUND)  # a low-order point: all-zero shared secret
    with pytest.raises(SharingError, match="public key must be 32 raw bytes, got 31"):
        seal_from(a[0], b[1][:31], b"x", ROUND)
    with pytest.raises(SharingError, match="payload to seal must be bytes"):
        seal_from(a[0], b[1], "text", ROUND)
    with pytest.raises(SharingError, match="context must be a RoundContext"):
        seal_from(a[0], b[1], b"x", "round-1")
    for round_id in ("", 7, "r" * 201):
        with pytest.raises(SharingError, match="round id must be a non-empty string"):
            RoundContext(round_id, 3)
    for n in (0, True, 513, 2.0):
        with pytest.raises(SharingError, match="number of parties"):
            RoundContext("r", n)
    with pytest.raises(SharingError, match="seed must be 32 bytes, got 16"):
        seal_seed(a[0], b[1], bytes(16), ROUND)


def test_sealed_seed_and_correction_open_only_for_their_owner(members):
    (a, b, c), _ = members
    weights_a = weights(1)
    correction, seeds = seeded_share_state_dict(weights_a, 3, own_index=0)
    sealed_seed = seal_seed(a[0], b[1], seeds[1], ROUND)
    assert open_seed(b[0], a[1], sealed_seed, ROUND) == seeds[1]
    with pytest.raises(SharingError, match=NOT_FROM):
        open_seed(c[0], a[1], sealed_seed, ROUND)  # the wrong key learns nothing
    sealed_correction = seal_correction(a[0], correction, ROUND)
    opened = open_correction(a[0], sealed_correction, ROUND)
    for name, tensor in correction.tensors.items():
        assert np.array_equal(opened.tensors[name].data, tensor.data)
    for private in (b[0], c[0]):
        with pytest.raises(SharingError, match=NOT_FROM):
            open_correction(private, sealed_correction, ROUND)
    with pytest.raises(SharingError, match=NOT_FROM):
        open_seed(a[0], a[1], sealed_correction, ROUND)  # a correction is not a seed


def seeded_round(keys, round_id, updates):
    """Every party's (sealed correction, sealed seeds) for one round."""
    publics = [public for _, public in keys]
    return [seal_seeded_shares(update, private, publics, round_id)
            for update, (private, _) in zip(updates, keys)]


def inbox(outboxes, keys, j):
    """What aggregator j is given: (sender public key, seed sealed to j) from each other party."""
    return [(keys[k][1], outboxes[k][1][j]) for k in range(len(keys)) if k != j]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_federated_sum_through_sealed_seeds(n):
    keys = [generate_keypair() for _ in range(n)]
    publics = [public for _, public in keys]
    counts = [10 * (i + 1) for i in range(n)]
    updates = [{name: value * count for name, value in weights(i).items()}
                for i, count in enumerate(counts)]
    outboxes = seeded_round(keys, "round-9", updates)
    assert all(seeds[j] is None for j, (_, seeds) in enumerate(outboxes))
    partials = []
    for j, (private, _) in enumerate(keys):
        partial = open_seeded_and_sum(private, publics, "round-9", outboxes[j][0],
                                      inbox(outboxes, keys, j))
        assert (partial.party, partial.n_parties) == (j, n)
        partials.append(wire.loads(wire.dumps(partial)))  # same form as open_and_sum's
    summed = reconstruct_state_dict(partials)
    for name in updates[0]:
        expected = sum(u[name].astype(np.float64) for u in updates)
        np.testing.assert_allclose(summed[name], expected, rtol=1e-6, atol=n * 2.0 ** -17)
    assert summed["bn.num_batches_tracked"] == 17 * sum(counts)


def test_a_seed_sealed_to_a_party_expands_to_that_partys_share():
    keys = [generate_keypair() for _ in range(3)]
    publics = [public for _, public in keys]
    correction_ct, sealed = seal_seeded_shares(weights(), keys[0][0], publics, "r")
    context = RoundContext("r", 3)
    correction = open_correction(keys[0][0], correction_ct, context)
    shares = [correction] + [
        expand_seed_state_dict(open_seed(keys[k][0], publics[0], sealed[k], context),
                               layout_of(correction), k, 3) for k in (1, 2)]
    restored = reconstruct_state_dict(shares)
    for name, value in weights().items():
        assert np.abs(restored[name] - value).max(initial=0) <= 2.0 ** -17


@pytest.fixture(scope="module")
def three_party_round():
    keys = [generate_keypair() for _ in range(3)]
    updates = [{"w": np.full(4, float(i + 1))} for i in range(3)]
    return keys, [public for _, public in keys], seeded_round(keys, "round-1", updates)


def test_open_seeded_and_sum_refuses_missing_duplicate_foreign_or_own_seeds(three_party_round):
    keys, publics, outboxes = three_party_round
    private, correction, seeds = keys[0][0], outboxes[0][0], inbox(outboxes, keys, 0)
    cases = [
        (seeds[:1], r"no sealed seed from parties \[2\]"),
        ([], r"no sealed seed from parties \[1, 2\]"),
        (seeds + seeds[:1], "party 1 sent more than one seed"),
        ([seeds[0], (publics[1], seeds[1][1])], "party 1 sent more than one seed"),
        (seeds + [(publics[0], outboxes[1][1][2])], "names this aggregator .*party 0"),
        (seeds + [(generate_keypair()[1], seeds[0][1])], "not one of the parties"),
        ([seeds[0][1], seeds[1][1]], r"\(sender public key, sealed seed\) pair"),
        (seeds[0][1], "must be a list"),
    ]
    for sealed_seeds, message in cases:
        with pytest.raises(SharingError, match=message):
            open_seeded_and_sum(private, publics, "round-1", correction, sealed_seeds)


def test_open_seeded_and_sum_refuses_forged_misrouted_and_mislabelled_seeds(three_party_round):
    keys, publics, outboxes = three_party_round
    private, correction, seeds = keys[0][0], outboxes[0][0], inbox(outboxes, keys, 0)
    researcher = generate_keypair()[0]
    forged = seal_seed(researcher, publics[0], new_seed(), RoundContext("round-1", 3))
    swapped = [(publics[1], seeds[1][1]), (publics[2], seeds[0][1])]   # senders mislabelled
    misrouted = [seeds[0], (publics[2], outboxes[2][1][1])]            # a seed meant for party 1
    for sealed_seeds, party in (([seeds[0], (publics[2], forged)], 2), (swapped, 1),
                                (misrouted, 2)):
        with pytest.raises(SharingError, match=f"^seed of party {party}: cannot open: not sealed"):
            open_seeded_and_sum(private, publics, "round-1", correction, sealed_seeds)


def test_open_seeded_and_sum_refuses_replays_from_another_round_or_party(three_party_round):
    keys, publics, outboxes = three_party_round
    private = keys[0][0]
    later = seeded_round(keys, "round-2", [{"w": np.ones(4)}] * 3)
    with pytest.raises(SharingError, match="^seed of party 2: cannot open"):  # replayed seed
        open_seeded_and_sum(private, publics, "round-2", later[0][0],
                            [inbox(later, keys, 0)[0], inbox(outboxes, keys, 0)[1]])
    with pytest.raises(SharingError, match=NOT_FROM):  # replayed correction
        open_seeded_and_sum(private, publics, "round-2", outboxes[0][0], inbox(later, keys, 0))
    with pytest.raises(SharingError, match=NOT_FROM):  # another party's correction
        open_seeded_and_sum(private, publics, "round-1", outboxes[1][0], inbox(outboxes, keys, 0))
    with pytest.raises(SharingError, match=NOT_FROM):  # the same round with fewer parties
        open_seeded_and_sum(private, publics[:2], "round-1", outboxes[0][0],
                            inbox(outboxes, keys, 0)[:1])


def test_open_seeded_and_sum_refuses_bad_party_lists(three_party_round):
    keys, publics, outboxes = three_party_round
    private, correction, seeds = keys[0][0], outboxes[0][0], inbox(outboxes, keys, 0)
    with pytest.raises(SharingError, match="needs at least 2 parties, got 1"):
        open_seeded_and_sum(private, publics[:1], "round-1", correction, [])
    with pytest.raises(SharingError, match="needs at least 2 parties, got 1"):
        seal_seeded_shares({"w": np.ones(2)}, private, publics[:1], "round-1")
    with pytest.raises(SharingError, match="public keys repeat"):
        open_seeded_and_sum(private, publics + publics[1:2], "round-1", correction, seeds)
    with pytest.raises(SharingError, match="not among the parties' keys"):
        open_seeded_and_sum(generate_keypair()[0], publics, "round-1", correction, seeds)
    with pytest.raises(SharingError, match="public key of party 1 must be 32 raw bytes"):
        open_seeded_and_sum(private, [publics[0], b"short", publics[2]], "round-1",
                            correction, seeds)


def test_a_correction_for_the_wrong_party_index_is_refused(three_party_round):
    keys, publics, outboxes = three_party_round
    private = keys[0][0]
    context = RoundContext("round-1", 3)
    correction, _ = seeded_share_state_dict({"w": np.ones(4)}, 3, own_index=1)
    sealed = seal_correction(private, correction, context)  # a buggy party 0 sealed index 1
    with pytest.raises(SharingError, match="correction is party 1's of 3, expected party 0's"):
        open_seeded_and_sum(private, publics, "round-1", sealed, inbox(outboxes, keys, 0))


# --- keys and key files -------------------------------------------------------------

def test_key_text_roundtrip_base64_and_hex():
    _, public = generate_keypair()
    text = key_to_text(public)
    assert len(text) == 44 and key_from_text(text) == public
    assert key_from_text(f"  {public.hex()}\n") == public
    assert key_from_text(public.hex().upper()) == public
    for bad in ("", "zz" * 32, key_to_text(public)[:-4], "AAAA", "ab" * 31, "é" * 44):
        with pytest.raises(SharingError, match="key"):
            key_from_text(bad)
    with pytest.raises(SharingError, match="must be a string"):
        key_from_text(public)


def test_private_key_file_is_0600_even_with_a_permissive_umask(tmp_path):
    private, _ = generate_keypair()
    path = tmp_path / "agg.key"
    old = os.umask(0)
    try:
        save_private_key(path, private)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path) == private
    assert [p.name for p in tmp_path.iterdir()] == ["agg.key"]  # no temporary left behind
    with pytest.raises(SharingError, match="already exists"):
        save_private_key(path, generate_keypair()[0])
    other = generate_keypair()[0]
    save_private_key(path, other, overwrite=True)
    assert load_private_key(path) == other and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_private_key_readable_by_others_refused(tmp_path, mode):
    path = tmp_path / "agg.key"
    save_private_key(path, generate_keypair()[0])
    path.chmod(mode)
    with pytest.raises(SharingError, match=f"readable by others.*0{mode:o}.*chmod 600"):
        load_private_key(path)


def test_bad_private_key_files_refused(tmp_path):
    with pytest.raises(SharingError, match="does not exist"):
        load_private_key(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(SharingError, match="not an X25519 private key \\(31 bytes"):
        load_private_key(short)
    with pytest.raises(SharingError, match="private key must be 32 raw bytes"):
        save_private_key(tmp_path / "k", b"short")
    with pytest.raises(SharingError, match="directory .* does not exist"):
        save_private_key(tmp_path / "no" / "k", generate_keypair()[0])


@pytest.mark.parametrize("module", [wire, sealing])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --- seeded rounds in the 32-bit ring --------------------------------------------------

def auth_overhead(plaintext: bytes) -> int:
    """Bytes a sealed correction adds to its share words, from the two formats: the
    authenticated seal's magic, salt and tag, and wire's prefix and padded header."""
    _, _, header_length = struct.unpack_from("<4sBI", plaintext)
    assert (9 + header_length) % 8 == 0  # the words start 8-byte aligned
    return (len(sealing._AUTH_MAGIC) + sealing._SALT_BYTES + sealing._TAG_BYTES
            + struct.calcsize("<4sBI") + header_length)


def test_a_32_bit_sealed_correction_is_4_bytes_a_value_plus_a_fixed_overhead():
    keys = [generate_keypair() for _ in range(3)]
    publics = [public for _, public in keys]
    update = {"conv.weight": np.ones((64, 1, 7, 7), np.float32), "fc.bias": np.ones(2),
              "bn.num_batches_tracked": np.array(3, dtype=np.int64)}
    values = sum(w.size for w in update.values())
    context = RoundContext("r", 3)
    sizes = {}
    for ring_bits in (32, 64):
        correction, seeds = seal_seeded_shares(update, keys[0][0], publics, "r",
                                               ring_bits=ring_bits)
        plaintext = open_from(keys[0][0], publics[0], correction, context, purpose="correction")
        assert len(correction) == ring_bits // 8 * values + auth_overhead(plaintext)
        assert all(len(s) == len(sealing._AUTH_MAGIC) + sealing._SALT_BYTES + 32
                   + sealing._TAG_BYTES for s in seeds if s is not None)  # seeds: ring-free
        sizes[ring_bits] = len(correction)
    assert sizes[32] < 0.52 * sizes[64]
    assert sizes[32] <= 1.05 * sum(w.nbytes for w in update.values())  # about a float32 model


@pytest.mark.parametrize("n", [2, 3, 5])
def test_federated_sum_through_sealed_seeds_in_the_32_bit_ring(n):
    keys = [generate_keypair() for _ in range(n)]
    publics = [public for _, public in keys]
    counts = [10 * (i + 1) for i in range(n)]
    updates = [{name: value * count for name, value in weights(i).items()}
               for i, count in enumerate(counts)]
    outboxes = [seal_seeded_shares(update, private, publics, "round-32", ring_bits=32)
                for update, (private, _) in zip(updates, keys)]
    partials = []
    for j, (private, _) in enumerate(keys):
        partial = open_seeded_and_sum(private, publics, "round-32", outboxes[j][0],
                                      inbox(outboxes, keys, j))
        assert (partial.party, partial.n_parties, partial.ring_bits) == (j, n, 32)
        assert all(t.data.dtype == np.uint32 for t in partial.tensors.values())
        again = wire.loads(wire.dumps(partial))  # travels in its ring
        assert again.ring_bits == 32
        partials.append(again)
    summed = reconstruct_state_dict(partials)
    for name in updates[0]:
        expected = sum(u[name].astype(np.float64) for u in updates)
        np.testing.assert_allclose(summed[name], expected, rtol=1e-6, atol=n * 2.0 ** -17)
    assert summed["bn.num_batches_tracked"] == 17 * sum(counts)


def test_a_round_whose_parties_mix_rings_does_not_add_up():
    keys = [generate_keypair() for _ in range(3)]
    publics = [public for _, public in keys]
    outboxes = [seal_seeded_shares(weights(i), private, publics, "mixed", ring_bits=bits)
                for i, ((private, _), bits) in enumerate(zip(keys, (32, 32, 64)))]
    partials = [open_seeded_and_sum(private, publics, "mixed", outboxes[j][0],
                                    inbox(outboxes, keys, j)) for j, (private, _) in enumerate(keys)]
    assert [p.ring_bits for p in partials] == [32, 32, 64]  # each keeps its correction's ring
    with pytest.raises(SharingError, match="32-bit ring, another in the 64-bit ring"):
        reconstruct_state_dict(partials)


def test_wire_carries_a_32_bit_share_in_4_bytes_a_value():
    correction, _ = seeded_share_state_dict(weights(), 3, 1, ring_bits=32)
    blob = wire.dumps(correction)
    _, _, header_length = struct.unpack_from("<4sBI", blob)
    values = sum(t.data.size for t in correction.tensors.values())
    assert len(blob) == struct.calcsize("<4sBI") + header_length + 4 * values
    again = wire.loads(blob)
    assert (again.party, again.ring_bits) == (1, 32)
    for name, tensor in correction.tensors.items():
        assert again.tensors[name].data.dtype == np.uint32
        assert np.array_equal(again.tensors[name].data, tensor.data)
    for cut in (len(blob) - 1, len(blob) - 4):
        with pytest.raises(SharingError, match="truncated"):
            wire.loads(blob[:cut])
    with pytest.raises(SharingError):  # a 32-bit payload read as 64-bit words
        wire.loads(repack(blob, lambda header: header.pop("ring_bits")))
    for bad in (16, 64, "32", True):
        with pytest.raises(SharingError):
            wire.loads(repack(blob, lambda header: header.update(ring_bits=bad)))
