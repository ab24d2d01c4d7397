"""Private inference on this domain (under /pneumosyft/inference): as the dealer of a query,
or as one of its two computing hospitals.

    POST /deal                       {"query", "model", "image_size", "batch", "party0",
                                     "party1"}: correlated randomness for one query, party
                                     0's seed sealed from this hospital's aggregation key to
                                     party 0's, party 1's material to party 1's (both
                                     members here), bound to the query
                                                                            (any account)
    POST /{request_id}/query         {"query", "image", "material"}: run the approved
                                     service `request_id` on the caller's shared X-rays
                                     with the other computing hospital; the answer is this
                                     hospital's share of the logits, for the caller alone.
                                     Charged to the caller's query budget   (any account)
    POST /exchange/{query}/{round}   party 0's words of one round, party 1's in the answer:
                                     no token; a MAC only the two hospitals can make
                                     (`server/inference_link.py`)

The model share comes from the approved request's constants; the image share and the
dealer's material from the caller, who can open neither the material (sealed) nor the
other hospital's share. Every query and deal is audited.
"""

from __future__ import annotations

import base64
import hmac
import re
import threading
import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from common import sealing, syft_compat
from common.mpc import compile_model, deal, inputs_from_seed
from common.mpc.circuit import largest_exchange_words
from common.mpc.party import Party
from common.mpc.service import (material_from_bytes, material_to_bytes, model_share_words,
                                size_problem, words_from_json, words_to_json)
from domain_setup.server.inference_ledger import InferenceLedger, QueryRefused
from domain_setup.server.inference_link import (EXCHANGE_PREFIX, Exchanges, PeerChannel,
                                                Rendezvous, link_key, mac)
from domain_setup.server.routes import RouteRefusal, _json_object, checked_request_id, route_caller
from domain_setup.vetting.registry import identify, plan_kind

_QUERY_ID = re.compile(r"[0-9a-f]{32}")
MAX_CONCURRENT_DEALS = 2
SEED_HEX = re.compile(r"[0-9a-f]{64}")


