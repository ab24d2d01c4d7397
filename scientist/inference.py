"""Private inference from the notebook: offer a model to two hospitals of a federation, then
ask them for a pneumonia prediction on an X-ray that neither sees, with a model neither
holds in the clear (`common.mpc`).

The model holder offers the model once (one request per computing hospital, which its
admin approves with a query budget per image holder):

    from scientist.federated import join
    st_mary, royal, county = (join(f) for f in ("mary.json", "royal.json", "county.json"))
    requests = offer_model([st_mary, royal], dealer=county.name, weights=weights,
                           image_size=64, queries=100, reason="pneumonia model, round 20")

An image holder (a clinic) then asks, as often as her budget allows:

    inference = PrivateInference([st_mary, royal], county, requests, image_size=64)
    answer = inference.predict(xray)          # xray: (H, W) or (N, 1, H, W) in [0, 1]
    answer.probabilities, answer.labels, answer.seconds

Each computing hospital receives its share of the X-ray (party 0 a 32-byte seed), the
dealer's material sealed to it, and answers with its share of the logits; only here are
the two added. The dealer hospital sees neither input nor output.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from common.errors import DomainError
from common.mpc import reveal, share_inputs
from common.mpc.service import MAX_BATCH, words_from_json, words_to_json
from common.vetted_plans import private_inference_plan
from scientist.federated import Hospital, at_every_hospital, call_domain
from scientist.submission import Submission, submit_plan


def offer_model(hospitals: list[Hospital], *, dealer: str, weights: Mapping[str, np.ndarray],
                image_size: int, queries: int, reason: str,
                model: str = "small_cnn") -> list[Submission]:
    """Submit the inference service to the two computing `hospitals` (party 0, party 1),
    each with its share of `weights`; `dealer` names the member that deals. Returns the
    two requests, for their admins to approve."""
    if len(hospitals) != 2 or hospitals[0].name == hospitals[1].name:
        raise DomainError("private inference needs two different computing hospitals")
    if dealer in (hospitals[0].name, hospitals[1].name):
        raise DomainError("the dealer must be a third hospital, not a computing one")
    seed, share1 = share_inputs({k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
    service_id = secrets.token_hex(16)  # binds the two requests: one service, not two
    submissions = []
    for party, hospital in enumerate(hospitals):
        service = {"model": model, "image_size": image_size, "party": party,
                   "peer": hospitals[1 - party].name, "dealer": dealer, "queries": queries,
                   "service_id": service_id}
        share = {"seed": seed.hex()} if party == 0 else share1
        submissions.append(submit_plan(hospital.client, private_inference_plan, inputs={},
                                       constants={"model_share": share, "service": service},
                                       reason=reason))
    return submissions


@dataclass
class Answer:
    """A private prediction: pneumonia probabilities, labels, and where the time went."""

    logits: np.ndarray
    probabilities: np.ndarray  # P(pneumonia) per X-ray
    labels: np.ndarray  # 1 = pneumonia
    seconds: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)  # per hospital: X-rays used of the budget


class PrivateInference:
    """An image holder's handle on one approved inference service."""

    def __init__(self, hospitals: list[Hospital], dealer: Hospital,
                 requests: list[Submission | str], *, image_size: int,
                 model: str = "small_cnn"):
        self.hospitals, self.dealer = hospitals, dealer
        self.request_ids = [r.request_id if isinstance(r, Submission) else str(r)
                            for r in requests]
        self.image_size, self.model = image_size, model

    def predict(self, images: np.ndarray) -> Answer:
        """Pneumonia probabilities of `images` ((H, W), (N, H, W) or (N, 1, H, W), values
        in [0, 1]), computed by the two hospitals on shares."""
        x = np.asarray(images, dtype=np.float32)
        x = x.reshape((-1, 1, *x.shape[-2:]))
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise DomainError(f"this service takes {self.image_size} px X-rays, "
                              f"not {x.shape[-2]}x{x.shape[-1]}")
        if not 1 <= len(x) <= MAX_BATCH:
            raise DomainError(f"ask for 1 to {MAX_BATCH} X-rays at a time")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        seed, share1 = share_inputs({"image": x})
        query = secrets.token_hex(16)
        timings["share"] = time.perf_counter() - started
        started = time.perf_counter()
        material = call_domain(self.dealer, "POST", "inference/deal", {
            "query": query, "model": self.model, "image_size": self.image_size,
            "batch": len(x), "party0": self.hospitals[0].name,
            "party1": self.hospitals[1].name}).json()
        timings["dealer"] = time.perf_counter() - started
        bodies = [{"query": query, "batch": len(x), "image": {"seed": seed.hex()},
                   "material": material["party0"]},
                  {"query": query, "batch": len(x), "image": words_to_json(share1["image"]),
                   "material": material["party1"]}]
        started = time.perf_counter()
        answers = at_every_hospital(self.hospitals, lambda hospital: call_domain(
            hospital, "POST", f"inference/{self.request_ids[self.hospitals.index(hospital)]}"
            "/query", bodies[self.hospitals.index(hospital)]).json(), failure="{error}")
        timings["computing hospitals"] = time.perf_counter() - started
        shape = (len(x), 2)
        logits = reveal(*(words_from_json(a["share"], shape) for a in answers))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted[:, 1] / shifted.sum(axis=1)
        return Answer(logits=logits, probabilities=probabilities,
                      labels=(probabilities >= 0.5).astype(np.int64), seconds=timings,
                      budget={h.name: (a["used"], a["budget"])
                              for h, a in zip(self.hospitals, answers)})
