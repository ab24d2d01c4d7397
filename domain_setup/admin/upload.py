"""Upload X-rays as a syft dataset: private train and held-out test assets, synthetic mocks.

The dataset has four assets: ``train_images``, ``train_labels``, ``test_images`` and
``test_labels``. Their mocks come from the synthetic generator with the same shape,
dtype and class balance; they are never derived from patient pixels. The test split
stays in the domain: researchers evaluate on it through an approved request.

Images stay uint8 end to end (training code scales them by 1/255). Each array goes to
syft's blob store as the bytes syft itself would store, streamed to the domain's blob
route (`domain_setup.server.blob_upload`) instead of inside one signed syft message;
entries, twins and the dataset are still created with syft's own calls (`send_dataset`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import syft_compat
from common.errors import DataError, DomainError
from datasets.xray import XRaySplit, generate, load_source, make_card
from datasets.xray.card import card_markdown

ASSET_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
MOCK_SEED_OFFSET = 10_007


@dataclass
class UploadReport:
    """What an upload did: dataset name, card, byte count and seconds taken."""

    name: str
    card: dict
    n_bytes: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.n_bytes / 1e6 / max(self.seconds, 1e-9)


def mock_like(split: XRaySplit, seed: int) -> XRaySplit:
    """Synthetic images and labels with the shape, dtype and class balance of `split`."""
    n, _, height, _ = split.images.shape
    fraction = float(split.labels.mean()) if n else 0.0
    images, labels = generate(n, size=height, pneumonia_fraction=fraction, seed=seed)
    return XRaySplit(images=images.astype(split.images.dtype), labels=labels.astype(split.labels.dtype))


def validate_dataset_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,47}", name or ""):
        raise DataError(f"invalid dataset name {name!r}: use 1-48 of a-z, 0-9, '_' and '-'")
    return name


def parse_partition(text: str | None) -> tuple[int, int] | None:
    """'2/3' -> (1, 3): this hospital holds the 2nd of 3 partitions (1-based on the CLI)."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise DataError(f"invalid --partition {text!r}: expected I/K, e.g. 2/3") from None
    if not 1 <= index <= count:
        raise DataError(f"invalid --partition {text!r}: need 1 <= I <= K")
    return index - 1, count


def take_partition(split: XRaySplit, partition: tuple[int, int], label_skew: float | None,
                   seed: int) -> XRaySplit:
    """This hospital's share of `split`: IID, or Dirichlet label-skewed with alpha `label_skew`."""
    from datasets.xray.partition import iid
    from datasets.xray.partition import label_skew as skewed

    index, count = partition
    parts = (skewed(split.labels, count, alpha=label_skew, seed=seed) if label_skew
             else iid(split.labels, count, seed=seed))
    chosen = np.sort(parts[index])
    return XRaySplit(images=split.images[chosen], labels=split.labels[chosen])


def build_dataset(name: str, spec: str, *, size: int, n: int, seed: int,
                  partition: tuple[int, int] | None = None, label_skew: float | None = None):
    """Load and validate the source, then build the `sy.Dataset` (nothing is sent yet)."""
    import syft as sy

    data = load_source(spec, size=size, n=n, seed=seed)
    train = data.train
    if data.val is not None:  # the hospital's validation images join training
        train = XRaySplit(images=np.concatenate([train.images, data.val.images]),
                          labels=np.concatenate([train.labels, data.val.labels]))
    if partition is not None:
        train = take_partition(train, partition, label_skew, seed)
        data.test = take_partition(data.test, partition, None, seed)
        data.train, data.val = train, None
    card = make_card(data, name)
    if partition is not None:
        card["partition"] = f"{partition[0] + 1}/{partition[1]}" + (
            f", label skew alpha={label_skew}" if label_skew else ", IID")
    mock_train = mock_like(train, seed + MOCK_SEED_OFFSET)
    mock_test = mock_like(data.test, seed + 2 * MOCK_SEED_OFFSET)
    dataset = sy.Dataset(name=name, summary=card.get("summary", name),
                         description=card_markdown(card))
    pairs = {"train_images": (train.images, mock_train.images),
             "train_labels": (train.labels, mock_train.labels),
             "test_images": (data.test.images, mock_test.images),
             "test_labels": (data.test.labels, mock_test.labels)}
    for asset_name, (private, mock) in pairs.items():
        dataset.add_asset(sy.Asset(name=asset_name, data=private, mock=mock,
                                   description=f"{asset_name} ({private.dtype}, {private.shape})"))
    n_bytes = sum(private.nbytes + mock.nbytes for private, mock in pairs.values())
    return dataset, card, n_bytes


