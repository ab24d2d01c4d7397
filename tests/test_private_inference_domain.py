"""Private inference on live domains: the session's three hospitals (28 px), Ada as the model
holder and as the image holder. The model is offered to St Mary (party 0) and Royal
Infirmary (party 1) as one vetted request each, shown to the admins with its release table,
approved once; County General deals. A prediction agrees with PyTorch; each hospital's
answer alone is noise; the query budget refuses the query past it; an exchange without the
peer's MAC, material not from the named dealer, a query id used twice, a service paired
with another's half, an outsider's huge round and an oversized deal are refused, and the
service run as code too."""

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
                          image_size=SIZE, queries=8, reason="pneumonia model for clinics")
    shown = domains[0].cli("review", "show", offered[0].request_id)
    assert "private_inference" in shown and "output_share" in shown and "complies" in shown
    for hospital, submission in zip((st_mary, royal), offered):
        reviewers[hospital.name].approve(submission.request_id)
    inference = PrivateInference([st_mary, royal], county, offered, image_size=SIZE)
    return domains, hospitals, model, offered, inference


def _ask_both(hospitals, dealer, offered, query: str, x: np.ndarray) -> list:
    """One query by hand (what PrivateInference.predict does), its two answers or errors;
    the bodies are returned too, to send them again."""
    import threading

    from common.mpc import share_inputs
    from common.mpc.service import words_to_json
    from scientist.federated import call_domain

    seed, share1 = share_inputs({"image": x})
    material = call_domain(dealer, "POST", "inference/deal", {
        "query": query, "model": "small_cnn", "image_size": SIZE, "batch": len(x),
        "party0": hospitals[0].name, "party1": hospitals[1].name}).json()
    bodies = [{"query": query, "batch": len(x), "image": {"seed": seed.hex()},
               "material": material["party0"]},
              {"query": query, "batch": len(x), "image": words_to_json(share1["image"]),
               "material": material["party1"]}]

    def send(parties: tuple = (0, 1)) -> list:
        results: list = [None, None]

        def ask(party: int) -> None:
            try:
                results[party] = call_domain(hospitals[party], "POST",
                                             f"inference/{offered[party].request_id}/query",
                                             bodies[party]).json()
            except DomainError as exc:
                results[party] = exc

        threads = [threading.Thread(target=ask, args=(p,)) for p in parties]
        [t.start() for t in threads]
        [t.join() for t in threads]
        return results

    return [send, bodies]


def test_a_private_prediction_agrees_with_pytorch_and_spends_the_budget(service):
    domains, hospitals, model, offered, inference = service
    x = np.random.default_rng(3).random((2, 1, SIZE, SIZE)).astype(np.float32)
    answer = inference.predict(x)
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(answer.logits - want).max() < 2e-3
    assert answer.labels.tolist() == want.argmax(1).tolist()
    assert answer.budget == {hospitals[0].name: (2, 8), hospitals[1].name: (2, 8)}
    assert set(answer.seconds) == {"share", "dealer", "computing hospitals"}
    with pytest.raises(DomainError, match="query budget .* spent: 2 of 8"):
        inference.predict(np.concatenate([x, x, x, x[:1]]))  # 7 more X-rays: past it
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
    """Royal Infirmary (party 1) has a query open, waiting for St Mary's first round; a
    round sent in St Mary's name without the key only the two hospitals share is refused,
    and one for a query that is not open is not even read."""
    import secrets
    import threading
    import time

    domains, hospitals, model, offered, inference = service
    query = secrets.token_hex(16)
    x = np.zeros((1, 1, SIZE, SIZE), dtype=np.float32)
    send, _ = _ask_both(hospitals[:2], hospitals[2], offered, query, x)
    waiting = threading.Thread(target=send, kwargs={"parties": (1,)})
    waiting.start()  # party 1 only: it opens the query and waits for party 0
    url = f"{hospitals[1].url}/pneumosyft/inference/exchange/{query}/0"
    headers = {"X-PneumoSyft-Member": hospitals[0].name, "X-PneumoSyft-MAC": "00" * 32}
    deadline = time.monotonic() + 8
    while True:
        forged = requests.post(url, data=b"\0" * 64, timeout=60, headers=headers)
        if forged.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert forged.status_code == 403 and "not the other computing hospital" in forged.text
    unknown = requests.post(url.replace(query, "ab" * 16), data=b"\0" * 64, timeout=60,
                            headers=headers)
    assert unknown.status_code == 404
    waiting.join(timeout=60)


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


def test_a_query_id_serves_one_query_only(service):
    """Two queries under one dealer's masks would show each hospital the difference of the
    images (and, opened for comparisons, the first layer's weights): a repeat is refused."""
    import secrets

    domains, hospitals, model, offered, inference = service
    x = np.random.default_rng(9).random((1, 1, SIZE, SIZE)).astype(np.float32)
    send, _ = _ask_both(hospitals[:2], hospitals[2], offered, secrets.token_hex(16), x)
    first = send()
    assert all(isinstance(answer, dict) for answer in first), first
    again = send()
    assert all(isinstance(a, DomainError) and "used before" in str(a) for a in again), again


def test_two_services_between_the_same_hospitals_do_not_pair(service):
    """A second service (another request at each hospital) cannot be run against the first
    one's other half: the link between the hospitals is keyed by the service's id."""
    domains, hospitals, model, offered, inference = service
    _, weights = model_and_weights(SIZE, seed=6)
    other = offer_model(hospitals[:2], dealer=hospitals[2].name, weights=weights,
                        image_size=SIZE, queries=5, reason="another model")
    domains[0].admin.approve(other[0].request_id)
    mixed = PrivateInference(hospitals[:2], hospitals[2], [other[0], offered[1]],
                             image_size=SIZE)
    with pytest.raises(DomainError, match="between the computing hospitals"):
        mixed.predict(np.zeros((1, 1, SIZE, SIZE), dtype=np.float32))


def test_what_an_outsider_or_a_big_ask_costs_is_bounded(service):
    """The token-less exchange answers a 256 MB round announced for no open query before
    reading a byte of it; the dealer refuses to deal more than one query may ask."""
    import http.client
    from urllib.parse import urlparse

    from scientist.federated import call_domain

    domains, hospitals, *_ = service
    royal = urlparse(hospitals[1].url)
    connection = http.client.HTTPConnection(royal.hostname, royal.port, timeout=30)
    connection.putrequest("POST", f"/pneumosyft/inference/exchange/{'cd' * 16}/0")
    connection.putheader("Content-Length", str(256 * 2**20))
    connection.putheader("X-PneumoSyft-Member", hospitals[0].name)
    connection.endheaders()  # and not one byte of the body
    answer = connection.getresponse()
    assert answer.status == 404 and b"no such query open" in answer.read()
    connection.close()
    with pytest.raises(DomainError, match="more than one query may ask"):
        call_domain(hospitals[2], "POST", "inference/deal", {
            "query": "ef" * 16, "model": "small_cnn", "image_size": 128, "batch": 100,
            "party0": hospitals[0].name, "party1": hospitals[1].name})

