"""Every value that leaves a domain is bounded: the attacks on what a domain releases around
its sandbox, run for real against two hospitals started with the shipped policies/ (DP
required on the X-rays), each proving its code ran and naming the refusal it now gets.

1. a fake federation party            6. an exception named after private labels
2. hospitals handed different models  7. an evaluation used as a label oracle
3. DP noise from a seed one knows     8. writing over another account's blob
4. un-noised values beside DP weights 9. a result too large, decoded before refusal
5. farming refunds with failures
(10, the stock tutorial, is test_stock_tutorial.py.)
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import requests

from common.aggregation import RoundSpec, model_digest
from common.errors import DomainError
from common.models import build_model
from common.sealing import generate_keypair, key_to_text
from common.training import weights_to_numpy
from conftest import OTHER_RESEARCHER, RESEARCHER
from demos.federated import start_hospitals
from domain_setup.server.privacy_ledger import PrivacyLedger
from domain_setup.vetting.registry import plan_kind
from scientist import TrainingPlan, connect
from scientist.federated import aggregation_inputs, join, new_round
from scientist.plans import evaluate_xray_plan
from scientist.privacy import (evaluate_private_xray_plan, private_evaluation,
                               private_training, train_private_xray_plan)
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain
PLAN = TrainingPlan(epochs=1, batch_size=32)
DELTA = 1e-5


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Two hospitals on the shipped policies/ (300 synthetic X-rays each), one federation."""
    domains = list(start_hospitals(tmp_path_factory.mktemp("shipped"), 600, 28,
                                   ("Shipped North", "Shipped South"),
                                   partitionings={"IID": None}, policies=()).values())
    try:
        hospitals = [join(str(d.researcher_file(RESEARCHER))) for d in domains]
        yield domains, hospitals
    finally:
        for domain in domains:
            domain.stop()


def _submit(hospital, plan, constants, inputs=None, reason="release-bounds test"):
    return submit_plan(hospital.client, plan,
                       inputs=inputs or split_assets(hospital.client, "xray", "train"),
                       constants=constants, reason=reason)


def _auto_review(domain, submission) -> str:
    """`review auto --approve-compliant`, as an admin would run it; this request's outcome."""
    out = domain.cli("review", "auto", "--approve-compliant")
    lines = [line for line in out.splitlines() if line.startswith(submission.request_id)]
    assert lines, out
    return lines[0]


def _spent(domain) -> float:
    return PrivacyLedger.of_state(domain.state.root).account(RESEARCHER, "xray",
                                                             delta=DELTA).spent


def _post_aggregate(hospital, spec, ciphertexts):
    return requests.post(f"{hospital.url}/pneumosyft/federation/aggregate", timeout=120,
                         headers={"Authorization": f"Bearer {hospital.token}"},
                         json={"aggregator_keys": spec.to_constant(),
                               "ciphertexts": [base64.b64encode(c).decode()
                                               for c in ciphertexts]})


def _secure_dp_constants(spec, plan=PLAN, epsilon=1.0):
    return {"config": plan.config(), "initial_weights": {}, "aggregator_keys": spec.to_constant(),
            "privacy": private_training(epsilon)}


def sy_uid(request_id: str):
    from common import syft_compat

    return syft_compat.to_uid(request_id)


def _last_execution(domain, code_function: str) -> dict:
    entries = [e for e in domain.admin.audit(action="execution")
               if e.get("function") == code_function]
    assert entries, f"no execution of {code_function} audited"
    return entries[-1]


# --------------------------------------------------------------------------- 1