def find_dataset(client, name: str):
    for dataset in client.datasets.get_all():
        if dataset.name == name:
            return dataset
    return None


# --------------------------------------------------------------------------- syft blob bytes
#
# A syft blob of a numpy array is `syft.serde._serialize(array, to_bytes=True)`: four
# nested Cap'n Proto messages (the array, a tuple, its items, the bytes item) around an
# Arrow IPC tensor compressed with zstd. syft builds each level in memory and copies the
# payload into it, eight copies and a zstd pass: about 1 s per 65 MB here. `BlobBytes`
# writes the same messages with their headers computed ahead, around the Arrow tensor in
# a zstd frame of stored (raw) blocks: the payload is never copied again, and syft's own
# deserialiser reads it back as the same array (tests/test_upload.py checks that).

_CAPNP_DATA_CHUNK = int(5.12e8)  # syft's List(Data) chunk (syft.serde.recursive.chunk_bytes)
_CAPNP_MAX_WORDS = (1 << 29) - 1  # pointer offsets are 30-bit signed word counts
_ZSTD_BLOCK = 1 << 17  # the largest zstd block


class BlobBytes:
    """A blob as a list of buffers (bytes or memoryviews) and its total length."""

    def __init__(self, pieces: list, length: int):
        self.pieces, self.length = pieces, length

    @classmethod
    def of(cls, data: bytes | memoryview) -> "BlobBytes":
        return cls([data], len(data))

    def tobytes(self) -> bytes:
        return b"".join(bytes(piece) for piece in self.pieces)


def _words(n_bytes: int) -> int:
    return (n_bytes + 7) // 8


def _pointer(kind: int, offset: int, a: int, b: int) -> bytes:
    """A Cap'n Proto pointer: struct (kind 0: data words a, pointer words b) or list
    (kind 1: element size code a, element count b); `offset` in words, from its end."""
    if not 0 <= offset <= _CAPNP_MAX_WORDS:
        raise OverflowError("blob too large for one Cap'n Proto segment")
    if kind == 0:
        return (offset << 2 | a << 32 | b << 48).to_bytes(8, "little")
    return (1 | offset << 2 | a << 32 | b << 35).to_bytes(8, "little")


_BYTE_LIST, _POINTER_LIST = 2, 6


def _chunks(length: int) -> list[int]:
    """syft's split of a Data field into List(Data) elements."""
    count = length // _CAPNP_DATA_CHUNK + 1
    return [min(_CAPNP_DATA_CHUNK, length - i * _CAPNP_DATA_CHUNK) for i in range(count)]


def _message(head: bytearray, head_words: int, tail: BlobBytes | None,
             tail_words: int) -> BlobBytes:
    """Segment table, `head` (words already laid out), then `tail` padded to a word."""
    table = (0).to_bytes(4, "little") + (head_words + tail_words).to_bytes(4, "little")
    pieces = [table + bytes(head)]
    length = 8 + 8 * head_words
    if tail is not None:
        pieces += tail.pieces
        pad = 8 * tail_words - tail.length
        if pad:
            pieces.append(b"\0" * pad)
        length += 8 * tail_words
    return BlobBytes(pieces, length)


def _data_pointers(first_pointer_word: int, first_data_word: int, lengths: list[int]) -> bytes:
    out, data_word = [], first_data_word
    for j, length in enumerate(lengths):
        out.append(_pointer(1, data_word - (first_pointer_word + j + 1), _BYTE_LIST, length))
        data_word += _words(length)
    return b"".join(out)


