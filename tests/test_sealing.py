"""Shares in transit: the PSSS wire format and X25519 sealed boxes (real crypto, no mocks)."""

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
    generate_keypair, key_from_text, key_to_text, load_private_key, open_and_sum, open_sealed,
    open_share, public_key_from_private, save_private_key, seal, seal_shares,
)
from common.secret_sharing import (
    add_state_dict_shares, reconstruct_state_dict, scale_state_dict_shares, share_state_dict,
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
