"""The catalogue recognises the hospital's vetted plans by their source, and nothing else."""

from __future__ import annotations

import inspect

import numpy as np

from common.models import build_model
from common.aggregation import RoundSpec
from common.sealing import generate_keypair, key_to_text
from common.training import weights_to_numpy
from common.training_config import default_training_config
from common.vetted_plans import evaluate_xray_plan, train_xray_plan
from conftest import PROJECT_ROOT
from domain_setup.catalogue import CATALOGUE, constant_problems, fingerprint, identify, input_problems
from domain_setup.policy_files import load_approval_rules
from domain_setup.verdicts import judge

RULES = load_approval_rules(PROJECT_ROOT / "policies" / "approval.yaml")
TRAIN_INPUTS = {"images": "xray/train_images", "labels": "xray/train_labels"}
TRAIN_CONSTANTS = {"config": default_training_config(), "initial_weights": {}}


def test_every_vetted_plan_is_recognised_under_any_name_and_decorator():
    for plan in CATALOGUE:
        source = inspect.getsource(plan.function)
        assert identify(source) is plan
        renamed = source.replace(f"def {plan.function.__name__}(", "def my_plan_7f3a(", 1)
        assert identify("@sy.syft_function(name='x')\n" + renamed) is plan
    assert len({plan.fingerprint for plan in CATALOGUE}) == len(CATALOGUE)


def test_one_changed_line_makes_custom_code():
    source = inspect.getsource(train_xray_plan)
    changed = source.replace('initial_weights=initial_weights or None', 'initial_weights=None')
    assert changed != source and identify(changed) is None
    assert fingerprint("x = 1") is None and fingerprint("def f(:") is None
    verdict = judge(changed, inputs=TRAIN_INPUTS, constants=TRAIN_CONSTANTS, rules=RULES)
    assert verdict.kind == "custom" and verdict.needs_override
    assert verdict.headline == "custom code: needs an admin's review"


def test_a_vetted_plan_with_fitting_constants_needs_no_override():
    verdict = judge(inspect.getsource(train_xray_plan), inputs=TRAIN_INPUTS,
                    constants=TRAIN_CONSTANTS, rules=RULES)
    assert (verdict.kind, verdict.plan, verdict.needs_override) == ("vetted", "train", False)
    assert len(verdict.code_sha256) == 64


def test_inputs_must_bind_whole_assets_of_the_right_split():
    train = CATALOGUE[0]
    assert input_problems(train, TRAIN_INPUTS) == []
    assert input_problems(train, {"images": "xray/test_images", "labels": "xray/train_labels"}) \
        == ["images must be a dataset's whole train_images asset, got xray/test_images"]
    assert input_problems(train, {"images": "object 1234", "labels": "xray/train_labels"})
    assert "several datasets" in input_problems(
        train, {"images": "xray/train_images", "labels": "other/train_labels"})[0]
    assert input_problems(train, {"images": "xray/train_images"})[0].startswith("train takes")


def test_constants_are_checked_against_the_schema():
    train, evaluate, secure = CATALOGUE[:3]
    assert constant_problems(train, {"config": {"epochs": 2}, "initial_weights": {}}) == [
        "config lacks batch_size, lr, model, seed"]
    too_many = dict(default_training_config(), epochs=500)
    verdict = judge(inspect.getsource(train_xray_plan), inputs=TRAIN_INPUTS,
                    constants={"config": too_many, "initial_weights": {}}, rules=RULES)
    assert verdict.kind == "violating" and "config: epochs=500 exceeds the limit of 20" in \
        verdict.reasons
    weights = weights_to_numpy(build_model("small_cnn"))
    assert constant_problems(evaluate, {"weights": weights,
                                        "config": default_training_config()}) == []
    weights["classifier.weight"] = np.zeros((3, 3), dtype=np.float32)
    assert "classifier.weight" in constant_problems(
        evaluate, {"weights": weights, "config": default_training_config()})[0]
    keys = [key_to_text(generate_keypair()[1]) for _ in range(2)]
    spec = RoundSpec.new(keys, total_samples=480).to_constant()
    good = {"config": default_training_config(), "initial_weights": {}, "aggregator_keys": spec}
    assert constant_problems(secure, good) == []
    for bad, reason in (({"public_keys": keys}, "aggregator_keys must be {'round'"),
                        ({**spec, "public_keys": keys[:1]}, "a round needs 2 to"),
                        ({**spec, "public_keys": keys * 2}, "names the same party twice"),
                        ({**spec, "round": "r1"}, "32 lowercase hex digits"),
                        ({**spec, "total_samples": 0}, "total_samples must be")):
        problems = constant_problems(secure, {**good, "aggregator_keys": bad})
        assert len(problems) == 1 and reason in problems[0], (bad, problems)
    assert judge(inspect.getsource(evaluate_xray_plan), inputs=TRAIN_INPUTS,
                 constants={"weights": weights, "config": default_training_config()},
                 rules=RULES).kind == "violating"


def test_a_dp_plan_asks_for_an_epsilon_and_never_sets_delta_or_noise():
    by_name = {plan.name: plan for plan in CATALOGUE}
    train, evaluate = by_name["train_private"], by_name["evaluate_private"]
    good = {"config": default_training_config(), "initial_weights": {},
            "privacy": {"target_epsilon": 3.0, "max_grad_norm": 1.0}}
    assert constant_problems(train, good) == []
    for privacy in ({"target_epsilon": 3.0, "max_grad_norm": 1.0, "delta": 0.5},
                    {"target_epsilon": 3.0, "max_grad_norm": 1.0, "noise_multiplier": 0.0},
                    {"target_epsilon": 3.0}):
        assert constant_problems(train, {**good, "privacy": privacy}) == [
            "privacy must be {'target_epsilon': number, 'max_grad_norm': number} "
            "(delta and the noise are set by the domain)"]
    assert constant_problems(train, {**good, "privacy": {"target_epsilon": -1,
                                                         "max_grad_norm": 1.0}}) == [
        "privacy.target_epsilon must be a number above 0 and at most 100"]
    weights = weights_to_numpy(build_model("small_cnn"))
    assert constant_problems(evaluate, {"weights": weights, "config": default_training_config(),
                                        "privacy": {"target_epsilon": 1.0}}) == []