def _recursive_serde(obj: Any, blob: BlobBytes) -> BlobBytes:
    """syft's RecursiveSerde message of a non-recursive `obj` whose blob is `blob`
    (struct: data 1 word = version, pointers fieldsName, fieldsData, nonrecursiveBlob,
    canonicalName)."""
    from syft.serde.recursive import SyftObjectRegistry

    name, version = SyftObjectRegistry.get_canonical_name_version(obj)
    text = name.encode() + b"\0"
    lengths = _chunks(blob.length)
    text_word, list_word = 6, 6 + _words(len(text))
    data_word = list_word + len(lengths)
    head = bytearray()
    head += _pointer(0, 0, 1, 4)                                     # w0: root -> w1
    head += int(version).to_bytes(4, "little", signed=True) + b"\0" * 4  # w1: version
    head += b"\0" * 16                                               # w2-3: no fields
    head += _pointer(1, list_word - 5, _POINTER_LIST, len(lengths))  # w4: blob chunks
    head += _pointer(1, text_word - 6, _BYTE_LIST, len(text))        # w5: canonicalName
    head += text + b"\0" * (8 * _words(len(text)) - len(text))
    head += _data_pointers(list_word, data_word, lengths)
    return _message(head, data_word, blob, _words(blob.length))


def _iterable(values: list[BlobBytes], big: int) -> BlobBytes:
    """syft's Iterable message (struct: pointer values, a List(List(Data))) of `values`,
    in that order; the data of ``values[big]`` is laid out last, the others (bytes, small)
    before it."""
    chunked = [_chunks(v.length) for v in values]
    lists_word = 2 + len(values)
    data_word = lists_word + sum(len(c) for c in chunked)
    order = [i for i in range(len(values)) if i != big] + [big]
    placed, at = {}, data_word
    for i in order:
        placed[i] = at
        at += sum(_words(n) for n in chunked[i])
    head = bytearray(_pointer(0, 0, 0, 1))                           # w0: root -> w1
    head += _pointer(1, 0, _POINTER_LIST, len(values))               # w1: values -> w2
    inner_word = lists_word
    for i, lengths in enumerate(chunked):                            # w2..: one list each
        head += _pointer(1, inner_word - (2 + i + 1), _POINTER_LIST, len(lengths))
        inner_word += len(lengths)
    inner_word = lists_word
    for i, lengths in enumerate(chunked):
        head += _data_pointers(inner_word, placed[i], lengths)
        inner_word += len(lengths)
    for i in order[:-1]:
        item = values[i].tobytes()
        head += item + b"\0" * (8 * _words(len(item)) - len(item))
    return _message(head, placed[big], values[big], _words(values[big].length))


