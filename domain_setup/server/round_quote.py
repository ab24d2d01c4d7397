"""Who a secure round's parties are, and why this hospital may not take part in it: one
answer for the approval guard, ``review show``, the dispatch (when the hospital
contributes) and the aggregation route.

A round's parties are aggregation public keys. Any K-1 of them together open the K-th
hospital's contribution, so each must be this hospital's own key or a member's of the
federation its admin keeps (`domain_setup.policy.federation`); the round must name this
hospital; and its total must be at least the images this hospital trains on. (That its
model digest is this request's config and initial weights is the constant schema's
check, `domain_setup.vetting.constants`.)

    round_quote(policies, constants, own_key=key, own_count=540)
    # {"parties": ["this hospital", "Royal Infirmary"], "problems": []}
"""

from __future__ import annotations

from typing import Any

from common.aggregation import RoundSpec
from common.errors import SharingError
from common.training import held_out_count


def own_training_count(n_images: int, config: Any) -> int:
    """The images a hospital with `n_images` trains on under `config` (held-out ones aside)."""
    fraction = config.get("validation_fraction", 0.0) if isinstance(config, dict) else 0.0
    try:
        return n_images - held_out_count(n_images, float(fraction))
    except (TypeError, ValueError):
        return n_images


def round_quote(policies: Any, constants: dict, *, own_key: bytes | None,
                own_count: int | None) -> dict | None:
    """The parties (by name) and the problems of the round `constants` name, or of every
    round of the federated job they name (then with its "job" id and "rounds"); None when
    they name none, or one the constant schema refuses anyway."""
    job = constants.get("job")
    try:
        if isinstance(job, dict):
            spec = RoundSpec.from_constant({"round": job.get("job_id"),
                                            "public_keys": job.get("members"),
                                            "total_samples": job.get("total_samples"),
                                            "model": "0" * 64})
        else:
            spec = RoundSpec.from_constant(constants.get("aggregator_keys"))
    except SharingError:
        return None
    members = policies.federation
    problems = members.round_problems(spec, own_key=own_key, own_count=own_count)
    quote = {"round": spec.round_id, "parties": members.party_names(spec, own_key),
             "problems": problems}
    if isinstance(job, dict):
        quote.update(job=spec.round_id, rounds=job.get("rounds"),
                     strategy=job.get("strategy"))
    return quote


def aggregation_problems(policies: Any, spec: RoundSpec, own_key: bytes | None) -> list[str]:
    """Why this hospital may not aggregate `spec`'s round now (its membership rules, again:
    a member removed since the contribution ends the round here)."""
    return policies.federation.round_problems(spec, own_key=own_key, own_count=None)