def test_1_a_fake_federation_party_is_refused_by_the_verdict_the_dispatch_and_aggregation(
        shipped):
    """Ada lists one real hospital's key and one she made. The verdict names the stranger,
    `review auto --approve-compliant` denies it, and even approved with an override the
    domain refuses the contribution before any image enters the sandbox."""
    from common.vetted_plans import secure_train_private_xray_plan

    domains, hospitals = shipped
    north, admin = hospitals[0], domains[0].admin
    _, her_public = generate_keypair()
    spec = RoundSpec.new([north.public_key, key_to_text(her_public)], total_samples=240,
                         model=model_digest(PLAN.config(), None))
    inputs = dict(split_assets(north.client, "xray", "train"), **aggregation_inputs(north))
    denied = _submit(north, secure_train_private_xray_plan, _secure_dp_constants(spec), inputs)
    shown = domains[0].cli("review", "show", denied.request_id)
    assert "VIOLATES the approval rules" in shown
    assert "the round's party 1 is not a member of this hospital's federation" in shown
    assert f"round     {spec.round_id}: parties this hospital, NOT A MEMBER" in shown
    assert _auto_review(domains[0], denied).endswith("denied")

    before = _spent(domains[0])
    overridden = _submit(north, secure_train_private_xray_plan, _secure_dp_constants(spec),
                         inputs)
    admin.approve(overridden.request_id, override=True, reason="testing the dispatch's check")
    with pytest.raises(DomainError, match="the round is refused: the round's party 1 is not a "
                                          "member of this hospital's federation"):
        run_approved(north.client, overridden)
    assert _spent(domains[0]) == before  # refused before the charge: nothing spent
    refused = _post_aggregate(north, spec, [b"x", b"y"])
    assert refused.status_code == 409 and "is not a member" in refused.json()["error"]


# --------------------------------------------------------------------------- 2

def test_2_hospitals_handed_different_models_cannot_open_the_round(shipped):
    """The model-inconsistency attack: one round id, but the learning rate differs between
    the two hospitals. Each request is consistent in itself and is approved; both train and
    seal; neither aggregation opens (the contributions were sealed to different models),
    so the researcher gets no partial sum."""
    from common.vetted_plans import secure_train_private_xray_plan

    domains, hospitals = shipped
    plans = (PLAN, TrainingPlan(epochs=1, batch_size=32, lr=0.05))
    train_assets = [split_assets(h.client, "xray", "train") for h in hospitals]
    first = new_round(hospitals, plans[0].config(), train_assets)
    specs = (first, RoundSpec(first.round_id, first.public_keys, first.total_samples,
                              model_digest(plans[1].config(), None)))
    results = []
    for domain, hospital, assets, plan, spec in zip(domains, hospitals, train_assets, plans,
                                                    specs):
        submission = _submit(hospital, secure_train_private_xray_plan,
                             _secure_dp_constants(spec, plan),
                             dict(assets, **aggregation_inputs(hospital)))
        domain.admin.approve(submission.request_id)  # consistent in itself: vetted, complies
        results.append(run_approved(hospital.client, submission))
    for j, (domain, hospital, spec) in enumerate(zip(domains, hospitals, specs)):
        refused = _post_aggregate(hospital, spec, [r["sealed_shares"][j] for r in results])
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == ("the plan raised SharingError inside the sandbox (the "
                                           "hospital admin has the details)")
        detail = [e for e in domain.admin.audit(action="federation.aggregate")
                  if e["target"] == spec.round_id][-1]["detail"]
        assert "cannot open" in detail  # the plan ran in the sandbox and refused to open


# --------------------------------------------------------------------------- 3 and 4

