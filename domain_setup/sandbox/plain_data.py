"""Plain data: the only format that crosses the sandbox boundary. It cannot carry code.

Layout (integers little-endian)::

    b"PNPD" | version (1 byte) | header length (uint32) | header (UTF-8 JSON)
    | buffers, each starting at the next multiple of 64 bytes, zero padding between

The header is ``{"root": NODE, "buffers": [length, ...]}``. A NODE is JSON null,
true/false, an integer, a finite float, a string, a list, or a tagged object:
``{"$": "dict", "items": {...}}``, ``{"$": "tuple", "items": [...]}``,
``{"$": "float", "v": "nan" | "inf" | "-inf"}``, ``{"$": "bytes", "buf": i}``,
``{"$": "array", "dtype": "<f4", "shape": [...], "buf": i}`` (plus ``"torch": true``
for a torch tensor given as an input). Arrays are raw bytes of bool, int, uint or
float dtypes: nothing is ever unpickled, and decoding validates every field.

    >>> import numpy as np
    >>> value = {"w": np.arange(3, dtype=np.float32), "n": (1, float("inf"))}
    >>> out = decode(encode(value), max_bytes=1 << 20)
    >>> out["w"].tolist(), out["n"]
    ([0.0, 1.0, 2.0], (1, inf))

Decoding is zero-copy: arrays are views of ``data``; pass a ``bytearray`` to get
writable arrays.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from typing import Any, Callable, Union

import numpy as np

from .errors import PlainDataError, ResultNotPlainData

MAGIC = b"PNPD"
VERSION = 1
ALIGN = 64
MAX_DEPTH = 32
MAX_NODES = 1_000_000
MAX_INT_BITS = 1024
_PREFIX = struct.Struct("<4sBI")
_ARRAY_KINDS = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8)}
_ALLOWED_DTYPES = {f"{order}{kind}{size}" for kind, sizes in _ARRAY_KINDS.items()
                   for size in sizes for order in "<>|"}
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_TENSOR_HINT = "return numpy arrays, e.g. tensor.detach().numpy()"

Buffer = Union[bytes, memoryview]


def _pad(offset: int) -> int:
    return -offset % ALIGN


# --- encoding ------------------------------------------------------------------

class _Encoder:
    def __init__(self, *, allow_tensors: bool, max_nodes: int, max_depth: int) -> None:
        self.allow_tensors = allow_tensors
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.nodes = 0
        self.buffers: list[Buffer] = []
        self.torch = sys.modules.get("torch")  # never import torch just to look for tensors

    def refuse(self, path: str, why: str) -> ResultNotPlainData:
        return ResultNotPlainData(f"{path} {why}")

    def node(self, value: Any, path: str, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self.refuse(path, f"is past the {self.max_nodes}-value limit of plain data")
        if depth > self.max_depth:
            raise self.refuse(path, f"is nested deeper than {self.max_depth} levels")
        if value is None or isinstance(value, (bool, np.bool_)):
            return None if value is None else bool(value)
        if isinstance(value, (int, np.integer)):
            return self.integer(int(value), path)
        if isinstance(value, (float, np.floating)):
            return self.real(value, path)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (bytes, bytearray)):
            return {"$": "bytes", "buf": self.buffer(memoryview(value).cast("B"))}
        if isinstance(value, list):
            return [self.node(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        if isinstance(value, tuple):
            return {"$": "tuple", "items": [self.node(item, f"{path}[{i}]", depth + 1)
                                            for i, item in enumerate(value)]}
        if isinstance(value, dict):
            return {"$": "dict", "items": self.mapping(value, path, depth)}
        if isinstance(value, np.ndarray):
            return self.array(value, path)
        if self.torch is not None and isinstance(value, self.torch.Tensor):
            return self.tensor(value, path)
        raise self.refuse(path, f"is a {type(value).__module__}.{type(value).__qualname__}, "
                                f"not plain data (None, bool, int, float, str, bytes, list, "
                                f"tuple, dict with str keys, numpy arrays)")

    def integer(self, value: int, path: str) -> int:
        if value.bit_length() > MAX_INT_BITS:
            raise self.refuse(path, f"is an integer wider than {MAX_INT_BITS} bits")
        return value

    def real(self, value: Any, path: str) -> Any:
        if isinstance(value, np.floating) and value.dtype.itemsize > 8:
            raise self.refuse(path, f"is a {value.dtype} scalar; use float64")
        value = float(value)
        if math.isfinite(value):
            return value
        return {"$": "float", "v": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}

    def mapping(self, value: dict, path: str, depth: int) -> dict[str, Any]:
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise self.refuse(path, f"has a key {key!r} of type {type(key).__name__}; "
                                        f"plain data dicts have str keys")
            items[str(key)] = self.node(item, f"{path}[{key!r}]", depth + 1)
        return items

    def buffer(self, data: Buffer) -> int:
        self.buffers.append(data)
        return len(self.buffers) - 1

    def array(self, value: np.ndarray, path: str, *, torch: bool = False) -> dict[str, Any]:
        if type(value) is not np.ndarray:
            raise self.refuse(path, f"is a {type(value).__qualname__}; use a plain numpy.ndarray")
        dtype = value.dtype
        if dtype.kind not in _ARRAY_KINDS or dtype.itemsize not in _ARRAY_KINDS[dtype.kind]:
            raise self.refuse(path, f"is an array of dtype {dtype}; plain data arrays are "
                                    f"bool, int, uint or float (16/32/64 bit)")
        if not value.flags.c_contiguous:
            value = value.copy(order="C")
        node = {"$": "array", "dtype": dtype.str, "shape": list(value.shape),
                "buf": self.buffer(memoryview(value.reshape(-1).view(np.uint8)))}
        if torch:
            node["torch"] = True
        return node

    def tensor(self, value: Any, path: str) -> dict[str, Any]:
        if not self.allow_tensors:
            raise self.refuse(path, f"is a torch tensor; {_TENSOR_HINT}")
        try:
            array = value.detach().cpu().resolve_conj().resolve_neg().numpy()
        except (RuntimeError, TypeError) as exc:
            raise self.refuse(path, f"is a torch tensor numpy cannot hold ({exc})") from None
        return self.array(array, path, torch=True)


def encode_parts(value: Any, *, allow_tensors: bool = False, name: str = "result",
                 max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> list[Buffer]:
    """Encode ``value`` as a list of byte chunks (no copy of array data).

    Writing the chunks in order gives the same bytes as ``encode``. ``name`` is used in
    error messages ("result['w'] is a torch tensor; ..."). Torch tensors are only
    accepted with ``allow_tensors`` (inputs of a run); raises ``ResultNotPlainData``.
    """
    encoder = _Encoder(allow_tensors=allow_tensors, max_nodes=max_nodes, max_depth=max_depth)
    root = encoder.node(value, name, 0)
    header = json.dumps({"root": root, "buffers": [len(b) for b in encoder.buffers]},
                        separators=(",", ":"), allow_nan=False).encode("utf-8")
    parts: list[Buffer] = [_PREFIX.pack(MAGIC, VERSION, len(header)), header]
    offset = _PREFIX.size + len(header)
    for buffer in encoder.buffers:
        parts.append(bytes(_pad(offset)))
        parts.append(buffer)
        offset += _pad(offset) + len(buffer)
    return parts


def encode(value: Any, **options: Any) -> bytes:
    """Encode ``value`` as plain-data bytes; see ``encode_parts`` for the options."""
    return b"".join(encode_parts(value, **options))


# --- decoding ------------------------------------------------------------------

def _malformed(why: str) -> PlainDataError:
    return PlainDataError(f"malformed plain data: {why}")


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_BITS // 3 + 2:
        raise _malformed(f"integer with {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _malformed(f"float {text} out of range")
    return value


def _reject_constant(text: str) -> None:
    raise _malformed(f"JSON constant {text}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _malformed("duplicate key in a JSON object")
    return result


class _Decoder:
    def __init__(self, data: memoryview, buffers: list[tuple[int, int]], *,
                 allow_tensors: bool, max_nodes: int, max_depth: int) -> None:
        self.data = data
        self.buffers = buffers
        self.used: set[int] = set()
        self.allow_tensors = allow_tensors
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.nodes = 0

    def node(self, node: Any, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise _malformed(f"more than {self.max_nodes} values")
        if depth > self.max_depth:
            raise _malformed(f"nested deeper than {self.max_depth} levels")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.node(item, depth + 1) for item in node]
        if not isinstance(node, dict) or not isinstance(node.get("$"), str):
            raise _malformed("a JSON object without a '$' tag")
        handler = self.tags.get(node["$"])
        if handler is None:
            raise _malformed(f"unknown tag {node['$']!r}")
        return handler(self, node, depth)

    def fields(self, node: dict, *names: str, optional: tuple[str, ...] = ()) -> list[Any]:
        keys = set(node) - {"$"}
        if not set(names) <= keys <= set(names) | set(optional):
            raise _malformed(f"{node['$']} node with fields {sorted(keys)}")
        return [node[name] for name in names]

    def items(self, node: dict, kind: type) -> Any:
        (items,) = self.fields(node, "items")
        if not isinstance(items, kind):
            raise _malformed(f"{node['$']} items are not a JSON {kind.__name__}")
        return items

    def tuple_(self, node: dict, depth: int) -> tuple:
        return tuple(self.node(item, depth + 1) for item in self.items(node, list))

    def dict_(self, node: dict, depth: int) -> dict:
        return {key: self.node(item, depth + 1) for key, item in self.items(node, dict).items()}

    def float_(self, node: dict, depth: int) -> float:
        (name,) = self.fields(node, "v")
        if name not in _NONFINITE:
            raise _malformed(f"float {name!r}")
        return _NONFINITE[name]

    def buffer(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise _malformed(f"buffer reference {index!r}")
        if index in self.used:
            raise _malformed(f"buffer {index} used twice")
        self.used.add(index)
        start, length = self.buffers[index]
        return self.data[start:start + length]

    def bytes_(self, node: dict, depth: int) -> bytes:
        (index,) = self.fields(node, "buf")
        return bytes(self.buffer(index))

    def array(self, node: dict, depth: int) -> Any:
        dtype_name, shape, index = self.fields(node, "dtype", "shape", "buf", optional=("torch",))
        if dtype_name not in _ALLOWED_DTYPES:
            raise _malformed(f"array dtype {dtype_name!r}")
        dtype = np.dtype(dtype_name)
        if (not isinstance(shape, list) or len(shape) > 32
                or any(type(n) is not int or n < 0 for n in shape)):
            raise _malformed(f"array shape {shape!r}")
        data = self.buffer(index)
        if math.prod(shape) * dtype.itemsize != len(data):
            raise _malformed(f"array of shape {shape} and dtype {dtype} in {len(data)} bytes")
        try:
            array = (np.frombuffer(data, dtype=dtype).reshape(shape) if len(data)
                     else np.empty(shape, dtype))
        except ValueError as exc:
            raise _malformed(f"array of shape {shape} ({exc})") from None
        if dtype.kind == "b" and len(data) and np.frombuffer(data, np.uint8).max() > 1:
            raise _malformed("bool array with values other than 0 and 1")
        if "torch" in node:
            return self.tensor(node["torch"], array)
        return array

    def tensor(self, marker: Any, array: np.ndarray) -> Any:
        if marker is not True:
            raise _malformed(f"torch marker {marker!r}")
        if not self.allow_tensors:
            raise _malformed(f"a torch tensor where only numpy arrays are allowed; {_TENSOR_HINT}")
        import torch  # only inside the sandbox, where inputs carry tensors

        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array)

    tags: dict[str, Callable[..., Any]] = {
        "tuple": tuple_, "dict": dict_, "float": float_, "bytes": bytes_, "array": array}


def _header(data: memoryview) -> tuple[dict[str, Any], int]:
    if len(data) < _PREFIX.size:
        raise _malformed(f"truncated: {len(data)} bytes")
    magic, version, length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _malformed(f"bad magic {bytes(magic)!r}")
    if version != VERSION:
        raise _malformed(f"version {version}, expected {VERSION}")
    end = _PREFIX.size + length
    if end > len(data):
        raise _malformed(f"truncated: header of {length} bytes in {len(data)} bytes")
    try:
        header = json.loads(bytes(data[_PREFIX.size:end]).decode("utf-8"),
                            parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant,
                            object_pairs_hook=_unique_keys)
    except PlainDataError:
        raise
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"root", "buffers"}:
        raise _malformed("header must have exactly 'root' and 'buffers'")
    return header, end


def _layout(lengths: Any, data: memoryview, offset: int) -> list[tuple[int, int]]:
    if not isinstance(lengths, list) or any(type(n) is not int or n < 0 for n in lengths):
        raise _malformed("buffer lengths must be non-negative integers")
    layout = []
    for length in lengths:
        padding = data[offset:offset + _pad(offset)]
        if len(padding) != _pad(offset) or any(padding):
            raise _malformed("truncated or non-zero padding")
        offset += _pad(offset)
        layout.append((offset, length))
        offset += length
    if offset != len(data):
        raise _malformed(f"truncated: expected {offset} bytes, got {len(data)}" if offset > len(data)
                         else f"{len(data) - offset} trailing bytes")
    return layout


def decode(data: Union[bytes, bytearray, memoryview], *, max_bytes: int,
           allow_tensors: bool = False, max_nodes: int = MAX_NODES,
           max_depth: int = MAX_DEPTH) -> Any:
    """Decode plain-data bytes; every malformed, truncated or oversized input raises
    ``PlainDataError``. Tensor-marked arrays become torch tensors only with
    ``allow_tensors`` (inside the sandbox); otherwise they are refused.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlainDataError(f"plain data must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) > max_bytes:
        raise PlainDataError(f"plain data of {len(view)} bytes exceeds the {max_bytes}-byte limit")
    header, offset = _header(view)
    decoder = _Decoder(view, _layout(header["buffers"], view, offset), allow_tensors=allow_tensors,
                       max_nodes=max_nodes, max_depth=max_depth)
    try:
        value = decoder.node(header["root"], 0)
    except RecursionError:
        raise _malformed("nested too deeply") from None
    if len(decoder.used) != len(decoder.buffers):
        raise _malformed("unreferenced buffers")
    return value
