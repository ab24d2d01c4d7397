"""The plan-kind registry: vetted plans recognised by their source and nothing else, their
constants' schemas, and what each kind releases, every field declared with its bound."""

from __future__ import annotations

import inspect

import numpy as np

from common.models import build_model
from common.aggregation import RoundSpec, model_digest
from common.sealing import generate_keypair, key_to_text
from common.training import weights_to_numpy
from common.training_config import default_training_config
from common.vetted_plans import evaluate_xray_plan, train_xray_plan
from conftest import PROJECT_ROOT
from domain_setup.policy.approval import load_approval_rules
from domain_setup.vetting.constants import constant_problems
from domain_setup.vetting.registry import (CUSTOM, all_kinds, fingerprint, identify,
                                           input_problems, plan_kind)
from domain_setup.vetting.verdicts import judge

RULES = load_approval_rules(PROJECT_ROOT / "policies" / "approval.yaml")
TRAIN_INPUTS = {"images": "xray/train_images", "labels": "xray/train_labels"}
TRAIN_CONSTANTS = {"config": default_training_config(), "initial_weights": {}}
VETTED = [kind for kind in all_kinds().values() if kind.function is not None]


def test_every_vetted_plan_is_recognised_under_any_name_and_decorator():
    for plan in VETTED:
        source = inspect.getsource(plan.function)
        assert identify(source) is plan
        renamed = source.replace(f"def {plan.function.__name__}(", "def my_plan_7f3a(", 1)
        assert identify("@sy.syft_function(name='x')\n" + renamed) is plan
    assert len({plan.fingerprint for plan in VETTED}) == len(VETTED) == 10


def test_one_changed_line_makes_custom_code():
    source = inspect.getsource(train_xray_plan)
    changed = source.replace('initial_weights=initial_weights or None', 'initial_weights=None')
    assert changed != source and identify(changed).name == CUSTOM
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
    train = plan_kind("train")
    assert input_problems(train, TRAIN_INPUTS) == []
    assert input_problems(train, {"images": "xray/test_images", "labels": "xray/train_labels"}) \
        == ["images must be a dataset's whole train_images asset, got xray/test_images"]
    assert input_problems(train, {"images": "object 1234", "labels": "xray/train_labels"})
    assert "several datasets" in input_problems(
        train, {"images": "xray/train_images", "labels": "other/train_labels"})[0]
    assert input_problems(train, {"images": "xray/train_images"})[0].startswith("train takes")


def test_constants_are_checked_against_the_schema():
    train, evaluate, secure = (plan_kind(n) for n in ("train", "evaluate", "secure_train"))
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
    digest = model_digest(default_training_config(), None)
    spec = RoundSpec.new(keys, total_samples=480, model=digest).to_constant()
    good = {"config": default_training_config(), "initial_weights": {}, "aggregator_keys": spec}
    assert constant_problems(secure, good) == []
    # a round whose model is another config (lr 0 at every hospital but one, say)
    other = model_digest(dict(default_training_config(), lr=0.0), None)
    assert constant_problems(secure, {**good, "aggregator_keys": {**spec, "model": other}}) == [
        "aggregator_keys: the round's model digest is not this request's config and initial "
        "weights: every party of a round must train the same model"]
    for bad, reason in (({"public_keys": keys}, "aggregator_keys must be {'round'"),
                        ({**spec, "public_keys": keys[:1]}, "a round needs 2 to"),
                        ({**spec, "public_keys": keys * 2}, "names the same party twice"),
                        ({**spec, "round": "r1"}, "32 lowercase hex digits"),
                        ({**spec, "total_samples": 0}, "total_samples must be"),
                        ({**spec, "model": "ab"}, "model must be a model_digest")):
        problems = constant_problems(secure, {**good, "aggregator_keys": bad})
        assert len(problems) == 1 and reason in problems[0], (bad, problems)
    assert judge(inspect.getsource(evaluate_xray_plan), inputs=TRAIN_INPUTS,
                 constants={"weights": weights, "config": default_training_config()},
                 rules=RULES).kind == "violating"


def test_a_dp_plan_asks_for_an_epsilon_and_never_sets_delta_or_noise():
    train, evaluate = plan_kind("train_private"), plan_kind("evaluate_private")
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



def test_the_readmes_release_table_is_the_registrys():
    """The README's table "what leaves the domain" is rendered from the registry; editing
    a kind's declarations without the README (or the other way round) fails here."""
    from domain_setup.vetting.registry import release_table, release_table_markdown

    readme = (PROJECT_ROOT / "README.md").read_text()
    assert release_table_markdown() in readme
    assert {kind for kind, *_ in release_table()} == set(all_kinds())


def test_a_plan_kind_is_its_function_and_one_file_the_kinds_package_finds():
    """Each module of domain_setup/vetting/kinds/ registers exactly one kind, named after the
    module, and nothing else lists the kinds: adding one is its function in
    common/vetted_plans.py and its file there."""
    import importlib
    import pkgutil

    import domain_setup.vetting.kinds as kinds_package

    modules = sorted(m.name for m in pkgutil.iter_modules(kinds_package.__path__))
    assert modules == sorted(all_kinds())
    for module in modules:
        assert importlib.import_module(f"{kinds_package.__name__}.{module}").KIND is \
            all_kinds()[module]
    vetted = {k.function.__name__ for k in VETTED}
    import common.vetted_plans as plans

    assert vetted == {name for name in dir(plans) if name.endswith("_plan")}
