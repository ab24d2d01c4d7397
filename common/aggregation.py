"""One secure-aggregation round, as every party sees it: the round's spec, what a
hospital contributes, what an aggregator releases, and how the researcher combines it.

A round is a `RoundSpec`: a fresh random id, the parties' public keys (every
hospital is also an aggregator), the total sample count the weights are divided by,
and the digest of the model every party trains (`model_digest`: the training config and
the initial weights), so that no party can be handed another model than the rest
without the round failing to open. Hospital i trains, scales its weights by n_i / total and seals them as seeded
shares in the 32-bit ring (`contribute`): to each other party k a 32-byte seed,
sealed from i to k; to itself one correction share. Every ciphertext is
authenticated as coming from party i for exactly this spec (its id, keys, total and model),
so nobody who holds only public keys, the researcher included, can make or
re-address one. Aggregator k opens exactly one contribution from every party and
releases their sum (`aggregate`); the researcher adds the K sums (`combine`).
What leaves a hospital is about one float32 model plus 84 bytes per other party.

    spec = RoundSpec.new(public_keys, total_samples=1920,
                         model=model_digest(config, initial_weights))
    sealed = contribute(key_i, weights, n_samples=640, spec=spec)  # K entries
    partial_k = aggregate(key_k, spec, [sealed_i[k] for sealed_i in contributions])
    average = combine([partial_0, ..., partial_K-1])          # = sum n_i w_i / total
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from common.errors import SharingError

AGGREGATION_DATASET = "aggregation"
AGGREGATION_ASSET = "x25519_private"
RING_BITS = 32
FRAC_BITS = 24  # weights scaled by n_i/total stay below 2^(31-24)/K = 128/K in magnitude
MIN_PARTIES = 2
MAX_TOTAL_SAMPLES = 10**9
_ROUND_ID = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
SPEC_KEYS = ("round", "public_keys", "total_samples", "model")


def model_digest(config: Mapping[str, Any], initial_weights: Mapping[str, Any] | None) -> str:
    """sha256 of what a round's parties must all train: the training config (canonical
    JSON) and the initial weights (names, shapes and float32 bytes, by name; none for a
    fresh model, which the config's seed then fixes)."""
    digest = hashlib.sha256(json.dumps(dict(config), sort_keys=True,
                                       separators=(",", ":")).encode())
    for name in sorted(initial_weights or {}):
        value = np.ascontiguousarray(np.asarray(initial_weights[name]), dtype="<f4")
        digest.update(f"\n{name}:{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class RoundSpec:
    """What every party of one round agrees on; `context_id` binds all of it."""

    round_id: str
    public_keys: tuple[str, ...]
    total_samples: int
    model: str  # model_digest of the config and initial weights every party trains

    @classmethod
    def new(cls, public_keys: Sequence[str], total_samples: int, model: str) -> "RoundSpec":
        """A round with a fresh 128-bit random id."""
        return cls.from_constant({"round": secrets.token_hex(16),
                                  "public_keys": list(public_keys),
                                  "total_samples": total_samples, "model": model})

    @classmethod
    def from_constant(cls, value: Any) -> "RoundSpec":
        """The spec a request carries as its ``aggregator_keys`` constant, checked
        (SharingError with the first problem).

            >>> RoundSpec.from_constant({"round": "0" * 32, "public_keys": ["a"],
            ...                          "total_samples": 10, "model": "0" * 64})
            Traceback (most recent call last):
            common.errors.SharingError: a round needs 2 to 512 parties, got 1
        """
        from common.sealing import key_from_text
        from common.secret_sharing import MAX_PARTIES

        if not isinstance(value, Mapping) or set(value) != set(SPEC_KEYS):
            raise SharingError("aggregator_keys must be {'round': 32 hex digits, "
                               "'public_keys': [key, ...], 'total_samples': int, "
                               "'model': 64 hex digits}")
        round_id, keys, total = value["round"], value["public_keys"], value["total_samples"]
        model = value["model"]
        if not isinstance(round_id, str) or not _ROUND_ID.fullmatch(round_id):
            raise SharingError("the round id must be 32 lowercase hex digits")
        if not isinstance(keys, (list, tuple)) or not MIN_PARTIES <= len(keys) <= MAX_PARTIES:
            raise SharingError(f"a round needs {MIN_PARTIES} to {MAX_PARTIES} parties, "
                               f"got {len(keys) if isinstance(keys, (list, tuple)) else keys!r}")
        decoded = [key_from_text(k) if isinstance(k, str) else None for k in keys]
        if None in decoded:
            raise SharingError("public keys must be text (hex)")
        if len(set(decoded)) != len(decoded):
            raise SharingError("the round names the same party twice")
        if isinstance(total, bool) or not isinstance(total, int) \
                or not 1 <= total <= MAX_TOTAL_SAMPLES:
            raise SharingError(f"total_samples must be an integer from 1 to {MAX_TOTAL_SAMPLES}")
        if not isinstance(model, str) or not _DIGEST.fullmatch(model):
            raise SharingError("the round's model must be a model_digest: 64 lowercase hex "
                               "digits")
        return cls(round_id, tuple(keys), int(total), model)

    def to_constant(self) -> dict:
        """The request constant (``aggregator_keys``) for this spec."""
        return {"round": self.round_id, "public_keys": list(self.public_keys),
                "total_samples": self.total_samples, "model": self.model}

    @property
    def n_parties(self) -> int:
        return len(self.public_keys)

    def keys(self) -> list[bytes]:
        from common.sealing import key_from_text

        return [key_from_text(k) for k in self.public_keys]

    def context_id(self) -> str:
        """What every ciphertext of the round is bound to: id, total, all keys and the model."""
        digest = hashlib.sha256("\n".join(self.public_keys).encode()).hexdigest()
        return f"{self.round_id}:{self.total_samples}:{digest}:{self.model}"

    def index_of(self, private_key: bytes) -> int:
        """The party index of the holder of `private_key` (SharingError if not a party)."""
        from common.sealing import public_key_from_private

        own = public_key_from_private(private_key)
        keys = self.keys()
        if own not in keys:
            raise SharingError("this hospital's aggregation key is not a party of the round")
        return keys.index(own)


def private_key_bytes(asset: Any) -> bytes:
    """The 32-byte key from the aggregation asset (syft may hand it over widened)."""
    if isinstance(asset, (bytes, bytearray)):
        return bytes(asset)
    return np.asarray(asset).astype(np.uint8).tobytes()


def scaled_contribution(weights: Mapping[str, np.ndarray], n_samples: int,
                        total_samples: int) -> dict[str, np.ndarray]:
    """weights x n_samples / total_samples in float64: one hospital's term of the round's
    weighted sum, shared by `contribute` and summed in the clear by `fixed_point_sum`."""
    scale = float(n_samples) / total_samples
    return {name: np.asarray(value, np.float64) * scale for name, value in weights.items()}


def fixed_point_sum(contributions: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The plain counterpart of a secure round: the contributions rounded to the round's
    fixed point (2^-FRAC_BITS) and summed exactly, decoded to float32 as `combine`
    decodes the partial sums; from the same contributions it returns the same bits."""
    from common.secret_sharing import decode, encode

    total = {}
    for name in contributions[0]:
        words = np.zeros(np.shape(contributions[0][name]), dtype=np.uint64)
        for contribution in contributions:
            np.add(words, encode(contribution[name], FRAC_BITS), out=words)
        total[name] = decode(words, FRAC_BITS).astype(np.float32)
    return total


def contribute(private_key: bytes, weights: Mapping[str, np.ndarray], n_samples: int,
               spec: RoundSpec) -> list[bytes]:
    """This hospital's sealed contribution: K ciphertexts, entry k for aggregator k
    (a sealed seed, or at its own index the sealed correction share) of
    weights x n_samples / total_samples."""
    from common.sealing import seal_seeded_shares

    spec.index_of(private_key)
    scaled = scaled_contribution(weights, n_samples, spec.total_samples)
    correction, seeds = seal_seeded_shares(scaled, private_key, spec.keys(), spec.context_id(),
                                           frac_bits=FRAC_BITS, ring_bits=RING_BITS)
    return [correction if seed is None else seed for seed in seeds]


def aggregate(private_key: bytes, spec: RoundSpec, ciphertexts: Sequence[bytes]) -> bytes:
    """Aggregator k's release: the sum of the K contributions addressed to it (entry i
    from party i, each verified), as ``common.wire`` bytes of one partial sum."""
    from common import wire
    from common.sealing import open_seeded_and_sum

    own = spec.index_of(private_key)
    if not isinstance(ciphertexts, (list, tuple)) or len(ciphertexts) != spec.n_parties:
        raise SharingError(f"an aggregation takes exactly one ciphertext from each of the "
                           f"{spec.n_parties} parties")
    keys = spec.keys()
    seeds = [(keys[i], ct) for i, ct in enumerate(ciphertexts) if i != own]
    partial = open_seeded_and_sum(private_key, keys, spec.context_id(), ciphertexts[own], seeds)
    return wire.dumps(partial)


def combine(partial_sums: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The researcher's result: the K partial sums added and decoded (float32)."""
    from common import wire
    from common.secret_sharing import reconstruct_state_dict

    summed = reconstruct_state_dict([wire.loads(p) for p in partial_sums])
    return {name: np.asarray(value, np.float32) for name, value in summed.items()}
