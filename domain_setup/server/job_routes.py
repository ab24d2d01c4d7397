"""The federated job routes (under /pneumosyft/jobs): a job approved once runs round by round.

    POST /{request_id}/rounds      {"round", "attempt", "previous"?}: train round r here and
                                   release its sealed shares           (the job's researcher)
    POST /{request_id}/aggregate   {"round", "attempt", "ciphertexts"}: this hospital's
                                   partial sum, tagged for every member (the job's researcher)
    GET  /{request_id}             where the job stands here           (the job's researcher)
    GET  /                         every job on this domain            (approve_requests)
    POST /{request_id}/stop        {"reason"}: end it at the next round (approve_requests)

The decisions are `server/job_rounds.py`'s; every refusal is one line, audited there.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from domain_setup.server.aggregation_route import MAX_BODY_BYTES
from domain_setup.server.job_rounds import JobRefused, JobRounds
from domain_setup.server.routes import RouteRefusal, checked_request_id, route_caller


async def _body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RouteRefusal(413, f"a job request of {len(body)} bytes; at most {MAX_BODY_BYTES}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RouteRefusal(400, "the body is not JSON (or nested too deep)") from None


def make_job_router(gate: Any, rounds: JobRounds) -> APIRouter:
    """The routes of the module docstring."""
    router = APIRouter()

    async def decide(method: Any, *args: Any) -> Any:
        try:
            return await run_in_threadpool(method, *args)
        except JobRefused as exc:
            raise RouteRefusal(exc.status, exc.reason) from None

    @router.post("/{request_id}/rounds")
    async def train_round(request_id: str, request: Request) -> Any:
        caller = route_caller(gate, request, "submit_code", "run a federated job")
        return await decide(rounds.train, checked_request_id(request_id), caller.email,
                            await _body(request))

    @router.post("/{request_id}/aggregate")
    async def aggregate_round(request_id: str, request: Request) -> Any:
        caller = route_caller(gate, request, "submit_code", "run a federated job")
        return await decide(rounds.aggregate, checked_request_id(request_id), caller.email,
                            await _body(request))

    @router.get("/{request_id}")
    async def job_status(request_id: str, request: Request) -> Any:
        caller = route_caller(gate, request, None, "read a federated job")
        return await decide(rounds.status, checked_request_id(request_id), caller.email)

    @router.get("/")
    def all_jobs(request: Request) -> Any:
        route_caller(gate, request, "approve_requests", "list the federated jobs")
        return {"jobs": rounds.describe()}

    @router.post("/{request_id}/stop")
    async def stop_job(request_id: str, request: Request) -> Any:
        admin = route_caller(gate, request, "approve_requests", "stop a federated job")
        body = await _body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise RouteRefusal(400, "stopping a job needs a reason")
        return await decide(rounds.stop, checked_request_id(request_id), admin.email,
                            " ".join(reason.split())[:300])

    return router
