"""Federated strategies (common.strategies) and the training knobs they rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.training import class_weights, evaluate, held_out_count, train
from common.training_config import federated_knobs_set
from datasets.xray import generate
from scientist import TrainingPlan
from scientist.federated import weighted_validation
from common.strategies import FedAdam, FedAvg, FedAvgM, FedProx, make_strategy


def _w(*values):
    return {"w": np.array(values, np.float32)}


def test_fedavg_takes_the_average_and_every_strategy_adopts_it_in_round_one():
    assert FedAvg().next_global(_w(0.0), _w(2.0))["w"].tolist() == [2.0]
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam"):
        assert make_strategy(name).next_global({}, _w(1.5))["w"].tolist() == [1.5], name


def test_fedprox_asks_hospitals_for_its_proximal_term():
    assert FedProx(mu=0.5).client_config({"epochs": 2}) == {"epochs": 2, "proximal_mu": 0.5}
    with pytest.raises(ValueError, match="mu > 0"):
        FedProx(mu=0)


def test_fedavgm_accumulates_momentum_over_rounds():
    strategy = FedAvgM(server_lr=1.0, momentum=0.5)
    current = _w(0.0)
    current = strategy.next_global(current, _w(1.0))      # v = 1, w = 1
    assert current["w"].tolist() == [1.0]
    current = strategy.next_global(current, _w(2.0))      # v = 0.5 + 1, w = 2.5
    assert current["w"].tolist() == [2.5]


def test_fedadam_matches_adam_on_the_pseudo_gradient():
    strategy = FedAdam(server_lr=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    current, deltas = _w(0.0, 0.0), [np.array([1.0, -2.0]), np.array([0.5, 0.5])]
    m = v = np.zeros(2)
    expected = np.zeros(2)
    for t, delta in enumerate(deltas, start=1):
        m = 0.9 * m + 0.1 * delta
        v = 0.99 * v + 0.01 * delta ** 2
        expected = expected + 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-3)
        current = strategy.next_global(current, {"w": (current["w"] + delta).astype(np.float32)})
    np.testing.assert_allclose(current["w"], expected, rtol=1e-5)


def test_server_optimisers_leave_integer_buffers_as_averaged():
    step = FedAvgM().next_global({"w": np.zeros(1, np.float32), "n": np.array(3)},
                                 {"w": np.ones(1, np.float32), "n": np.array(5)})
    assert step["n"] == 5 and step["n"].dtype.kind == "i"


def test_unknown_strategy_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'; one of fedavg"):
        make_strategy("fedsgd")
    with pytest.raises(ValueError, match="momentum"):
        FedAvgM(momentum=1.0)


def test_class_balancing_weighs_both_classes_equally():
    weights = class_weights(torch.tensor([0] * 10 + [1] * 90), "balanced")
    assert float(weights[0] * 10) == pytest.approx(float(weights[1] * 90))
    assert class_weights(torch.tensor([0, 1]), "none") is None
    with pytest.raises(ValueError, match="'none' or 'balanced'"):
        class_weights(torch.tensor([0, 1]), "inverse")


def test_balanced_loss_lifts_the_minority_class_on_a_skewed_hospital():
    images, labels = generate(400, size=28, seed=3, pneumonia_fraction=0.95)
    test_images, test_labels = generate(400, size=28, seed=4, pneumonia_fraction=0.5)
    specificity = {}
    for balancing in ("none", "balanced"):
        weights = train(images, labels, epochs=3, seed=0, class_balancing=balancing)["weights"]
        (tn, fp), _ = evaluate(test_images, test_labels, weights)["confusion_matrix"]
        specificity[balancing] = tn / (tn + fp)
    assert specificity["balanced"] > specificity["none"] + 0.1, specificity


def test_proximal_term_keeps_local_training_near_the_global_model():
    images, labels = generate(200, size=28, seed=1)
    start = train(images, labels, epochs=1, seed=0)["weights"]

    def drift(mu):
        after = train(images, labels, epochs=2, seed=1, initial_weights=start,
                      proximal_mu=mu)["weights"]
        return sum(float(np.sum((after[k] - start[k]) ** 2)) for k in start)

    assert drift(10.0) < 0.5 * drift(0.0)


def test_validation_holds_images_out_and_measures_the_model_received():
    images, labels = generate(300, size=28, seed=2)
    received = train(images, labels, epochs=1, seed=0)["weights"]
    result = train(images, labels, epochs=1, seed=0, initial_weights=received,
                   validation_fraction=0.2)
    held = held_out_count(300, 0.2)
    assert held == 60 and result["n_samples"] == 240
    assert result["validation"]["n_samples"] == 60
    assert set(result["validation"]) == {"loss", "accuracy", "auc", "n_samples"}
    # the metrics are those of the received model on exactly the held-out images
    from common.training import validation_split

    _, held_out = validation_split(300, 0.2)
    # the same images stay held out whatever the seed (a federation varies it each round)
    assert torch.equal(validation_split(300, 0.2)[1], held_out)
    expected = evaluate(images[held_out.numpy()], labels[held_out.numpy()], received)
    assert result["validation"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["validation"]["auc"] == pytest.approx(expected["auc"])
    assert "validation" not in train(images, labels, epochs=1, seed=0)


def test_weighted_validation_weighs_hospitals_by_held_out_images():
    summary = weighted_validation({"a": {"loss": 1.0, "accuracy": 0.5, "auc": 0.6, "n_samples": 10},
                                   "b": {"loss": 3.0, "accuracy": 1.0, "auc": None,
                                         "n_samples": 30}})
    assert summary == {"n_samples": 40, "loss": 2.5, "accuracy": 0.875}
    assert weighted_validation({}) is None


def test_config_schema_bounds_the_new_knobs_and_dp_refuses_them():
    from common.dp_training import train_private

    assert federated_knobs_set({"class_balancing": "none", "validation_fraction": 0.0}) == []
    images, labels = generate(60, size=28, seed=0)
    with pytest.raises(ValueError, match="DP-SGD training does not take proximal_mu"):
        train_private(images, labels, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5,
                      proximal_mu=0.1)
    assert TrainingPlan(validation_fraction=0.1, class_balancing="balanced").config()[
        "validation_fraction"] == 0.1
    from common.errors import PneumoSyftError

    with pytest.raises(PneumoSyftError, match="validation_fraction must be between 0 and 0.5"):
        TrainingPlan(validation_fraction=0.6)
    with pytest.raises(PneumoSyftError, match="unknown class_balancing"):
        TrainingPlan(class_balancing="weighted")


def test_local_steps_bound_sgd_training_to_exactly_that_many_steps():
    from common.models import build_model
    from common.training import prepare, validation_split

    images, labels = generate(200, size=28, seed=5)
    start = train(images, labels, epochs=1, seed=0)["weights"]
    one = train(images, labels, epochs=5, batch_size=32, seed=3, optimiser="sgd", lr=0.1,
                local_steps=1, initial_weights=start)
    # one plain SGD step on the first batch of seed 3's order, recomputed by hand
    x, y = prepare(images, labels)
    trained_on, _ = validation_split(200, 0.0)  # all of them, in the split's order
    x, y = x[trained_on], y[trained_on]
    module = build_model("small_cnn", image_size=28)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in start.items()})
    module.train()
    batch = torch.randperm(200, generator=torch.Generator().manual_seed(3))[:32]
    torch.nn.functional.cross_entropy(module(x[batch]), y[batch]).backward()
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(one["weights"][name],
                                   (parameter - 0.1 * parameter.grad).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
    # the history covers only the images stepped on: 1 epoch entry for 1 step, 3 for 15
    assert len(one["history"]["loss"]) == 1
    fifteen = train(images, labels, epochs=5, batch_size=32, seed=3, optimiser="sgd",
                    local_steps=15, initial_weights=start)
    assert len(fifteen["history"]["loss"]) == 3  # 7 batches per pass: 7 + 7 + 1
    # without local_steps every batch of every epoch is a step, as before
    assert len(train(images, labels, epochs=2, batch_size=32, seed=3,
                     optimiser="sgd")["history"]["loss"]) == 2


def test_optimiser_and_local_steps_are_validated_and_refused_by_dp():
    from common.dp_training import train_private
    from common.errors import PneumoSyftError

    assert TrainingPlan(optimiser="sgd", local_steps=10).config()["local_steps"] == 10
    with pytest.raises(PneumoSyftError, match="unknown optimiser 'rmsprop'; one of adam, sgd"):
        TrainingPlan(optimiser="rmsprop")
    with pytest.raises(PneumoSyftError, match="local_steps must be an integer of at least 0"):
        TrainingPlan(local_steps=-1)
    with pytest.raises(PneumoSyftError, match="local_steps must be at most 100000"):
        TrainingPlan(local_steps=10**6)
    with pytest.raises(PneumoSyftError, match="local_steps must be an integer"):
        TrainingPlan(local_steps=2.5)
    images, labels = generate(60, size=28, seed=0)
    for knob in ({"optimiser": "sgd"}, {"local_steps": 5}):
        with pytest.raises(ValueError, match=f"DP-SGD training does not take {next(iter(knob))}"):
            train_private(images, labels, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5,
                          **knob)
