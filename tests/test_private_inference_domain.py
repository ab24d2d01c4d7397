"""Private inference on live domains: the session's three hospitals (28 px), Ada as the model
holder and as the image holder. The model is offered to St Mary (party 0) and Royal
Infirmary (party 1) as one vetted request each, shown to the admins with its release table,
approved once; County General deals. A prediction agrees with PyTorch; each hospital's
answer alone is noise; the query budget refuses the query past it; an exchange without the
peer's MAC, material not from the named dealer, and the service run as code are refused."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch

from common.errors import DomainError
from common.mpc import ring
from common.mpc.service import words_from_json
from scientist.inference import PrivateInference, offer_model
from test_private_inference import model_and_weights

pytestmark = pytest.mark.domain
SIZE = 28  # the session federation's images


@pytest.fixture(scope="module")
def service(federation):
    domains, hospitals, reviewers = federation
    st_mary, royal, county = hospitals
    model, weights = model_and_weights(SIZE, seed=5)
    offered = offer_model([st_mary, royal], dealer=county.name, weights=weights,
                          image_size=SIZE, queries=3, reason="pneumonia model for clinics")
    shown = domains[0].cli("review", "show", offered[0].request_id)
    assert "private_inference" in shown and "output_share" in shown and "complies" in shown
    for hospital, submission in zip((st_mary, royal), offered):
        reviewers[hospital.name].approve(submission.request_id)
    inference = PrivateInference([st_mary, royal], county, offered, image_size=SIZE)
    return domains, hospitals, model, offered, inference


def test_a_private_prediction_agrees_with_pytorch_and_spends_the_budget(service):
    domains, hospitals, model, offered, inference = service
    x = np.random.default_rng(3).random((2, 1, SIZE, SIZE)).astype(np.float32)
    answer = inference.predict(x)
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(answer.logits - want).max() < 2e-3
    assert answer.labels.tolist() == want.argmax(1).tolist()
    assert answer.budget == {hospitals[0].name: (2, 3), hospitals[1].name: (2, 3)}
    assert set(answer.seconds) == {"share", "dealer", "computing hospitals"}
    with pytest.raises(DomainError, match="query budget .* spent: 2 of 3"):
        inference.predict(np.concatenate([x, x]))  # 4 more X-rays: past the budget
    audit = domains[1].admin.audit(action="inference.query")
    assert audit[-1]["outcome"] == "refused" and audit[-2]["images"] == "2"
    dealt = domains[2].admin.audit(action="inference.deal")
    assert dealt and dealt[-1]["target"] == f"{hospitals[0].name}+{hospitals[1].name}"


def test_one_hospital_s_answer_alone_is_noise(service):
    _, hospitals, model, offered, inference = service
    x = np.random.default_rng(4).random((1, 1, SIZE, SIZE)).astype(np.float32)
    from scientist.federated import call_domain

    captured = []
    original = call_domain

    def capture(hospital, method, path, body=None, data=None):
        response = original(hospital, method, path, body, data)
        if path.endswith("/query"):
            captured.append(response.json()["share"])
        return response

    import scientist.inference as module

    module.call_domain = capture
    try:
        inference.predict(x)
    finally:
        module.call_domain = original
    want = model(torch.from_numpy(x)).detach().numpy()
    for share in captured:
        alone = ring.decode(words_from_json(share, (1, 2)))
        assert np.abs(alone - want).max() > 1e3  # a uniformly random word, not the logits


def test_an_exchange_without_the_peer_s_key_is_refused(service):
    domains, hospitals, *_ = service
    royal = hospitals[1]
    refused = requests.post(f"{royal.url}/pneumosyft/inference/exchange/{'ab' * 16}/0",
                            data=b"\0" * 64, timeout=60,
                            headers={"X-PneumoSyft-Member": hospitals[0].name,
                                     "X-PneumoSyft-MAC": "00" * 32})
    assert refused.status_code == 403
    assert "not its other computing hospital" in refused.text


def test_material_not_from_the_named_dealer_is_refused(service):
    """Material sealed to St Mary by another key than County General's (or for another
    query) does not open: a dealer who also saw the output could solve for the model."""
    import base64
    import secrets

    from common import sealing
    from common.mpc import compile_model, deal
    from common.mpc.service import material_to_bytes
    from scientist.federated import call_domain

    domains, hospitals, model, offered, inference = service
    st_mary = hospitals[0]
    query = secrets.token_hex(16)
    material = material_to_bytes(*deal(compile_model("small_cnn", SIZE, 1))[0].exported())
    impostor, _ = sealing.generate_keypair()
    for sender, bound_to in ((impostor, query), (impostor, "another query")):
        forged = sealing.seal_from(sender, sealing.key_from_text(st_mary.public_key), material,
                                   sealing.RoundContext(f"inference {bound_to}", n_parties=2),
                                   purpose="inference material 0")
        with pytest.raises(DomainError, match="not the dealer's"):
            call_domain(st_mary, "POST", f"inference/{offered[0].request_id}/query",
                        {"query": query, "batch": 1, "image": {"seed": "00" * 32},
                         "material": base64.b64encode(forged).decode()})


def test_the_service_is_never_run_as_code(service):
    domains, hospitals, model, offered, inference = service
    from scientist.submission import run_approved

    with pytest.raises(DomainError, match="served by"):
        run_approved(hospitals[0].client, offered[0])
