"""Versioned binary wire format for shares: no pickle, strictly validated on load.

Layout (all little-endian)::

    b"PSSS" | version (1 byte) | header length (uint32) | header (UTF-8 JSON,
    space-padded so the payload starts 8-byte aligned) | payload (uint64 words, or
    uint32 words for a share of the 32-bit ring)

The header names each array with its shape and dtype, in payload order; a share of
the 32-bit ring also says ``"ring_bits": 32`` (absent means 64, so 64-bit shares are
byte for byte what they always were, and a reader that predates the 32-bit ring
refuses a 32-bit share instead of misreading it). A
``SharedStateDict`` travels with ``dumps``/``loads``; a plain bundle of uint64
arrays with ``dumps_arrays``/``loads_arrays``.

    >>> from common.secret_sharing import share_state_dict
    >>> party0 = share_state_dict({"w": np.ones(3, np.float32)}, n=2)[0]
    >>> loads(dumps(party0)).tensors["w"].shape
    (3,)
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Mapping

import numpy as np

from common.errors import SharingError
from common.secret_sharing import DTYPES, SharedStateDict, SharedTensor

MAGIC = b"PSSS"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_WORD = np.dtype("<u8")
_WORDS = {64: _WORD, 32: np.dtype("<u4")}
_KEYS = {"shares": {"kind", "party", "n_parties", "frac_bits", "tensors"},
         "arrays": {"kind", "tensors"}}
_OPTIONAL = {"shares": {"ring_bits"}, "arrays": set()}
_TENSOR_KEYS = {"name", "shape", "dtype"}


# --- writing -------------------------------------------------------------------

def _pack(header: dict[str, Any], arrays: list[np.ndarray], word: np.dtype = _WORD) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(_PREFIX.size + len(text)) % 8)
    start = _PREFIX.size + len(text)
    out = np.empty(start + word.itemsize * sum(a.size for a in arrays), dtype=np.uint8)
    out[:start] = np.frombuffer(_PREFIX.pack(MAGIC, VERSION, len(text)) + text, dtype=np.uint8)
    words = out[start:].view(word)
    offset = 0
    for array in arrays:
        words[offset:offset + array.size] = array.reshape(-1)
        offset += array.size
    return out.tobytes()


def dumps(shared: SharedStateDict) -> bytes:
    """Serialise one party's ``SharedStateDict``.

        >>> from common.secret_sharing import share_state_dict
        >>> dumps(share_state_dict({"b": np.zeros(1)}, n=2)[1])[:5]
        b'PSSS\\x01'
    """
    if not isinstance(shared, SharedStateDict):
        raise SharingError(f"dumps takes a SharedStateDict, got {type(shared).__name__}")
    header = {"kind": "shares", "party": shared.party, "n_parties": shared.n_parties,
              "frac_bits": shared.frac_bits,
              "tensors": [{"name": name, "shape": list(t.shape), "dtype": t.dtype}
                          for name, t in shared.tensors.items()]}
    if shared.ring_bits != 64:
        header["ring_bits"] = shared.ring_bits
    return _pack(header, [t.data for t in shared.tensors.values()], _WORDS[shared.ring_bits])


def dumps_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named uint64 arrays of any shape.

        >>> loads_arrays(dumps_arrays({"s": np.arange(4, dtype=np.uint64).reshape(2, 2)}))["s"]
        array([[0, 1],
               [2, 3]], dtype=uint64)
    """
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise SharingError(f"array names must be strings, got {name!r}")
        if not isinstance(array, np.ndarray) or array.dtype != np.uint64:
            raise SharingError(f"array {name!r} must be a uint64 numpy array")
    header = {"kind": "arrays",
              "tensors": [{"name": name, "shape": list(a.shape), "dtype": "uint64"}
                          for name, a in arrays.items()]}
    return _pack(header, list(arrays.values()))


# --- reading -------------------------------------------------------------------

