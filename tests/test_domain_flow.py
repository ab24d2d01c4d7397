"""The whole path on a live domain: mock trial, submit, approve via CLI, weights, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import DomainError
from scientist import TrainingPlan
from scientist.plans import evaluate_xray_plan, train_xray_plan
from scientist.submission import (
    request_status,
    run_approved,
    split_assets,
    submit_plan,
    wait_for_approval,
)

pytestmark = pytest.mark.domain


def _pending_id(domain, submission) -> str:
    listing = domain.cli("review", "list")
    assert submission.request_id in listing
    return submission.request_id


def test_train_approve_fetch_evaluate(hospital, ada):
    train = split_assets(ada, "xray", "train")
    plan = TrainingPlan(model="small_cnn", epochs=2, batch_size=32)

    mock_result = plan.run_locally(train["images"].mock, train["labels"].mock)
    assert set(mock_result) == {"weights", "history", "n_samples", "validation"}

    submission = submit_plan(ada, train_xray_plan, inputs=train,
                             constants={"config": plan.config(), "initial_weights": {}},
                             reason="two epochs of a small CNN")
    assert request_status(ada, submission) == ("pending", "")
    shown = hospital.cli("review", "show", _pending_id(hospital, submission))
    assert "ada@pneumosyft-research.org" in shown
    assert "train_images" in shown and "complies" in shown
    assert "def train_xray_plan" in shown

    hospital.cli("review", "approve", submission.request_id)
    wait_for_approval(ada, submission, timeout=60, progress=False)
    trained = run_approved(ada, submission)

    weights = trained["weights"]
    assert weights.keys() == mock_result["weights"].keys()
    for name, array in weights.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32, name
        assert array.shape == mock_result["weights"][name].shape
    assert trained["n_samples"] == 320  # 80 % of the 400 uploaded images
    assert len(trained["history"]["loss"]) == 2

    test = split_assets(ada, "xray", "test")
    evaluation = submit_plan(ada, evaluate_xray_plan, inputs=test,
                             constants={"weights": weights, "config": plan.config()},
                             reason="held-out evaluation")
    hospital.cli("review", "approve", evaluation.request_id)
    wait_for_approval(ada, evaluation, timeout=60, progress=False)
    metrics = run_approved(ada, evaluation)["metrics"]
    assert metrics["n_samples"] == 80
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["auc"] <= 1.0
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp + fn + tp == 80


def test_denied_request_reports_the_reason(hospital, ada):
    train = split_assets(ada, "xray", "train")
    plan = TrainingPlan(epochs=1)
    submission = submit_plan(ada, train_xray_plan, inputs=train,
                             constants={"config": plan.config(), "initial_weights": {}},
                             reason="please")
    hospital.cli("review", "deny", submission.request_id, "--reason", "not this week")
    with pytest.raises(DomainError, match="not this week"):
        wait_for_approval(ada, submission, timeout=30, progress=False)


def test_unknown_request_id_is_a_clear_error(hospital):
    bad = hospital.attempt("review", "show", "0123456789abcdef")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: no request with id 0123456789abcdef"
    malformed = hospital.attempt("review", "approve", "../../etc/passwd")
    assert malformed.returncode == 1
    assert "invalid request id" in malformed.stderr


def test_submission_needs_a_reason(ada):
    train = split_assets(ada, "xray", "train")
    with pytest.raises(DomainError, match="reason"):
        submit_plan(ada, train_xray_plan, inputs=train,
                    constants={"config": TrainingPlan().config(), "initial_weights": {}},
                    reason=" ")


def test_nested_code_is_a_violation_that_needs_override(hospital, ada, tmp_path):
    """Approving applies every nested function too; only the outer one is rule-checked."""
    import importlib.util

    import syft as sy

    train = split_assets(ada, "xray", "train")
    inner = submit_plan(ada, train_xray_plan, inputs=train,
                        constants={"config": TrainingPlan(epochs=1).config(),
                                   "initial_weights": {}},
                        reason="inner function of a nested request")
    # syft reads a function's source from its file, and finds nested calls by name in it
    module_file = tmp_path / "nested_plan.py"
    module_file.write_text(
        "def launches_inner(datasite, train_images):\n"
        f"    job = datasite.launch_job({inner.func_name}, train_images=train_images)\n"
        "    return {'n': 0}\n")
    spec = importlib.util.spec_from_file_location("nested_plan", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outer = sy.syft_function(
        input_policy=sy.MixedInputPolicy(client=ada, train_images=train["images"]),
        output_policy=sy.SingleExecutionExactOutput())(module.launches_inner)
    request_id = str(ada.code.request_code_execution(outer, reason="nested").id.no_dash)

    shown = hospital.cli("review", "show", request_id)
    assert "nested code" in shown
    refused = hospital.attempt("review", "approve", request_id)
    assert refused.returncode == 1
    assert "violates the approval rules" in refused.stderr and "nested code" in refused.stderr