def test_3_4_dp_noise_and_batches_are_the_domains_and_nothing_un_noised_leaves(shipped):
    """Twice the same DP-SGD request (the same researcher seed, the same crafted initial
    weights: a network whose output is one image statistic, so that one epoch's loss would
    tell a chosen image's label): the two runs release different weights (the noise and
    the Poisson batches come from a seed the domain draws), and each releases exactly the
    kind's declared fields: weights (dp), n_samples and privacy (public), no loss."""
    domains, hospitals = shipped
    north = hospitals[0]
    crafted = {name: np.zeros_like(value)
               for name, value in weights_to_numpy(build_model("small_cnn")).items()}
    bias = next(name for name in crafted if name.startswith("features") and
                name.endswith("bias"))
    crafted[bias] = np.full_like(crafted[bias], 3.0)  # every image passes one statistic on
    released = []
    for _ in range(2):
        before = _spent(domains[0])
        submission = _submit(north, train_private_xray_plan,
                             {"config": PLAN.config(), "initial_weights": crafted,
                              "privacy": private_training(0.1)})
        domains[0].admin.approve(submission.request_id)  # vetted, complies: no override
        released.append(run_approved(north.client, submission))
        assert _spent(domains[0]) > before  # the run was charged: its code ran
    declared = {r.field for r in plan_kind("train_private").releases}
    assert [set(r) for r in released] == [declared, declared] == [
        {"weights", "n_samples", "privacy"}] * 2
    assert released[0]["privacy"]["epsilon"] == 0.1
    name = next(iter(released[0]["weights"]))
    assert not np.array_equal(released[0]["weights"][name], released[1]["weights"][name])


# --------------------------------------------------------------------------- 5

def test_5_a_failure_after_data_entered_keeps_its_charge_and_tells_no_value(shipped):
    """A DP run that fails once the private images are in the sandbox (resnet18's BatchNorm,
    which DP-SGD refuses inside the plan) tells the researcher a fixed line and keeps its
    charge: every try costs, failures are no way to farm refunds. Weights
    crafted to overflow (1e30) are a violation before anything runs, and a total below the
    hospital's own count, which once failed with a statistic of the weights and a refund,
    is a violation too."""
    from common.vetted_plans import secure_train_private_xray_plan

    domains, hospitals = shipped
    north = hospitals[0]
    resnet = TrainingPlan(model="resnet18", epochs=1, batch_size=32)
    before = _spent(domains[0])
    submission = _submit(north, train_private_xray_plan,
                         {"config": resnet.config(), "initial_weights": {},
                          "privacy": private_training(0.5)})
    domains[0].admin.approve(submission.request_id)  # vetted, complies
    with pytest.raises(DomainError) as caught:
        run_approved(north.client, submission)
    assert str(caught.value).split("failed: ", 1)[1] == (
        "the plan raised ValueError inside the sandbox (the hospital admin has the details)")
    entry = _last_execution(domains[0], submission.func_name)
    assert "cannot be trained with DP-SGD" in entry["detail"]  # it ran, inside
    assert entry["charge_kept"] == "yes" and _spent(domains[0]) > before
    account = PrivacyLedger.of_state(domains[0].state.root).account(RESEARCHER, "xray",
                                                                    delta=DELTA)
    assert not [r for r in account.releases if r.status == "refunded"]

    huge = {name: np.full_like(value, 1e30)
            for name, value in weights_to_numpy(build_model("small_cnn")).items()}
    crafted = _submit(north, train_private_xray_plan,
                      {"config": PLAN.config(), "initial_weights": huge,
                       "privacy": private_training(0.5)})
    assert "not finite or beyond ±1e+06" in domains[0].cli("review", "show",
                                                          crafted.request_id)
    spec = new_round(hospitals, PLAN.config())
    spec = RoundSpec(spec.round_id, spec.public_keys, 1, spec.model)
    tiny = _submit(north, secure_train_private_xray_plan, _secure_dp_constants(spec),
                   dict(split_assets(north.client, "xray", "train"),
                        **aggregation_inputs(north)))
    assert "the round's total of 1 images is below the 240 this hospital trains on" in \
        domains[0].cli("review", "show", tiny.request_id)
    outcomes = domains[0].cli("review", "auto", "--approve-compliant")
    assert f"{crafted.request_id}  " in outcomes and f"{tiny.request_id}  " in outcomes
    assert all(line.endswith("denied") for line in outcomes.splitlines()
               if line.startswith((crafted.request_id, tiny.request_id)))


# --------------------------------------------------------------------------- 6

def leak_labels_in_an_exception_name(images, labels):
    marker = "L" + "".join(str(int(v)) for v in labels[:300].reshape(-1).tolist())
    raise type(marker, (Exception,), {})("the name is the payload")


