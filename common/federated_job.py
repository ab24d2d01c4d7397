"""A federated job: one approval per hospital for up to R secure rounds, and the rules every
hospital applies to move from one round to the next without trusting the researcher.

The job is the ``job`` constant of a ``federated_job`` request (the same at every member):

    {"job_id": 32 hex digits, "rounds": R, "members": [aggregation public key, ...],
     "total_samples": images trained on by all members, "strategy": {"name", "options"}}

Round r (attempt a: a round the researcher had to retry after a hospital failed) is the
secure round `round_spec` derives from the job alone: its id from (job_id, r, a), its
parties the job's members, its model digest the round's config (the job's, seeded
``seed + r - 1``) and the round's global model. Round 1's global model is the request's
initial weights. Round r+1's is what the members' partial sums of round r combine to,
stepped by the job's strategy, and every hospital computes it itself (`next_global`): the
researcher relays the K partial sums, each with a tag its aggregator sealed to this very
hospital for this very round (`tag_partial_sum`), so she can neither skip a round, nor
invent a global model, nor hand two hospitals different ones (their round specs would
then differ, and no aggregator could open the round).

    spec = round_spec(job, config, round_number=2, attempt=1, global_weights=w)
    tags = tag_partial_sum(aggregator_key, spec_of_round_1, partial)   # one per party
    check_partial_sums(my_key, spec_of_round_1, partials, tags_for_me)   # or SharingError
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping, Sequence

import numpy as np

from common.aggregation import RoundSpec, combine, model_digest
from common.errors import SharingError

JOB_KEYS = ("job_id", "rounds", "members", "total_samples", "strategy")
MAX_ROUNDS = 1000
MAX_ATTEMPTS = 5  # a round retried more often than this ends the job
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_TAG_PURPOSE = "partial-sum"


def job_problems(job: Any) -> list[str]:
    """Why `job` is not a well-formed job constant (empty: fine). Membership of its keys in
    the hospital's federation is the domain's check, not this one."""
    from common.strategies import strategy_from_constant

    if not isinstance(job, Mapping) or set(job) != set(JOB_KEYS):
        return ["job must be {'job_id': 32 hex digits, 'rounds': int, 'members': [key, ...], "
                "'total_samples': int, 'strategy': {'name': ..., 'options': {...}}}"]
    problems = []
    if not isinstance(job["job_id"], str) or not _JOB_ID.fullmatch(job["job_id"]):
        problems.append("job.job_id must be 32 lowercase hex digits")
    rounds = job["rounds"]
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        problems.append(f"job.rounds must be an integer from 1 to {MAX_ROUNDS}")
    try:
        RoundSpec.from_constant({"round": "0" * 32, "public_keys": job["members"],
                                 "total_samples": job["total_samples"], "model": "0" * 64})
    except SharingError as exc:
        problems.append(f"job: {exc}")
    try:
        strategy_from_constant(job["strategy"])
    except ValueError as exc:
        problems.append(f"job.strategy: {exc}")
    return problems


def round_config(config: Mapping[str, Any], round_number: int) -> dict:
    """The training config of round `round_number`: fresh batches each round."""
    return dict(config, seed=int(config.get("seed", 0)) + round_number - 1)


def round_id(job_id: str, round_number: int, attempt: int) -> str:
    """The secure round id of one attempt at one round of a job (32 hex digits)."""
    return hashlib.sha256(f"pneumosyft-job\n{job_id}\n{round_number}\n{attempt}".encode()
                          ).hexdigest()[:32]


def round_spec(job: Mapping[str, Any], config: Mapping[str, Any], *, round_number: int,
               attempt: int, global_weights: Mapping[str, Any] | None) -> RoundSpec:
    """The secure round every member trains in at (`round_number`, `attempt`)."""
    return RoundSpec.from_constant({
        "round": round_id(job["job_id"], round_number, attempt),
        "public_keys": list(job["members"]), "total_samples": job["total_samples"],
        "model": model_digest(round_config(config, round_number), global_weights or None)})


def _tag_context(spec: RoundSpec) -> Any:
    from common.sealing import RoundContext

    return RoundContext(spec.context_id(), spec.n_parties)


def tag_partial_sum(private_key: bytes, spec: RoundSpec, partial: bytes) -> list[bytes]:
    """Aggregator's tags of its partial sum of `spec`'s round: entry i sealed to party i,
    so that party i (and nobody who lacks a member's key) can check it came from here."""
    from common.sealing import seal_from

    digest = hashlib.sha256(partial).digest()
    return [seal_from(private_key, key, digest, _tag_context(spec), purpose=_TAG_PURPOSE)
            for key in spec.keys()]


def check_partial_sums(private_key: bytes, spec: RoundSpec, partials: Sequence[bytes],
                       tags: Sequence[bytes]) -> None:
    """SharingError unless `partials[j]` is aggregator j's partial sum of `spec`'s round,
    as its tag sealed to this hospital (`tags[j]`) says, for every party j."""
    from common.sealing import open_from

    if len(partials) != spec.n_parties or len(tags) != spec.n_parties:
        raise SharingError(f"round {spec.round_id} has {spec.n_parties} parties: a partial sum "
                           f"and a tag from each, got {len(partials)} and {len(tags)}")
    keys = spec.keys()
    for j, (partial, tag) in enumerate(zip(partials, tags)):
        try:
            vouched = open_from(private_key, keys[j], tag, _tag_context(spec),
                                purpose=_TAG_PURPOSE)
        except SharingError:
            raise SharingError(f"the tag of partial sum {j} of round {spec.round_id} is not "
                               f"its aggregator's") from None
        if vouched != hashlib.sha256(partial).digest():
            raise SharingError(f"partial sum {j} of round {spec.round_id} is not the one its "
                               "aggregator released")


def next_global(strategy: Any, current: Mapping[str, np.ndarray],
                partials: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The next global model: the round's weighted average (the partial sums combined),
    stepped by `strategy` from `current` (its state moves on by one round)."""
    return strategy.next_global(dict(current), combine(partials))
