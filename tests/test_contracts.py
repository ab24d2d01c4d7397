"""Output contracts (each plan kind's, domain_setup/vetting/kinds/) against the real vetted
plans.

The plans run locally on small synthetic data; their real outputs must pass, and each
kind of tampering must be refused with one line that names the path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common import sealing, wire
from common.models import build_model
from common.training import ROC_THRESHOLDS, weights_to_numpy
from common.aggregation import RoundSpec, model_digest
from common.vetted_plans import (aggregate_round_plan, evaluate_xray_plan,
                                 secure_train_xray_plan, train_xray_plan)
from datasets.xray import generate
from domain_setup.sandbox import ContractViolation, PlanError, decode, encode
from domain_setup.vetting.contract_parts import MAX_PARTIAL_SUM_BYTES, ContractContext
from domain_setup.vetting.registry import ReleaseRefused, all_kinds, check_result

CONFIG = {"model": "small_cnn", "epochs": 1, "lr": 1e-3, "batch_size": 16, "seed": 0}
N_PARTIES = 3


# --------------------------------------------------------------------------- real outputs

@pytest.fixture(scope="module")
def data():
    return generate(64, size=28, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    return train_xray_plan(*data, CONFIG, None)


@pytest.fixture(scope="module")
def evaluated(data, trained):
    return evaluate_xray_plan(*data, trained["weights"], CONFIG)


@pytest.fixture(scope="module")
def keys():
    return [sealing.generate_keypair() for _ in range(N_PARTIES)]


def _key_asset(private: bytes) -> np.ndarray:
    return np.frombuffer(private, dtype=np.uint8).copy()


@pytest.fixture(scope="module")
def spec(keys):
    return RoundSpec.new([sealing.key_to_text(pk) for _, pk in keys], total_samples=96,
                         model=model_digest(CONFIG, None))


@pytest.fixture(scope="module")
def secure_runs(data, keys, spec):
    """Three hospitals (32 images each) contribute to one round of three parties."""
    images, labels = data
    return [secure_train_xray_plan(images[s], labels[s], CONFIG, None, spec.to_constant(),
                                   _key_asset(private))
            for s, (private, _) in zip((slice(0, 32), slice(32, 64), slice(0, 32)), keys)]


@pytest.fixture(scope="module")
def aggregated(keys, spec, secure_runs):
    """Aggregator 1 opens and sums the three contributions addressed to it."""
    ciphertexts = [run["sealed_shares"][1] for run in secure_runs]
    return aggregate_round_plan(_key_asset(keys[1][0]), spec.to_constant(), ciphertexts)


TRAIN = ContractContext(model="small_cnn", epochs=1, n_samples=64)
EVALUATE = ContractContext(model="small_cnn", n_samples=64)
SECURE = ContractContext(model="small_cnn", epochs=1, n_samples=32, n_parties=N_PARTIES,
                         own_index=0)
AGGREGATE = ContractContext(n_ciphertexts=N_PARTIES)
CUSTOM = ContractContext()


def refused(kind: str, result, context: ContractContext) -> str:
    """The one-line message with which `result` is withheld."""
    with pytest.raises(ContractViolation) as caught:
        check_result(kind, result, context)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def changed(result: dict, path: tuple, value=None, *, delete: bool = False) -> dict:
    """A copy of `result` with the item at `path` replaced (or deleted); dicts along the
    path are copied, the fixture is untouched."""
    out = dict(result)
    if len(path) == 1:
        if delete:
            del out[path[0]]
        else:
            out[path[0]] = value
        return out
    out[path[0]] = changed(result[path[0]], path[1:], value, delete=delete)
    return out


# --------------------------------------------------------------------------- passing

def test_violation_is_a_plan_error_and_kinds_are_listed():
    assert issubclass(ContractViolation, PlanError)
    assert sorted(all_kinds()) == ["aggregate", "custom", "evaluate", "evaluate_private",
                                   "federated_job", "federated_job_private",
                                   "private_inference", "secure_train",
                                   "secure_train_private", "train", "train_private"]


def test_real_outputs_pass_also_after_the_plain_data_round_trip(trained, evaluated, secure_runs,
                                                                  aggregated):
    """What the vetted plans really return keeps its contract, both as returned and as
    the server sees it after the sandbox boundary (decode(encode(...)), read-only arrays)."""
    cases = [("train", trained, TRAIN), ("evaluate", evaluated, EVALUATE),
             ("secure_train", secure_runs[0], SECURE),
             ("secure_train", secure_runs[1], ContractContext(
                 model="small_cnn", epochs=1, n_samples=32, n_parties=N_PARTIES, own_index=1)),
             ("aggregate", aggregated, AGGREGATE),
             ("aggregate", aggregated, ContractContext(model="small_cnn", n_parties=N_PARTIES,
                                                       n_ciphertexts=N_PARTIES)),
             ("custom", {"mean": 0.5, "hist": np.arange(10), "tag": ("a", b"b", None)}, CUSTOM)]
    for kind, result, context in cases:
        check_result(kind, result, context)
        check_result(kind, decode(encode(result), max_bytes=1 << 26), context)


def test_resnet18_weights_with_batchnorm_buffers_pass():
    """resnet18's state dict has running statistics and num_batches_tracked (float32 in
    weights_to_numpy); a real 1-epoch run on 32 images at 32 px passes."""
    images, labels = generate(32, size=32, seed=1)
    result = train_xray_plan(images, labels, dict(CONFIG, model="resnet18"), None)
    assert "bn1.num_batches_tracked" in result["weights"]
    check_result("train", result, ContractContext(model="resnet18", epochs=1, n_samples=32))


def test_sealed_share_lengths_are_exact_per_party_index(data):
    """With 11 parties, party 10's correction share has a two-digit index in its wire
    header, so its length is computed apart from party 0..9's; a real run passes and a
    correction one byte short is refused."""
    pairs = [sealing.generate_keypair() for _ in range(11)]
    round_ = RoundSpec.new([sealing.key_to_text(pk) for _, pk in pairs], total_samples=16,
                           model=model_digest(CONFIG, None))
    images, labels = data[0][:16], data[1][:16]
    result = secure_train_xray_plan(images, labels, CONFIG, None, round_.to_constant(),
                                    _key_asset(pairs[10][0]))
    context = ContractContext(model="small_cnn", epochs=1, n_samples=16, n_parties=11,
                              own_index=10)
    check_result("secure_train", result, context)
    shares = list(result["sealed_shares"])
    length = len(shares[10])
    shares[10] = shares[10][:-1]
    assert refused("secure_train", changed(result, ("sealed_shares",), shares), context) == (
        f"sealed_shares[10] is {length - 1} bytes; a sealed correction share of the small_cnn "
        f"model for party 10 is {length} bytes")


# --------------------------------------------------------------------------- train

def test_train_keys(trained):
    assert refused("train", changed(trained, ("history",), delete=True), TRAIN) == \
        "result has keys n_samples, validation, weights; expected history, n_samples, " \
        "validation, weights"
    assert refused("train", changed(trained, ("extra",), 1), TRAIN) == \
        "result has keys history, n_samples, validation, weights, extra; expected history, " \
        "n_samples, validation, weights"
    assert refused("train", [trained], TRAIN) == \
        "result is a list; expected a dict with keys history, n_samples, validation, weights"


def test_train_weights(trained):
    name = "features.0.weight"
    wrong_shape = changed(trained, ("weights", name), np.zeros((8, 1, 5, 5), np.float32))
    assert refused("train", wrong_shape, TRAIN) == \
        "weights['features.0.weight'] has shape (8, 1, 5, 5); the small_cnn model has (8, 1, 3, 3)"
    missing = changed(trained, ("weights", "classifier.bias"), delete=True)
    assert refused("train", missing, TRAIN) == "weights is missing 'classifier.bias'"
    extra = changed(trained, ("weights", "secret"), np.zeros(3, np.float32))
    assert refused("train", extra, TRAIN) == "weights has unexpected secret"
    wide = changed(trained, ("weights", name), trained["weights"][name].astype(np.float64))
    assert refused("train", wide, TRAIN) == \
        "weights['features.0.weight'] has dtype float64; expected float32"
    tensor = changed(trained, ("weights", name), torch.from_numpy(trained["weights"][name]))
    assert refused("train", tensor, TRAIN) == \
        "weights['features.0.weight'] is a Tensor; expected a float32 numpy array"
    for bad, counts in ((math.nan, "1 NaN, 0 inf"), (math.inf, "0 NaN, 1 inf")):
        poisoned = trained["weights"][name].copy()
        poisoned[3, 0, 1, 2] = bad
        assert refused("train", changed(trained, ("weights", name), poisoned), TRAIN) == \
            f"weights['features.0.weight'] is not finite ({counts} of 72 values)"


def test_train_history(trained):
    loss = trained["history"]["loss"]
    assert refused("train", changed(trained, ("history", "loss"), loss * 2), TRAIN) == \
        "history.loss has 2 values; expected 1"
    assert refused("train", changed(trained, ("history", "loss"), [math.nan]), TRAIN) == \
        "history.loss[0] is not finite (nan)"
    three = ContractContext(model="small_cnn", epochs=3, n_samples=64)
    history = {"loss": [0.7, 0.6, math.nan], "accuracy": [0.5, 0.6, 0.7]}
    assert refused("train", changed(trained, ("history",), history), three) == \
        "history.loss[2] is not finite (nan)"
    assert refused("train", changed(trained, ("history", "accuracy"), [1.5]), TRAIN) == \
        "history.accuracy[0] is 1.5; expected a value in [0, 1]"
    assert refused("train", changed(trained, ("history", "loss"), [-0.1]), TRAIN) == \
        "history.loss[0] is -0.1; expected a value >= 0"
    assert refused("train", changed(trained, ("history", "loss"), ["0.5"]), TRAIN) == \
        "history.loss[0] is a str; expected a float"


def test_train_n_samples(trained):
    assert refused("train", changed(trained, ("n_samples",), 63), TRAIN) == \
        "n_samples is 63; the plan was given 64 images"
    assert refused("train", changed(trained, ("n_samples",), True), TRAIN) == \
        "n_samples is a bool (True); expected an int"


# --------------------------------------------------------------------------- evaluate

def test_evaluate_metrics(evaluated):
    metrics = evaluated["metrics"]
    renamed = {("AUC" if k == "auc" else k): v for k, v in metrics.items()}
    assert refused("evaluate", {"metrics": renamed}, EVALUATE) == (
        "metrics has keys accuracy, confusion_matrix, n_samples, roc, AUC; "
        "expected accuracy, auc, confusion_matrix, n_samples, roc")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    short = [[tn, fp], [fn, tp - 1]] if tp else [[tn - 1, fp], [fn, tp]]
    assert refused("evaluate", changed(evaluated, ("metrics", "confusion_matrix"), short),
                   EVALUATE) == "metrics.confusion_matrix sums to 63; the plan was given 64 images"
    negative = [[tn + 1, fp], [fn, -1]] if tp == 0 else [[tn, fp], [fn + tp + 1, -1]]
    assert refused("evaluate", changed(evaluated, ("metrics", "confusion_matrix"), negative),
                   EVALUATE) == "metrics.confusion_matrix[1][1] is -1; expected a non-negative int"
    fpr = metrics["roc"]["fpr"]
    assert refused("evaluate", changed(evaluated, ("metrics", "roc", "fpr"), fpr[:-1]),
                   EVALUATE) == f"metrics.roc.fpr has {len(ROC_THRESHOLDS) - 1} values; " \
                                f"expected {len(ROC_THRESHOLDS)}"
    assert refused("evaluate", changed(evaluated, ("metrics", "auc"), 1.2), EVALUATE) == \
        "metrics.auc is 1.2; expected a value in [0, 1]"
    assert refused("evaluate", changed(evaluated, ("metrics", "n_samples"), 65), EVALUATE) == \
        "metrics.n_samples is 65; the plan was given 64 images"
    check_result("evaluate", changed(evaluated, ("metrics", "auc"), None), EVALUATE)


def test_evaluate_plausibility(evaluated):
    """Accuracy must be what the confusion matrix says; ROC rates cannot rise with the
    threshold (both would otherwise be free room to smuggle bits out)."""
    metrics = evaluated["metrics"]
    other = metrics["accuracy"] / 2
    assert refused("evaluate", changed(evaluated, ("metrics", "accuracy"), other),
                   EVALUATE).startswith(f"metrics.accuracy is {other}; the confusion matrix gives")
    tpr = list(metrics["roc"]["tpr"])
    tpr[-1] = 1.0
    tpr[-2] = 0.0
    assert refused("evaluate", changed(evaluated, ("metrics", "roc", "tpr"), tpr), EVALUATE) == \
        "metrics.roc.tpr rises with the threshold; a ROC rate cannot"


# --------------------------------------------------------------------------- secure_train

def test_secure_train_shares(secure_runs):
    run = secure_runs[0]
    shares = run["sealed_shares"]
    assert refused("secure_train", changed(run, ("sealed_shares",), shares[:-1]), SECURE) == \
        "sealed_shares has 2 items; expected 3, one per party of the round"
    truncated = [shares[0], shares[1][:-16], shares[2]]
    assert refused("secure_train", changed(run, ("sealed_shares",), truncated), SECURE) == (
        f"sealed_shares[1] is {len(shares[1]) - 16} bytes; a sealed seed of the small_cnn "
        f"model for party 1 is {len(shares[1])} bytes")
    swapped = [shares[1], shares[0], shares[2]]  # the correction where a seed belongs
    assert refused("secure_train", changed(run, ("sealed_shares",), swapped), SECURE).startswith(
        f"sealed_shares[0] is {len(shares[1])} bytes; a sealed correction share")
    as_text = [shares[0], shares[1].hex(), shares[2]]
    assert refused("secure_train", changed(run, ("sealed_shares",), as_text), SECURE) == \
        "sealed_shares[1] is a str; expected bytes"
    assert refused("secure_train", changed(run, ("n_samples",), 64), SECURE) == \
        "n_samples is 64; the plan was given 32 images"
    assert refused("secure_train", changed(run, ("history", "loss"), [math.inf]), SECURE) == \
        "history.loss[0] is not finite (inf)"


# --------------------------------------------------------------------------- aggregate

def test_aggregate(aggregated):
    garbage = changed(aggregated, ("partial_sum",), b"\x80\x04\x95 not share data at all")
    assert refused("aggregate", garbage, AGGREGATE) == \
        "partial_sum is not share data (not PneumoSyft share data (bad magic bytes))"
    cut = changed(aggregated, ("partial_sum",), aggregated["partial_sum"][:-8])
    assert refused("aggregate", cut, AGGREGATE).startswith(
        "partial_sum is not share data (share data truncated: payload has")
    arrays = changed(aggregated, ("partial_sum",), wire.dumps_arrays({"s": np.zeros(3, np.uint64)}))
    assert refused("aggregate", arrays, AGGREGATE) == \
        "partial_sum is not share data (share data holds 'arrays', expected 'shares')"
    assert refused("aggregate", changed(aggregated, ("n_shares",), 2), AGGREGATE) == \
        "n_shares is 2; the plan was given 3 sealed shares"
    huge = changed(aggregated, ("partial_sum",), bytes(MAX_PARTIAL_SUM_BYTES + 1))
    assert refused("aggregate", huge, AGGREGATE) == (
        f"partial_sum is {MAX_PARTIAL_SUM_BYTES + 1} bytes; "
        f"at most {MAX_PARTIAL_SUM_BYTES} are allowed")
    wrong_parties = ContractContext(n_parties=2, n_ciphertexts=3)
    assert refused("aggregate", aggregated, wrong_parties) == \
        "partial_sum is a share among 3 parties; expected 2"
    wrong_model = ContractContext(model="resnet18", n_ciphertexts=3)
    assert refused("aggregate", aggregated, wrong_model).startswith(
        "partial_sum is missing 'bn1.bias', ")


# --------------------------------------------------------------------------- custom

def test_custom():
    big = {"w": np.zeros(300_000, np.float32)}
    size = len(encode(big))
    assert refused("custom", big, CUSTOM) == \
        f"result encodes to {size} bytes; custom results are limited to {1 << 20} bytes"
    check_result("custom", big, ContractContext(max_custom_bytes=size))
    assert refused("custom", {"x": object()}, CUSTOM).startswith(
        "result['x'] is a builtins.object, not plain data")
    assert refused("custom", {"t": torch.zeros(2)}, CUSTOM) == \
        "result['t'] is a torch tensor; return numpy arrays, e.g. tensor.detach().numpy()"


# --------------------------------------------------------------------------- misuse

def test_missing_context_and_unknown_kind_are_programming_errors(trained, aggregated):
    with pytest.raises(ValueError, match=r"needs context\.epochs, context\.n_samples"):
        check_result("train", trained, ContractContext(model="small_cnn"))
    with pytest.raises(ValueError, match=r"needs context\.n_ciphertexts"):
        check_result("aggregate", aggregated, ContractContext())
    with pytest.raises(ValueError, match="unknown plan kind 'fit'"):
        check_result("fit", trained, TRAIN)
    with pytest.raises(ValueError, match="non-negative int"):
        ContractContext(epochs=True)


def test_weights_of_a_fresh_resnet18_pass_and_a_missing_buffer_is_named():
    weights = weights_to_numpy(build_model("resnet18"))
    context = ContractContext(model="resnet18", epochs=1, n_samples=8)
    result = {"weights": weights, "history": {"loss": [0.5], "accuracy": [0.5]}, "n_samples": 8,
              "validation": None}
    check_result("train", result, context)
    del weights["layer1.0.bn1.running_var"]
    assert refused("train", result, context) == "weights is missing 'layer1.0.bn1.running_var'"


# --------------------------------------------------------------------------- DP plans

@pytest.fixture(scope="module")
def trained_privately(data):
    from common.vetted_plans import train_private_xray_plan

    return train_private_xray_plan(*data, CONFIG, None, {"noise_multiplier": 1.0,
                                                         "max_grad_norm": 1.0, "delta": 1e-5})


def test_train_private_contract(trained_privately):
    context = ContractContext(model="small_cnn", epochs=1, n_samples=64,
                              max_epsilon=trained_privately["privacy"]["epsilon"])
    check_result("train_private", trained_privately, context)
    # nothing un-noised: a DP plan that also returned its loss history is withheld
    assert "history" in refused("train_private", changed(
        trained_privately, ("history",), {"loss": [0.7], "accuracy": [0.5]}), context)
    assert "privacy.epsilon is" in refused(
        "train_private", trained_privately,
        ContractContext(model="small_cnn", epochs=1, n_samples=64, max_epsilon=0.5))
    assert "privacy" in refused("train_private", changed(trained_privately, ("privacy",),
                                                         delete=True), context)
    assert refused("train_private", changed(trained_privately, ("privacy", "epsilon"),
                                            float("nan")), context) == \
        "privacy.epsilon is not finite (nan)"


def test_evaluate_private_contract(data, trained):
    from common.dp_metrics import BINS
    from common.vetted_plans import evaluate_private_xray_plan

    counted = evaluate_private_xray_plan(*data, trained["weights"], CONFIG, {})
    check_result("evaluate_private", counted, EVALUATE)
    assert sum(map(sum, counted["histogram"])) == 64
    one_more = [[counted["histogram"][0][0] + 1] + counted["histogram"][0][1:],
                counted["histogram"][1]]
    assert "histogram counts 65 images" in refused(
        "evaluate_private", changed(counted, ("histogram",), one_more), EVALUATE)
    assert "non-negative integers" in refused("evaluate_private", changed(
        counted, ("histogram",), [[0.5] * BINS, [0] * BINS]), EVALUATE)
    assert "has 3 rows" in refused("evaluate_private", changed(
        counted, ("histogram",), counted["histogram"] + [[0] * BINS]), EVALUATE)



def test_validation_metrics_are_checked_against_the_held_out_count(data):
    result = train_xray_plan(*data, dict(CONFIG, validation_fraction=0.25), None)
    context = ContractContext(model="small_cnn", epochs=1, n_samples=48, n_validation=16)
    check_result("train", result, context)
    assert refused("train", changed(result, ("validation", "n_samples"), 64), context) == \
        "validation.n_samples is 64; the plan was given 16 held-out images"
    assert refused("train", changed(result, ("validation", "auc"), 1.5), context).startswith(
        "validation.auc")
    assert refused("train", result, ContractContext(model="small_cnn", epochs=1, n_samples=48)) \
        == "validation must be None: no image was held out"


# --------------------------------------------------------------------------- releases

def test_every_plan_kind_releases_exactly_its_declared_fields(data, trained, evaluated, keys,
                                                              spec, secure_runs, aggregated,
                                                              trained_privately):
    """Walks the registry: each kind's real output goes through its contract, its privacy
    mechanism (with the ``privacy`` field the server adds) and the release filter; what
    leaves is exactly the declared fields, and every declared field leaves somewhere."""
    from common.vetted_plans import (evaluate_private_xray_plan, federated_job_private_xray_plan,
                                     federated_job_xray_plan, secure_train_private_xray_plan)

    dp = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5}
    images, labels = data
    secure_private = secure_train_private_xray_plan(images[:32], labels[:32], CONFIG, None,
                                                    spec.to_constant(), _key_asset(keys[0][0]),
                                                    dp)
    epsilon = trained_privately["privacy"]["epsilon"]
    # a job's round: what the domain passes each round (the round's spec inside the job)
    job = {"round": spec.to_constant()}
    job_round = federated_job_xray_plan(images[:32], labels[:32], _key_asset(keys[0][0]),
                                        CONFIG, None, job)
    job_private = federated_job_private_xray_plan(images[:32], labels[:32],
                                                  _key_asset(keys[0][0]), CONFIG, None, job, dp)
    outputs = {
        "federated_job": (job_round, SECURE),
        "federated_job_private": (job_private, ContractContext(
            model="small_cnn", n_samples=32, n_parties=N_PARTIES, own_index=0,
            max_epsilon=job_private["privacy"]["epsilon"])),
        "train": (trained, TRAIN), "evaluate": (evaluated, EVALUATE),
        "secure_train": (secure_runs[0], SECURE), "aggregate": (aggregated, AGGREGATE),
        "train_private": (trained_privately, ContractContext(
            model="small_cnn", n_samples=64, max_epsilon=epsilon)),
        "secure_train_private": (secure_private, ContractContext(
            model="small_cnn", n_samples=32, n_parties=N_PARTIES, own_index=0,
            max_epsilon=secure_private["privacy"]["epsilon"])),
        "evaluate_private": (evaluate_private_xray_plan(*data, trained["weights"], CONFIG, {}),
                             EVALUATE),
        "custom": ({"anything": [1, 2.5, "x"]}, CUSTOM),
        # one query's answer: a hospital's share of two logits for each of 3 X-rays
        "private_inference": ({"output_share": np.zeros((3, 2), dtype=np.uint64)},
                              ContractContext(n_samples=3))}
    assert sorted(outputs) == sorted(all_kinds())
    for name, (result, context) in outputs.items():
        kind = all_kinds()[name]
        check_result(name, result, context)
        if kind.kept:  # what the domain keeps never leaves: with it the release refuses
            with pytest.raises(ReleaseRefused, match="declares no bound"):
                kind.release(result, trusted=True)
            result = {k: v for k, v in result.items() if k not in kind.kept}
        if kind.private:
            accounting = kind.mechanism.size(target_epsilon=1.0, delta=1e-5, n_samples=64,
                                             config=CONFIG)
            result = dict(kind.mechanism.post_process(result, accounting), privacy={"spent": 1})
        released = kind.release(result, trusted=True)
        declared = {r.field for r in kind.releases}
        assert set(released) == declared, name
        assert all(r.what and r.bound.value in ("public", "dp", "trusted")
                   for r in kind.releases), name
        if not kind.needs_trust:  # a DP kind releases all of it without the admin's trust
            assert kind.release(result, trusted=False) == released


def test_a_field_without_a_declaration_is_never_released(trained, trained_privately):
    """The release filter fails closed: a result holding a field its kind does not declare
    (a plan change that forgot the registry, a contract that let it through) is withheld
    whole, trusted or not; a ``trusted`` field leaves only where the admin trusts."""
    from domain_setup.vetting.registry import ReleaseRefused

    train, train_private = all_kinds()["train"], all_kinds()["train_private"]
    with_loss = dict(trained_privately, history=trained["history"])
    for trusted in (True, False):
        with pytest.raises(ReleaseRefused, match="declares no bound for history"):
            train_private.release(with_loss, trusted=trusted)
    with pytest.raises(ReleaseRefused, match="declares no bound for secret"):
        train.release(dict(trained, secret=1), trusted=True)
    with pytest.raises(ReleaseRefused, match="history, validation, weights of train"):
        train.release(trained, trusted=False)
    assert train.release(trained, trusted=True) == trained
