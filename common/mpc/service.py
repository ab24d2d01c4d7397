"""An inference service as a hospital approves it, and what travels to serve a query.

A model holder offers a model to two computing hospitals of a federation with one request
each (the vetted plan `private_inference_plan`): its constants are ``service`` (which
model at which image size, this hospital's party index, the other computing hospital and
the dealer by their member names, how many X-rays each image holder may query, and a
service id both requests carry, which binds them to each other) and
``model_share`` (this hospital's share of the weights: a 32-byte seed for party 0, the
completing uint64 words for party 1; uniformly random alone).

    service_problems({"model": "small_cnn", "image_size": 64, "party": 0,
                      "peer": "Royal Infirmary", "dealer": "County General", "queries": 100,
                      "service_id": "0123456789abcdef0123456789abcdef"})
    # []

Arrays travel as {"shape": [...], "words": base64 of little-endian uint64}; material from
the dealer as an .npz without pickles (`material_to_bytes`), sealed to the party.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from typing import Any, Mapping

import numpy as np

from common.mpc.circuit import SUPPORTED_MODELS
from common.mpc.dealer import Material

SERVICE_KEYS = ("model", "image_size", "party", "peer", "dealer", "queries", "service_id")
MAX_QUERIES = 100_000
MAX_BATCH = 100
MAX_IMAGE_SIZE = 128
# what one query (one deal) may cost: 100 X-rays at 64 px (about 800 MB of material)
MAX_PIXELS = MAX_BATCH * 64 * 64
_SEED = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-f]{32}")


def size_problem(image_size: Any, batch: Any) -> str | None:
    """Why one query of `batch` X-rays at `image_size` px is refused (None: fine)."""
    for name, value in (("image_size", image_size), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer"
    if not 8 <= image_size <= MAX_IMAGE_SIZE or not 1 <= batch <= MAX_BATCH:
        return f"image_size must be 8 to {MAX_IMAGE_SIZE} px and batch 1 to {MAX_BATCH} X-rays"
    if batch * image_size * image_size > MAX_PIXELS:
        return (f"{batch} X-rays at {image_size} px is more than one query may ask (at most "
                f"{MAX_PIXELS:,} pixels: {MAX_PIXELS // (64 * 64)} X-rays at 64 px)")
    return None


def service_problems(service: Any) -> list[str]:
    """Why `service` is not an inference service's description (empty: fine)."""
    if not isinstance(service, dict) or set(service) != set(SERVICE_KEYS):
        return [f"service must be a dict with exactly {', '.join(SERVICE_KEYS)}"]
    problems = []
    if service["model"] not in SUPPORTED_MODELS:
        problems.append(f"service.model must be one of {', '.join(SUPPORTED_MODELS)}")
    size = service["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_IMAGE_SIZE:
        problems.append(f"service.image_size must be an integer from 8 to {MAX_IMAGE_SIZE}")
    if service["party"] not in (0, 1) or isinstance(service["party"], bool):
        problems.append("service.party must be 0 or 1")
    for key in ("peer", "dealer"):
        if not isinstance(service[key], str) or not service[key].strip():
            problems.append(f"service.{key} must name a member of the federation")
    if service["peer"] == service["dealer"]:
        problems.append("service.dealer must not be the other computing hospital")
    if not isinstance(service["service_id"], str) or not _ID.fullmatch(service["service_id"]):
        problems.append("service.service_id must be 32 hex digits (the same at both hospitals)")
    queries = service["queries"]
    if isinstance(queries, bool) or not isinstance(queries, int) or not 1 <= queries <= MAX_QUERIES:
        problems.append(f"service.queries must be an integer from 1 to {MAX_QUERIES}")
    return problems


def weight_shapes(model: str, image_size: int) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of `model` (what a model share must hold)."""
    return dict(_weight_shapes(model, image_size))


@functools.lru_cache(maxsize=16)
def _weight_shapes(model: str, image_size: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from common.models import build_model

    return tuple((k, tuple(v.shape)) for k, v in build_model(model, image_size=image_size)
                 .state_dict().items())


def model_share_problems(model_share: Any, service: dict) -> list[str]:
    """Why `model_share` is not party `service['party']`'s share of the service's model."""
    if service["party"] == 0:
        if not (isinstance(model_share, dict) and set(model_share) == {"seed"}
                and isinstance(model_share["seed"], str) and _SEED.fullmatch(model_share["seed"])):
            return ["model_share for party 0 must be {'seed': 64 hex digits}"]
        return []
    expected = weight_shapes(service["model"], service["image_size"])
    if not isinstance(model_share, dict) or set(model_share) != set(expected):
        return [f"model_share for party 1 must hold exactly the weights of {service['model']}"]
    for name, shape in expected.items():
        words = model_share[name]
        if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.shape != shape:
            return [f"model_share[{name!r}] must be uint64 words of shape {shape}"]
    return []


def model_share_words(model_share: dict, service: dict) -> dict[str, np.ndarray]:
    """This party's weight shares as words (party 0 expands its seed)."""
    if service["party"] == 0:
        from common.mpc import inputs_from_seed

        return inputs_from_seed(bytes.fromhex(model_share["seed"]),
                                weight_shapes(service["model"], service["image_size"]))
    return dict(model_share)


def words_to_json(words: np.ndarray) -> dict:
    words = np.ascontiguousarray(words, dtype="<u8")
    return {"shape": list(words.shape), "words": base64.b64encode(words.tobytes()).decode()}


def words_from_json(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Words of exactly `shape` from `words_to_json`'s form (ValueError otherwise)."""
    if not isinstance(value, dict) or list(value.get("shape", [])) != list(shape):
        raise ValueError(f"expected words of shape {list(shape)}")
    raw = base64.b64decode(str(value.get("words", "")), validate=True)
    if len(raw) != 8 * int(np.prod(shape)):
        raise ValueError("the words do not fill their shape")
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(shape)


def material_to_bytes(seed: bytes, corrections: Mapping[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, __seed__=np.frombuffer(seed, dtype=np.uint8), **dict(corrections))
    return out.getvalue()


def material_from_bytes(party: int, data: bytes) -> Material:
    """A party's material from `material_to_bytes` (no pickles are ever loaded)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    seed = arrays.pop("__seed__").tobytes()
    if party == 0 and arrays:
        raise ValueError("party 0's material is a seed only")
    return Material(party, seed, {k: v.astype(np.uint64) for k, v in arrays.items()})
