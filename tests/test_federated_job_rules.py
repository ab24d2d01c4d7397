"""The rules every hospital applies between the rounds of a federated job, without a domain:
the job constant's schema, round ids, the partial-sum tags, the strategy state kept across
restarts, and the job ledger."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from common import sealing
from common.aggregation import combine, contribute, aggregate, model_digest
from common.errors import SharingError
from common.federated_job import (check_partial_sums, job_problems, next_global, round_config,
                                  round_id, round_spec, tag_partial_sum)
from common.strategies import describe_constant, make_strategy, strategy_from_constant
from domain_setup.server.job_ledger import JobLedger
from domain_setup.vetting.constants import constant_problems
from domain_setup.vetting.registry import plan_kind

CONFIG = {"model": "small_cnn", "epochs": 1, "lr": 0.05, "batch_size": 8, "seed": 3,
          "optimiser": "sgd", "local_steps": 2}


@pytest.fixture(scope="module")
def keys():
    return [sealing.generate_keypair() for _ in range(3)]


def _job(keys, **changes):
    job = {"job_id": secrets.token_hex(16), "rounds": 4,
           "members": [sealing.key_to_text(public) for _, public in keys],
           "total_samples": 30, "strategy": describe_constant(make_strategy("fedavgm"))}
    return dict(job, **changes)


def test_a_jobs_constant_is_checked_field_by_field(keys):
    assert job_problems(_job(keys)) == []
    assert job_problems({"job_id": "x"})[0].startswith("job must be")
    assert "job.rounds must be" in job_problems(_job(keys, rounds=0))[0]
    assert "job.rounds must be" in job_problems(_job(keys, rounds=True))[0]
    assert "job_id" in job_problems(_job(keys, job_id="../etc"))[0]
    one = _job(keys, members=_job(keys)["members"][:1])
    assert "2 to 512 parties" in job_problems(one)[0]
    twice = _job(keys, members=[_job(keys)["members"][0]] * 2)
    assert "same party twice" in job_problems(twice)[0]
    unknown = _job(keys, strategy={"name": "fedsgd", "options": {}})
    assert "unknown strategy" in job_problems(unknown)[0]
    smuggled = _job(keys, strategy={"name": "fedavg", "options": {"x": "__import__"}})
    assert "numbers" in job_problems(smuggled)[0]


def test_the_catalogue_refuses_a_job_whose_strategy_trains_another_config(keys):
    kind = plan_kind("federated_job")
    job = _job(keys, strategy=describe_constant(make_strategy("fedprox", mu=0.1)))
    constants = {"config": CONFIG, "initial_weights": {}, "job": job}
    assert "trains with another config" in constant_problems(kind, constants)[0]
    constants["config"] = dict(CONFIG, proximal_mu=0.1)
    assert constant_problems(kind, constants) == []


def test_each_round_and_attempt_has_its_own_round_and_binds_its_model(keys):
    job = _job(keys)
    ids = {round_id(job["job_id"], r, a) for r in (1, 2) for a in (1, 2)}
    assert len(ids) == 4 and all(len(i) == 32 for i in ids)
    weights = {"w": np.ones(3, np.float32)}
    spec = round_spec(job, CONFIG, round_number=2, attempt=1, global_weights=weights)
    assert spec.model == model_digest(dict(CONFIG, seed=4), weights)
    assert round_config(CONFIG, 1)["seed"] == 3
    other = round_spec(job, CONFIG, round_number=2, attempt=1,
                       global_weights={"w": np.full(3, 1.0001, np.float32)})
    assert other.model != spec.model and other.round_id == spec.round_id


def _partials(keys, spec):
    updates = [{"w": np.full(4, float(i + 1), np.float32)} for i in range(3)]
    sealed = [contribute(private, update, 10, spec)
              for (private, _), update in zip(keys, updates)]
    return [aggregate(private, spec, [s[j] for s in sealed])
            for j, (private, _) in enumerate(keys)]


def test_tags_vouch_for_each_partial_sum_to_each_member_only(keys):
    job = _job(keys)
    spec = round_spec(job, CONFIG, round_number=1, attempt=1, global_weights=None)
    partials = _partials(keys, spec)
    np.testing.assert_allclose(combine(partials)["w"], np.full(4, 2.0), atol=1e-6)
    tags = [tag_partial_sum(private, spec, partial)
            for (private, _), partial in zip(keys, partials)]
    for i, (private, _) in enumerate(keys):
        check_partial_sums(private, spec, partials, [t[i] for t in tags])
    me = keys[0][0]
    mine = [t[0] for t in tags]
    with pytest.raises(SharingError, match="partial sum 1 .* is not the one"):
        check_partial_sums(me, spec, [partials[0], partials[2], partials[2]], mine)
    with pytest.raises(SharingError, match="tag of partial sum 0 .* is not its aggregator's"):
        check_partial_sums(me, spec, partials, [t[1] for t in tags])  # another member's tags
    with pytest.raises(SharingError, match="tag of partial sum"):
        later = round_spec(job, CONFIG, round_number=1, attempt=2, global_weights=None)
        check_partial_sums(me, later, partials, mine)  # the tags of another attempt
    # someone holding only public keys (the researcher) cannot make a tag
    forger, _ = sealing.generate_keypair()
    forged = tag_partial_sum(forger, spec, partials[1])[0]
    with pytest.raises(SharingError, match="tag of partial sum 1"):
        check_partial_sums(me, spec, partials, [mine[0], forged, mine[2]])
    with pytest.raises(SharingError, match="a partial sum and a tag from each"):
        check_partial_sums(me, spec, partials[:2], mine[:2])


def test_the_strategy_state_survives_a_restart_and_every_hospital_steps_alike():
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam"):
        kept = make_strategy(name)
        current = {"w": np.zeros(2, np.float32)}
        for step in range(3):
            current = kept.next_global(current, {"w": np.full(2, step + 1.0, np.float32)})
        restarted = strategy_from_constant(describe_constant(kept))
        restarted.load_state_arrays(kept.state_arrays())
        a = kept.next_global(current, {"w": np.full(2, 5.0, np.float32)})
        b = restarted.next_global(current, {"w": np.full(2, 5.0, np.float32)})
        np.testing.assert_array_equal(a["w"], b["w"])
    with pytest.raises(ValueError, match="keeps no state"):
        make_strategy("fedavg").load_state_arrays({"v/w": np.zeros(1)})


def test_next_global_is_the_combined_partial_sums_stepped(keys):
    spec = round_spec(_job(keys), CONFIG, round_number=1, attempt=1, global_weights=None)
    partials = _partials(keys, spec)
    stepped = next_global(make_strategy("fedavgm", momentum=0.5),
                          {"w": np.zeros(4, np.float32)}, partials)
    np.testing.assert_allclose(stepped["w"], np.full(4, 2.0), atol=1e-6)


def test_the_job_ledger_keeps_a_jobs_round_model_and_state(tmp_path):
    jobs = JobLedger.of_state(tmp_path)
    record = jobs.open("a" * 32, job_id="b" * 32, requester="ada@x", kind="federated_job",
                       rounds=3)
    assert (record.state, record.round, record.model_round) == ("running", 0, 0)
    with pytest.raises(ValueError, match="already runs here"):
        jobs.open("c" * 32, job_id="b" * 32, requester="ada@x", kind="federated_job", rounds=3)
    jobs.started("a" * 32, round_number=1, attempt=2, spec={"round": "x"})
    jobs.save_model("a" * 32, 1, {"w": np.arange(3, dtype=np.float32)},
                    {"v/w": np.ones(3)})
    again = JobLedger.of_state(tmp_path).get("a" * 32)
    assert (again.round, again.attempt, again.spec, again.model_round) == (1, 2, {"round": "x"}, 1)
    weights, state = jobs.load_model("a" * 32)
    assert weights["w"].tolist() == [0, 1, 2] and state["v/w"].tolist() == [1, 1, 1]
    assert oct((tmp_path / "jobs" / ("a" * 32 + ".npz")).stat().st_mode & 0o777) == "0o600"
    jobs.stop("a" * 32, reason="stopped by owner@x: enough")
    assert jobs.get("a" * 32).state == "stopped"


def test_scaffold_is_the_papers_update_computed_by_hand_on_two_tiny_hospitals():
    """Two hospitals of 12 images at 16 px, two rounds of 3 full-batch SGD steps: the
    project's SCAFFOLD (scaffold_round at each hospital, the fixed-point average, the
    Scaffold strategy) against the algorithm written out with torch alone."""
    import torch

    from common.aggregation import fixed_point_sum, scaled_contribution
    from common.models import build_model
    from common.scaffold import initial_model, scaffold_round, split_control, with_control
    from common.training import prepare
    from datasets.xray import generate

    config = {"model": "small_cnn", "epochs": 3, "lr": 0.05, "batch_size": 12, "seed": 1,
              "optimiser": "sgd", "local_steps": 3}
    data = [generate(12, size=16, seed=s) for s in (1, 2)]
    steps, lr = config["local_steps"], config["lr"]

    # by hand: x, c on the server, c_i at each hospital, plain tensors
    x = {k: torch.tensor(v) for k, v in initial_model(config, 16).items()}
    names = [n for n, _ in build_model("small_cnn", image_size=16).named_parameters()]
    c = {n: torch.zeros_like(x[n]) for n in names}
    c_i = [{n: torch.zeros_like(x[n]) for n in names} for _ in data]
    for _ in range(2):
        ys, deltas = [], []
        for i, (images, labels) in enumerate(data):
            module = build_model("small_cnn", image_size=16)
            module.load_state_dict({k: v.clone() for k, v in x.items()})
            inputs, targets = prepare(images, labels)
            for _ in range(steps):
                module.zero_grad()
                torch.nn.functional.cross_entropy(module(inputs), targets).backward()
                with torch.no_grad():
                    for n, p in module.named_parameters():
                        p -= lr * (p.grad + c[n] - c_i[i][n])
            y = {k: v.detach().clone() for k, v in module.state_dict().items()}
            delta = {n: (x[n] - y[n]) / (steps * lr) - c[n] for n in names}
            c_i[i] = {n: c_i[i][n] + delta[n] for n in names}
            ys.append(y)
            deltas.append(delta)
        x = {k: (ys[0][k] + ys[1][k]) / 2 for k in x}  # equal sizes: the plain average
        c = {n: c[n] + (deltas[0][n] + deltas[1][n]) / 2 for n in names}

    # the project's
    strategy, weights, controls = make_strategy("scaffold"), {}, [{}, {}]
    for _ in range(2):
        contributions = []
        for i, (images, labels) in enumerate(data):
            out = scaffold_round(images, labels, weights or None, server_control=strategy.control,
                                 client_control=controls[i], **config)
            controls[i] = out["client_control"]
            contributions.append(scaled_contribution(
                with_control(out["weights"], out["control_delta"]), 12, 24))
        weights = strategy.next_global(weights, fixed_point_sum(contributions))
    assert set(weights) == set(x) and not split_control(weights)[1]
    for name in x:
        np.testing.assert_allclose(weights[name], x[name].numpy(), atol=2e-5, rtol=1e-4)
    for name in names:
        np.testing.assert_allclose(strategy.control[name], c[name].numpy(), atol=2e-4,
                                   rtol=1e-3)
        for mine, theirs in zip(controls, c_i):
            np.testing.assert_allclose(mine[name], theirs[name].numpy(), atol=2e-4, rtol=1e-3)
    assert any(np.abs(strategy.control[n]).max() > 1e-3 for n in names)  # it did move


def test_scaffold_runs_only_as_a_job_with_plain_sgd_and_without_dp(keys):
    from common.strategies import make_strategy as strategy
    from scientist import TrainingPlan
    from scientist.federated import run_rounds

    with pytest.raises(ValueError, match="run it as a federated job"):
        run_rounds([], TrainingPlan(), rounds=1, secure=True, approver=None,
                   strategy=strategy("scaffold"))
    job = _job(keys, strategy=describe_constant(strategy("scaffold")))
    adam = {"config": dict(CONFIG, optimiser="adam"), "initial_weights": {}, "job": job}
    assert "plain SGD" in constant_problems(plan_kind("federated_job"), adam)[0]
    sgd = dict(adam, config=CONFIG)
    assert constant_problems(plan_kind("federated_job"), sgd) == []
    private = dict(sgd, privacy={"target_epsilon": 1.0, "max_grad_norm": 1.0})
    assert "DP-SGD does not" in constant_problems(plan_kind("federated_job_private"), private)[0]


def test_a_stop_outlives_the_round_that_was_running_when_it_came(tmp_path):
    jobs = JobLedger.of_state(tmp_path)
    jobs.open("a" * 32, job_id="b" * 32, requester="ada@x", kind="federated_job", rounds=1)
    assert jobs.stop("a" * 32, reason="stopped by the hospital's admin: enough")
    jobs.finish("a" * 32)  # the last round, which was running, ends after the stop
    assert jobs.get("a" * 32).state == "stopped"
    assert not jobs.stop("a" * 32, reason="again")  # ended already


def test_a_dp_plan_with_federated_knobs_is_a_violation_at_review_not_a_failure_later(keys):
    from domain_setup.vetting.constants import dp_config_problems

    sgd = {"config": CONFIG, "initial_weights": {}, "job": _job(keys),
           "privacy": {"target_epsilon": 1.0, "max_grad_norm": 1.0}}
    problems = constant_problems(plan_kind("federated_job_private"), sgd)
    assert problems == ["config: DP-SGD training does not take optimiser, local_steps; leave it "
                        "at its default"]
    plain = {"model": "small_cnn", "epochs": 1, "lr": 0.001, "batch_size": 8, "seed": 0}
    assert dp_config_problems(plain) == []
    assert constant_problems(plan_kind("federated_job_private"), dict(sgd, config=plain)) == []
    assert constant_problems(plan_kind("train_private"),
                             {"config": dict(plain, validation_fraction=0.1),
                              "initial_weights": {}, "privacy": sgd["privacy"]})[0].startswith(
        "config: DP-SGD training does not take validation_fraction")