def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise SharingError("share data header repeats a key")
    return dict(pairs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SharingError("share data header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("kind") not in _KEYS:
        raise SharingError("share data header has no known 'kind'")
    required, optional = _KEYS[header["kind"]], _OPTIONAL[header["kind"]]
    if not required <= set(header) <= required | optional:
        raise SharingError(f"share data header fields are {sorted(header)}, "
                           f"expected {sorted(required)}")
    for key in ("party", "n_parties", "frac_bits", "ring_bits"):
        if key in header and not _is_int(header[key]):
            raise SharingError(f"share data header field {key!r} is not an integer")
    if "ring_bits" in header and header["ring_bits"] != 32:
        raise SharingError(f"share data header: ring_bits {header['ring_bits']!r} is not 32 "
                           f"(a 64-bit share leaves it out)")
    tensors = header["tensors"]
    if not isinstance(tensors, list):
        raise SharingError("share data header field 'tensors' is not a list")
    names = set()
    for entry in tensors:
        if not isinstance(entry, dict) or set(entry) != _TENSOR_KEYS:
            raise SharingError(f"share data header: each tensor needs exactly "
                               f"{sorted(_TENSOR_KEYS)}")
        name, shape, dtype = entry["name"], entry["shape"], entry["dtype"]
        if not isinstance(name, str) or name in names:
            raise SharingError(f"share data header: bad or repeated tensor name {name!r}")
        names.add(name)
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise SharingError(f"share data header: {name!r} has an invalid shape {shape!r}")
        allowed = DTYPES if header["kind"] == "shares" else ("uint64",)
        if dtype not in allowed:
            raise SharingError(f"share data header: {name!r} has dtype {dtype!r}, "
                               f"not one of {', '.join(allowed)}")
    return header


def _unpack(data: bytes, kind: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SharingError(f"share data must be bytes, got {type(data).__name__}")
    data = memoryview(data).cast("B")
    if len(data) < _PREFIX.size:
        raise SharingError(f"share data truncated: {len(data)} bytes, shorter than its prefix")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SharingError("not PneumoSyft share data (bad magic bytes)")
    if version != VERSION:
        raise SharingError(f"unsupported share data version {version} "
                           f"(this reader knows {VERSION})")
    start = _PREFIX.size + header_length
    if start > len(data):
        raise SharingError("share data truncated inside its header")
    header = _parse_header(bytes(data[_PREFIX.size:start]))
    if header["kind"] != kind:
        raise SharingError(f"share data holds {header['kind']!r}, expected {kind!r}")
    word = _WORDS[header.get("ring_bits", 64)]
    sizes = [math.prod(entry["shape"]) for entry in header["tensors"]]
    expected, found = word.itemsize * sum(sizes), len(data) - start
    if found < expected:
        raise SharingError(f"share data truncated: payload has {found} bytes, "
                           f"header announces {expected}")
    if found > expected:
        raise SharingError(f"share data has {found - expected} trailing bytes after its payload")
    words = np.frombuffer(data, dtype=word, offset=start).astype(f"u{word.itemsize}")  # own
    arrays, offset = [], 0
    for size in sizes:
        arrays.append(words[offset:offset + size])
        offset += size
    return header, arrays


def loads(data: bytes) -> SharedStateDict:
    """Parse and validate what ``dumps`` wrote; any defect raises ``SharingError``."""
    header, arrays = _unpack(data, "shares")
    return SharedStateDict(header["party"], header["n_parties"], header["frac_bits"], {
        entry["name"]: SharedTensor(tuple(entry["shape"]), entry["dtype"], words)
        for entry, words in zip(header["tensors"], arrays)}, header.get("ring_bits", 64))


def loads_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Parse and validate what ``dumps_arrays`` wrote."""
    header, arrays = _unpack(data, "arrays")
    return {entry["name"]: words.reshape(entry["shape"])
            for entry, words in zip(header["tensors"], arrays)}
