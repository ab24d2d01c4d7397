"""The domain's aggregation route: the one way a hospital opens secure-aggregation shares.

    POST /pneumosyft/federation/aggregate
        {"aggregator_keys": {"round", "public_keys", "total_samples"},
         "ciphertexts": [base64, ...]}       one entry per party, in the round's order
        -> 200 application/octet-stream: this hospital's partial sum (common.wire)

There is no request to submit or approve: the hospital admin approved this round when
they approved the secure-training request that named it, and the domain aggregates
exactly that round, once, for the researcher who ran it (`RoundLedger`), with the
catalogue's fixed plan (`common.vetted_plans.aggregate_round_plan`) in the sandbox.
Every ciphertext must be authenticated as its party's contribution to this very round
(`common.aggregation`), so nobody can have one hospital's share opened alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from common.aggregation import RoundSpec
from common.errors import SharingError
from domain_setup.server.routes import RouteRefusal, route_caller

MAX_BODY_BYTES = 256 << 20  # base64 of a resnet18 correction share (45 MB) and seeds, with room


def parse_aggregation(body: bytes) -> tuple[RoundSpec, list[bytes]]:
    """The round and its ciphertexts from a request body (RouteRefusal 400 otherwise)."""
    try:
        payload = json.loads(body)
        spec = RoundSpec.from_constant(payload.get("aggregator_keys"))
        encoded = payload["ciphertexts"]
        if not isinstance(encoded, list) or not all(isinstance(c, str) for c in encoded):
            raise TypeError("ciphertexts must be a list of base64 strings")
        ciphertexts = [base64.b64decode(c, validate=True) for c in encoded]
    except RecursionError:
        raise RouteRefusal(400, "bad aggregation request: JSON nested too deep") from None
    except (ValueError, TypeError, KeyError, AttributeError, SharingError,
            binascii.Error) as exc:
        raise RouteRefusal(400, f"bad aggregation request: {str(exc)[:200]}") from None
    if len(ciphertexts) != spec.n_parties:
        raise RouteRefusal(400, f"the round has {spec.n_parties} parties but "
                                f"{len(ciphertexts)} ciphertexts were sent")
    return spec, ciphertexts


def make_aggregation_router(gate: Any, executor: Any, private_key: Any) -> APIRouter:
    """The route of the module docstring; `private_key()` reads the hospital's key
    (None before `federation enable`)."""
    from domain_setup.server.execution import Withheld

    router = APIRouter()

    @router.post("/aggregate")
    async def aggregate(request: Request) -> Response:
        caller = route_caller(gate, request, "submit_code", "aggregate a federated round")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise RouteRefusal(413, f"aggregation request of {len(body)} bytes; at most "
                                    f"{MAX_BODY_BYTES}")
        spec, ciphertexts = parse_aggregation(body)
        key = private_key()
        if key is None:
            raise RouteRefusal(409, "this hospital is not an aggregation party "
                                    "(`federation enable` first)")
        try:
            partial = await run_in_threadpool(executor.aggregate, spec, ciphertexts, key,
                                              caller.email)
        except Withheld as exc:
            raise RouteRefusal(409, str(exc)) from None
        return Response(content=partial, media_type="application/octet-stream")

    return router