def make_inference_router(state: Any, worker: Any, gate: Any, approvals: Any,
                          private_key: Any) -> APIRouter:
    """The routes of the module docstring; `private_key()` is this hospital's aggregation
    key (None before `federation enable`)."""
    router = APIRouter()
    own_name = state.load_config().name
    ledger = InferenceLedger.of_state(state.root)
    exchanges = Exchanges()
    dealing = threading.Semaphore(MAX_CONCURRENT_DEALS)

    def member(name: str) -> Any:
        found = next((m for m in gate.policies.current.federation.members if m.name == name),
                     None)
        if found is None:
            raise RouteRefusal(409, f"{name[:64]!r} is not a member of this hospital's federation")
        return found

    def own_key() -> bytes:
        key = private_key()
        if key is None:
            raise RouteRefusal(409, "this hospital is not an aggregation party: its admin runs "
                                    "`federation enable` first")
        return key

    @router.post("/deal")
    async def deal_material(request: Request) -> Any:
        caller = route_caller(gate, request, None, "ask for inference material")
        try:
            body = await _json_object(request)
            model, size, batch = str(body["model"]), body["image_size"], body["batch"]
            names = (str(body["party0"]), str(body["party1"]))
            query_id = str(body["query"])
        except (ValueError, KeyError, TypeError):
            raise RouteRefusal(400, "body must be JSON with 'query', 'model', 'image_size', "
                                    "'batch', 'party0' and 'party1'") from None
        if not _QUERY_ID.fullmatch(query_id):
            raise RouteRefusal(400, "a query id is 32 hex digits")
        problem = size_problem(size, batch)
        if problem:
            raise RouteRefusal(400, problem)
        parties = [member(name) for name in names]
        if names[0] == names[1]:
            raise RouteRefusal(400, "the two computing hospitals must differ")
        try:
            steps = compile_model(model, size, batch)
        except ValueError as exc:
            raise RouteRefusal(400, str(exc)) from None
        started = time.perf_counter()
        dealer_key = own_key()

        def make() -> list[bytes]:
            return [sealing.seal_from(dealer_key, sealing.key_from_text(p.public_key),
                                      material_to_bytes(*m.exported()), _context(query_id),
                                      purpose=f"inference material {i}")
                    for i, (m, p) in enumerate(zip(deal(steps), parties))]

        if not dealing.acquire(blocking=False):  # a deal is CPU and memory: two at a time
            raise RouteRefusal(429, "the dealer is busy: try again in a moment")
        try:
            sealed = await anyio.to_thread.run_sync(make)
        finally:
            dealing.release()
        gate.audit.record(caller.email, "inference.deal", target=f"{names[0]}+{names[1]}",
                          model=model, image_size=str(size), batch=str(batch),
                          seconds=f"{time.perf_counter() - started:.3f}",
                          bytes=str(sum(map(len, sealed))))
        return {"party0": base64.b64encode(sealed[0]).decode(),
                "party1": base64.b64encode(sealed[1]).decode()}

    def service_of(request_id: str) -> tuple[str, dict, dict]:
        wanted = checked_request_id(request_id)
        code = syft_compat.request_code(worker, wanted)
        if code is None or identify(code.raw_code).name != "private_inference":
            raise RouteRefusal(404, f"no inference service {request_id[:64]!r} on this domain")
        if not approvals.approved(str(code.id.no_dash)):
            raise RouteRefusal(403, "this inference service is not approved (yet)")
        constants = syft_compat.code_constants(code)
        return wanted, constants["service"], constants["model_share"]

    @router.post("/{request_id}/query")
    async def query(request_id: str, request: Request) -> Any:
        caller = route_caller(gate, request, None, "query an inference service")
        wanted, service, model_share = service_of(request_id)
        try:
            body = await _json_object(request)
            query_id, batch = str(body["query"]), body["batch"]
            image, material = body["image"], base64.b64decode(str(body["material"]),
                                                              validate=True)
        except (ValueError, KeyError, TypeError):
            raise RouteRefusal(400, "body must be JSON with 'query', 'batch', 'image' and "
                                    "'material'") from None
        if not _QUERY_ID.fullmatch(query_id):
            raise RouteRefusal(400, "a query id is 32 hex digits")
        problem = size_problem(service["image_size"], batch)
        if problem:
            raise RouteRefusal(400, problem)
        party = service["party"]
        peer = member(service["peer"])
        size = service["image_size"]
        shape = (batch, 1, size, size)
        try:
            dealer = member(service["dealer"])
            own = material_from_bytes(party, sealing.open_from(
                own_key(), sealing.key_from_text(dealer.public_key), material,
                _context(query_id), purpose=f"inference material {party}"))
            if party == 0:
                seed = str(image.get("seed", "")) if isinstance(image, dict) else ""
                if not SEED_HEX.fullmatch(seed):
                    raise ValueError("party 0's image share is {'seed': 64 hex digits}")
                image_share = inputs_from_seed(bytes.fromhex(seed), {"image": shape})["image"]
            else:
                image_share = words_from_json(image, shape)
        except ValueError as exc:
            raise RouteRefusal(400, f"the query's shares do not fit the service ({exc})") \
                from None
        except RouteRefusal:
            raise
        except Exception:  # a seal this hospital cannot open, or not from the dealer
            raise RouteRefusal(400, f"the material is not the dealer's ({service['dealer']}) "
                                    f"for this query and this hospital") from None
        try:
            used = ledger.charge(wanted, caller.email, images=batch, limit=service["queries"],
                                 query=query_id)
        except QueryRefused as exc:
            gate.audit.record(caller.email, "inference.query", target=wanted,
                              outcome="refused", reason=str(exc))
            raise RouteRefusal(429, str(exc)) from None
        key = link_key(own_key(), sealing.key_from_text(peer.public_key),
                       service["service_id"], query_id)
        steps = compile_model(service["model"], size, batch)
        if party == 0:
            if peer.tls_fingerprint:  # the member list is this hospital's word on its peers
                from common.tls import trust

                trust(peer.url, fingerprint=peer.tls_fingerprint, replace=True)
            channel = PeerChannel(peer.url, query_id, key, own_name)
        else:
            try:
                channel = exchanges.open(query_id, Rendezvous(
                    key, service["service_id"], caller.email,
                    max_bytes=8 * largest_exchange_words(steps)))
            except ValueError as exc:
                raise RouteRefusal(429, str(exc)) from None
        weights = model_share_words(model_share, service)
        started = time.perf_counter()

        def run() -> Any:
            return Party(party, channel, own).run(steps, image_share, weights)

        try:
            share = await anyio.to_thread.run_sync(run)
        except (ConnectionError, OSError) as exc:
            gate.audit.record(caller.email, "inference.query", target=wanted, outcome="failed",
                              query=query_id, reason=str(exc)[:200])
            raise RouteRefusal(502, f"the query failed between the computing hospitals: "
                                    f"{str(exc)[:200]}") from None
        finally:
            if party == 1:
                exchanges.close(query_id)
            else:
                channel.close()
        gate.audit.record(caller.email, "inference.query", target=wanted, query=query_id,
                          images=str(batch), used=f"{used} of {service['queries']}",
                          rounds=str(sum(channel.rounds.values())),
                          seconds=f"{time.perf_counter() - started:.3f}")
        released = _released({"output_share": share}, batch)
        return {"share": words_to_json(released["output_share"]), "party": party,
                "used": used, "budget": service["queries"]}

    @router.post("/exchange/{query_id}/{round_number}")
    async def exchange(query_id: str, round_number: int, request: Request) -> Any:
        import anyio.to_thread

        # nothing is read before the query is open here with the member the sender names
        rendezvous = exchanges.find(query_id) if _QUERY_ID.fullmatch(query_id) else None
        sender = request.headers.get("x-pneumosyft-member", "")
        peer = next((m for m in gate.policies.current.federation.members if m.name == sender),
                    None)
        key = (link_key(own_key(), sealing.key_from_text(peer.public_key),
                        rendezvous.service_id, query_id)
               if rendezvous is not None and peer is not None else None)
        if key is None or not hmac.compare_digest(key, rendezvous.key):
            gate.audit.refused_anonymous(EXCHANGE_PREFIX, status=404,
                                         reason="inference exchange for no open query")
            raise RouteRefusal(404, "no such query open here with that hospital")
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > rendezvous.max_bytes:
            raise RouteRefusal(413, "a round larger than this query's rounds")
        body = await request.body()
        if len(body) > rendezvous.max_bytes or not _mac_ok(
                key, query_id, round_number, body, request.headers.get("x-pneumosyft-mac", "")):
            gate.audit.record(sender[:64], "inference.exchange", target=query_id,
                              outcome="refused", reason="a round without its MAC")
            raise RouteRefusal(403, "not the other computing hospital of this query")
        if round_number != rendezvous.next_round:
            raise RouteRefusal(409, f"round {round_number} out of order")
        try:
            theirs = await anyio.to_thread.run_sync(rendezvous.deliver, body)
        except ConnectionError as exc:
            raise RouteRefusal(504, str(exc)) from None
        return Response(theirs, media_type="application/octet-stream")

    return router


def _mac_ok(key: bytes, query_id: str, round_number: int, body: bytes, sent: str) -> bool:
    return hmac.compare_digest(mac(key, query_id, round_number, body), sent)


def _context(query_id: str) -> Any:
    """What the dealer's material is bound to: this query, two computing parties."""
    return sealing.RoundContext(f"inference {query_id}", n_parties=2)


def _released(result: dict, batch: int) -> dict:
    """A query's answer through the kind's output contract and release filter."""
    from domain_setup.vetting.contract_parts import ContractContext

    kind = plan_kind("private_inference")
    kind.contract(result, ContractContext(n_samples=batch))
    return kind.release(result, trusted=True)