def _zstd_stored(buffer: memoryview) -> BlobBytes:
    """A zstd frame (RFC 8878) of raw blocks holding `buffer` uncompressed."""
    size = len(buffer)
    pieces = [b"\x28\xb5\x2f\xfd\xe0" + size.to_bytes(8, "little")]  # single segment, 8-byte FCS
    if size == 0:
        pieces.append((1).to_bytes(3, "little"))
    for start in range(0, size, _ZSTD_BLOCK):
        block = buffer[start:start + _ZSTD_BLOCK]
        last = int(start + _ZSTD_BLOCK >= size)
        pieces += [(last | len(block) << 3).to_bytes(3, "little"), block]
    length = 13 + 3 * max(1, -(-size // _ZSTD_BLOCK)) + size
    return BlobBytes(pieces, length)


def blob_bytes(data: Any) -> BlobBytes:
    """What syft stores in its blob store for `data`, readable by its deserialiser.

    numpy arrays of numbers are framed without copying their payload again; anything
    else (and a codec flag this framing does not know) goes through syft's serialiser."""
    import pyarrow as pa
    from syft.serde.serialize import _serialize
    from syft.util.experimental_flags import ApacheArrowCompression, flags

    codec = flags.APACHE_ARROW_COMPRESSION
    if (not isinstance(data, np.ndarray) or data.ndim == 0 or data.dtype.hasobject
            or data.dtype.kind in "USV"
            or codec not in (ApacheArrowCompression.ZSTD, ApacheArrowCompression.NONE)):
        return BlobBytes.of(_serialize(data, to_bytes=True))
    sink = pa.BufferOutputStream()
    pa.ipc.write_tensor(pa.Tensor.from_numpy(np.ascontiguousarray(data)), sink)
    tensor = sink.getvalue()  # Arrow IPC: a small header and the array's bytes
    body = memoryview(tensor)
    payload = _zstd_stored(body) if codec is ApacheArrowCompression.ZSTD else BlobBytes.of(body)
    try:
        # the tuple (payload bytes, uncompressed size, dtype name) of syft.serde.arrow
        values = _iterable([_recursive_serde(b"", payload),
                            BlobBytes.of(_serialize(tensor.size, to_bytes=True)),
                            BlobBytes.of(_serialize(data.dtype.name, to_bytes=True))], big=0)
        message = _recursive_serde(data, _recursive_serde((), values))
    except OverflowError:
        return BlobBytes.of(_serialize(data, to_bytes=True))
    message.keep_alive = tensor  # type: ignore[attr-defined]  (the memoryviews' owner)
    return message


# --------------------------------------------------------------------------- sending
SEND_BUFFER_BYTES = 4 << 20
BLOB_TIMEOUT_SECONDS = 600


def stream_blob(session, entry_id: str, blob: BlobBytes, progress: Any) -> None:
    """PUT the blob's bytes to the domain's blob route (domain_setup.server.blob_upload),
    gathered into large sends; `progress` is a tqdm bar (updated with bytes sent)."""
    import json

    from common.connection import auth_headers
    from common.tls import open_connection

    connection = None
    try:
        connection = open_connection(session.url, BLOB_TIMEOUT_SECONDS)  # verified as requests
        connection.putrequest("PUT", f"/pneumosyft/blob/{entry_id}")
        for key, value in {**auth_headers(session.token), "Content-Length": str(blob.length),
                           "Content-Type": "application/octet-stream"}.items():
            connection.putheader(key, value)
        connection.endheaders()
        buffer = memoryview(bytearray(SEND_BUFFER_BYTES))
        filled = 0
        for piece in blob.pieces:
            piece = memoryview(piece).cast("B")
            if len(piece) >= SEND_BUFFER_BYTES // 4:  # big: send it as it is
                if filled:
                    connection.send(buffer[:filled])
                    progress.update(filled)
                    filled = 0
                connection.send(piece)
                progress.update(len(piece))
                continue
            if filled + len(piece) > SEND_BUFFER_BYTES:
                connection.send(buffer[:filled])
                progress.update(filled)
                filled = 0
            buffer[filled:filled + len(piece)] = piece
            filled += len(piece)
        if filled:
            connection.send(buffer[:filled])
            progress.update(filled)
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise DomainError(f"cannot send the data to the domain at {session.url}: {exc}") from None
    finally:
        if connection is not None:
            connection.close()
    if response.status != 200:
        try:
            reason = json.loads(body)["error"]
        except Exception:
            reason = f"HTTP {response.status}"
        raise DomainError(f"the domain refused the data: {reason}")


def _store_in_blob(session, client, action_object: Any, data: Any, progress: Any) -> Any:
    """What syft's ``ActionObject._save_to_blob_storage`` does, with the bytes streamed:
    allocate the entry with syft (``blob_storage.allocate``), send the blob, then record
    type, reprs and entry id on the object and drop its cached data. Returns the entry id."""
    from syft.types.blob_storage import CreateBlobStorageEntry

    blob = blob_bytes(data)
    entry = CreateBlobStorageEntry.from_obj(data, file_size=blob.length)
    deposit = client.api.services.blob_storage.allocate(entry)
    if syft_compat.is_syft_error(deposit):
        raise DomainError(f"upload refused: {syft_compat.error_text(deposit)}")
    entry_id = deposit.blob_storage_entry_id
    stream_blob(session, entry_id.no_dash, blob, progress)
    action_object.syft_blob_storage_entry_id = entry_id
    action_object.syft_action_data_type = type(data)
    action_object._set_reprs(data)
    action_object.syft_has_bool_attr = hasattr(data, "__bool__")
    action_object.syft_action_data_cache = action_object.as_empty_data()
    return entry_id


def _cleanup(client, entry_ids: list, action_ids: list) -> None:
    """Best effort: remove what a failed upload stored (no dataset refers to it)."""
    for uid in action_ids:
        with contextlib.suppress(Exception):
            client.api.services.action.delete(uid=uid)
    for uid in entry_ids:
        with contextlib.suppress(Exception):
            client.api.services.blob_storage.delete(uid=uid)


def send_dataset(session, client, dataset: Any, *, show_progress: bool = True,
                 replace_id: Any = None) -> Any:
    """``client.upload_dataset(dataset)`` with the blobs streamed: each asset becomes a
    syft TwinObject (private and mock in syft's blob store, stored with ``action.set``),
    then the dataset is added holding only the assets' ids and shapes (syft's own
    upload sends every array a second time inside ``dataset.add``). `replace_id`: the
    dataset deleted once everything new is stored. A failure removes what was stored."""
    from syft.client.datasite_client import add_default_uploader, get_mb_size
    from syft.service.action.action_object import ActionObject
    from syft.types.twin_object import TwinObject
    from tqdm.auto import tqdm

    user = client.users.get_current_user()

    total = sum(blob_size_hint(a.data) + blob_size_hint(a.mock) for a in dataset.asset_list)
    entry_ids: list = []
    action_ids: list = []
    progress = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=f"Uploading {dataset.name}", disable=not show_progress, leave=False)
    try:
        dataset = add_default_uploader(user, dataset)
        dataset.check()
        mb_size = 0.0
        for i, asset in enumerate(dataset.asset_list):
            asset = dataset.asset_list[i] = add_default_uploader(user, asset)
            twin = TwinObject(private_obj=ActionObject.from_obj(asset.data),
                              mock_obj=ActionObject.from_obj(asset.mock),
                              syft_server_location=client.id,
                              syft_client_verify_key=client.verify_key)
            for part, data in ((twin.mock_obj, asset.mock), (twin.private_obj, asset.data)):
                part._set_obj_location_(client.id, client.verify_key)
                entry_ids.append(_store_in_blob(session, client, part, data, progress))
            result = client.api.services.action.set(twin)
            if syft_compat.is_syft_error(result):
                raise DomainError(f"upload refused: {syft_compat.error_text(result)}")
            action_ids.append(twin.id)
            mb_size += get_mb_size(asset.data)
            shape = getattr(asset.mock, "shape", None)
            dataset.asset_list[i] = asset.model_copy(update={
                # syft's dataset validator wants a mock: an empty one, the real one is stored
                "data": None, "mock": ActionObject.empty(), "action_id": twin.id,
                "server_uid": client.id,
                "shape": tuple(shape) if shape is not None else None})
        dataset.mb_size = mb_size
        if replace_id is not None:
            client.api.services.dataset.delete(uid=replace_id)
        result = client.api.services.dataset.add(dataset=dataset)
        if syft_compat.is_syft_error(result):
            raise DomainError(f"upload refused: {syft_compat.error_text(result)}")
    except BaseException:
        progress.close()
        _cleanup(client, entry_ids, action_ids)
        raise
    progress.close()
    return result


def blob_size_hint(data: Any) -> int:
    """Bytes the progress bar expects for `data` (its blob is a few hundred bytes more)."""
    return int(getattr(data, "nbytes", 0) or 0)


def upload(session, spec: str, name: str, *, size: int = 64, n: int = 3000, seed: int = 0,
           replace: bool = False, show_progress: bool = True,
           partition: tuple[int, int] | None = None,
           label_skew: float | None = None) -> UploadReport:
    """Upload `spec` as dataset `name`: an existing name is refused before anything is
    loaded, then the source is loaded and validated, then sent (blobs streamed to syft's
    blob store, see `send_dataset`); a progress bar shows unless `show_progress` is False."""
    validate_dataset_name(name)
    client = session.client()
    existing = find_dataset(client, name)
    if existing is not None and not replace:
        raise DomainError(f"dataset {name!r} already exists; use --replace to replace it")
    dataset, card, n_bytes = build_dataset(name, spec, size=size, n=n, seed=seed,
                                           partition=partition, label_skew=label_skew)
    started = time.perf_counter()
    with syft_compat.muted():
        send_dataset(session, client, dataset, show_progress=show_progress,
                     replace_id=existing.id if existing is not None else None)
    seconds = time.perf_counter() - started
    session.audit("dataset.upload", target=name, source=spec.split(":", 1)[0],
                  replaced=str(existing is not None), bytes=str(n_bytes))
    return UploadReport(name=name, card=card, n_bytes=n_bytes, seconds=seconds)