def test_6_an_exception_named_after_private_labels_reaches_the_researcher_as_exception(shipped):
    """Custom code, approved with an override as the README allows, raises an exception
    class named after 300 private labels. The researcher reads "Exception"; the admin's
    audit has the real name (so the code ran and raised it)."""
    domains, hospitals = shipped
    north = hospitals[0]
    submission = _submit(north, leak_labels_in_an_exception_name, {})
    domains[0].admin.approve(submission.request_id, override=True,
                             reason="testing what a failure releases")
    with pytest.raises(DomainError) as caught:
        run_approved(north.client, submission)
    assert str(caught.value).endswith("the plan raised Exception inside the sandbox (the "
                                      "hospital admin has the details)")
    assert not re.search(r"[01]{20}", str(caught.value))
    detail = _last_execution(domains[0], submission.func_name)["detail"]
    assert re.search(r"plan raised L[01]{240}", detail), detail
    # the override was for one run: calling the approved code again runs nothing
    with pytest.raises(DomainError, match="has run once already: an approval is for one run"):
        run_approved(north.client, submission)


# --------------------------------------------------------------------------- 7

def test_7_an_evaluation_is_no_label_oracle_under_the_shipped_policies(shipped):
    """Crafted weights whose score is one image statistic: a non-DP evaluation is a
    violation (its metrics are bounded only by trust), denied by `review auto`, refused to
    an approver without an override; the DP evaluation of the same weights is approved and
    its metrics are noisy (two releases of the same weights differ)."""
    domains, hospitals = shipped
    north, admin = hospitals[0], domains[0].admin
    crafted = weights_to_numpy(build_model("small_cnn"))
    test = split_assets(north.client, "xray", "test")
    oracle = _submit(north, evaluate_xray_plan, {"weights": crafted, "config": PLAN.config()},
                     inputs=test)
    shown = domains[0].cli("review", "show", oracle.request_id)
    assert "dataset xray requires differential privacy" in shown
    assert "releases  metrics [trusted]" in shown
    with pytest.raises(DomainError, match="violates the approval rules"):
        admin.approve(oracle.request_id)  # the CLI's reviewer refuses, and so does the domain:
    with pytest.raises(Exception, match="plan 'evaluate' VIOLATES the approval rules"):
        admin.syft_client().api.services.request.apply(uid=sy_uid(oracle.request_id))
    assert _auto_review(domains[0], oracle).endswith("denied")

    metrics = []
    for _ in range(2):
        private = _submit(north, evaluate_private_xray_plan,
                          {"weights": crafted, "config": PLAN.config(),
                           "privacy": private_evaluation(1.0)}, inputs=test)
        domains[0].admin.approve(private.request_id)  # vetted, complies: no override
        released = run_approved(north.client, private)
        assert set(released) == {"metrics", "privacy"}
        metrics.append(released["metrics"])
    assert metrics[0]["roc"] != metrics[1]["roc"]


# --------------------------------------------------------------------------- 8

