"""A new model or data source is one registration: the rest of the project picks it up."""

from __future__ import annotations

import pytest
from torch import nn

from common.errors import DataError, PneumoSyftError
from common.models import NUM_CLASSES, build_model, model_names, register_model
from common.training import evaluate, train
from common.training_config import (
    TRAINING_PARAMETERS,
    default_training_config,
    policy_limit_names,
    validate_training_config,
)
from datasets.xray import XRayData, XRaySplit, generate, load_source, register_source
from datasets.xray.loaders import SYNTHETIC_LICENCE
from domain_setup.vetting.linter import LIMITED_KEYS, check_config
from domain_setup.policy.approval import load_approval_rules
from conftest import PROJECT_ROOT
from scientist import TrainingPlan


@register_model("tiny_test_net")
def _tiny() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, NUM_CLASSES))


@register_source("checkerboard", needs_path=False)
def _checkerboard(path, *, size: int, n: int, seed: int) -> XRayData:
    images, labels = generate(n, size=size, seed=seed)
    images[labels == 1, :, ::2, ::2] = 255
    cut = n * 3 // 4
    return XRayData(train=XRaySplit(images[:cut], labels[:cut]), val=None,
                    test=XRaySplit(images[cut:], labels[cut:]), source="checkerboard",
                    licence=SYNTHETIC_LICENCE, synthetic=True)


def test_a_registered_model_trains_evaluates_and_is_a_valid_plan_model():
    assert "tiny_test_net" in model_names()
    images, labels = generate(48, size=20, seed=1)
    result = train(images, labels, model="tiny_test_net", epochs=1, batch_size=16)
    assert set(result["weights"]) == set(build_model("tiny_test_net").state_dict())
    metrics = evaluate(images, labels, result["weights"], model="tiny_test_net")
    assert 0.0 <= metrics["auc"] <= 1.0
    plan = TrainingPlan(model="tiny_test_net", epochs=1, batch_size=16)
    assert plan.run_locally(images, labels)["n_samples"] == 48


def test_the_same_model_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_cnn")(lambda: nn.Identity())


def test_a_registered_source_loads_through_load_source_and_checks_paths():
    data = load_source("checkerboard", size=24, n=40, seed=2)
    assert data.train.images.shape == (30, 1, 24, 24) and data.source == "checkerboard"
    with pytest.raises(DataError, match="takes no path"):
        load_source("checkerboard:/somewhere")
    with pytest.raises(DataError, match="checkerboard"):  # listed among the known sources
        load_source("nope")


def test_training_plan_fields_come_from_the_one_schema():
    assert TrainingPlan().config() == default_training_config()
    assert [p.name for p in TRAINING_PARAMETERS] == list(TrainingPlan().config())
    with pytest.raises(PneumoSyftError, match="unknown training parameter"):
        validate_training_config({"epochs": 2, "momentum": 0.9})


def test_approval_limits_are_read_from_the_schema():
    rules = load_approval_rules(PROJECT_ROOT / "policies" / "approval.yaml")
    assert set(rules.limits) == set(policy_limit_names())
    assert set(LIMITED_KEYS) == {"model", "epochs", "batch_size"}
    assert check_config({"model": "tiny_test_net"}, rules) == [
        "config: model 'tiny_test_net' is not allowed (allowed: small_cnn, resnet18)"]
    assert check_config(default_training_config(), rules) == []


def test_the_upload_help_names_every_registered_source():
    import subprocess
    import sys

    from domain_setup.admin.cli import UPLOAD_SOURCES

    # in a new process: this module registers sources of its own
    shipped = subprocess.run(
        [sys.executable, "-c", "from datasets.xray.sources import source_usages; "
         "print(' | '.join(source_usages()))"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, check=True).stdout.strip()
    assert UPLOAD_SOURCES == shipped