def test_8_syft_write_and_link_paths_keep_to_their_owners(shipped, tmp_path):
    """With her own syft client, Ada tries syft's write paths on objects that are not hers:
    overwrite a dataset mock's blob, name an extension with '/', store a twin that would
    open a blob to everyone, resolve another account's user record. Each is refused with
    a reason and no server path; Grace still reads the mock the admin uploaded."""
    import syft as sy
    from syft.service.action.action_object import ActionObject
    from syft.types.blob_storage import CreateBlobStorageEntry
    from syft.types.twin_object import TwinObject

    domains, hospitals = shipped
    ada = hospitals[0].client
    grace = connect(connection_file=domains[0].researcher_file(OTHER_RESEARCHER,
                                                               tmp_path / "grace.json"))
    asset = ada.datasets["xray"].assets["train_labels"]
    mock = ada.api.services.action.get_mock(asset.action_id)
    blob_id = mock.syft_blob_storage_entry_id
    assert blob_id is not None  # the mock's blob: its id is in every researcher's hands
    before = np.asarray(grace.datasets["xray"].assets["train_labels"].mock).copy()

    def refusal(call) -> str:
        with pytest.raises(Exception) as caught:
            result = call()
            if isinstance(result, sy.SyftError):
                raise RuntimeError(result.message)
        text = str(caught.value)
        assert str(domains[0].state.root) not in text and "/blob/" not in text
        return text

    assert "allocated by another account" in refusal(
        lambda: ada.api.services.blob_storage.write_to_disk(uid=blob_id, data=b"\0" * 64))
    assert np.array_equal(np.asarray(grace.datasets["xray"].assets["train_labels"].mock),
                          before)
    assert "extensions are up to 4" in refusal(lambda: ada.api.services.blob_storage.allocate(
        obj=CreateBlobStorageEntry(file_size=8, type_=bytes, extensions=["/../../x"])))
    # her own blob: written once, of its size (the path a stock client's send() takes)
    deposit = ada.api.services.blob_storage.allocate(obj=CreateBlobStorageEntry(
        file_size=8, type_=bytes))
    entry = deposit.blob_storage_entry_id
    assert "exactly its allocated 8 bytes" in refusal(
        lambda: ada.api.services.blob_storage.write_to_disk(uid=entry, data=b"x" * 9))
    ada.api.services.blob_storage.write_to_disk(uid=entry, data=b"x" * 8)
    assert "already written" in refusal(
        lambda: ada.api.services.blob_storage.write_to_disk(uid=entry, data=b"y" * 8))
    twin = TwinObject(private_obj=ActionObject.from_obj(np.zeros(3)),
                      mock_obj=ActionObject.from_obj(np.zeros(3)))
    twin.mock_obj.syft_blob_storage_entry_id = blob_id
    assert "only a data owner stores objects with a private and a mock part" in refusal(
        lambda: ada.api.services.action.set(twin, ignore_detached_objs=True))
    foreign = ActionObject.from_obj(np.zeros(3))
    foreign.syft_blob_storage_entry_id = blob_id
    assert "only blobs its sender allocated" in refusal(
        lambda: ada.api.services.action.set(foreign, ignore_detached_objs=True))
    from syft.service.user.user_service import UserService
    from syft.store.linked_obj import LinkedObject

    grace_user = grace.api.services.user.get_current_user()
    link = LinkedObject(server_uid=domains[0].admin.syft_client().id, service_type=UserService,
                        object_type=type(grace_user), object_uid=grace_user.id)
    assert "links to a request, code or a code status only" in refusal(
        lambda: ada.api.services.notifications.resolve_object(linked_obj=link))


# --------------------------------------------------------------------------- 9

def return_two_hundred_megabytes(images):
    return {"blob": bytes(200 * 1024 * 1024)}


def _peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_9_a_result_over_the_custom_limit_is_refused_by_its_size_before_decoding(shipped):
    """Custom code returning 200 MB (the limit is 1 MB): the sandbox refuses it by its
    encoded size inside (the admin's audit has the size the code produced), the server's
    peak memory does not take the 200 MB, and the researcher reads a fixed line."""
    domains, hospitals = shipped
    north = hospitals[0]
    submission = _submit(north, return_two_hundred_megabytes, {},
                         inputs={"images": split_assets(north.client, "xray", "train")["images"]})
    domains[0].admin.approve(submission.request_id, override=True, reason="size test")
    pid = domains[0].state.read_pid()
    peak_before = _peak_rss_mb(pid)
    with pytest.raises(DomainError) as caught:
        run_approved(north.client, submission)
    assert str(caught.value).endswith("result withheld: it is not plain data or is too large "
                                      "(the hospital admin has the details)")
    detail = _last_execution(domains[0], submission.func_name)["detail"]
    assert "exceeds the 1048576-byte output limit" in detail
    assert int(re.search(r"result of (\d+) bytes", detail).group(1)) > 200 * 2 ** 20
    assert _peak_rss_mb(pid) - peak_before < 100
