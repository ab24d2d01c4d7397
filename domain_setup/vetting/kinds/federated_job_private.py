"""``federated_job_private``: up to R secure rounds of DP-SGD approved at once, each round
charged its ε (the quote shows the total the job may reach)."""

from common import vetted_plans
from domain_setup.vetting.kinds import secure_train_private
from domain_setup.vetting.kinds.train_private import N_TRAINED, PRIVACY
from domain_setup.vetting.mechanisms import DP_SGD
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)

KIND = register(PlanKind(
    name="federated_job_private", function=vetted_plans.federated_job_private_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels",
            "aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("config", "initial_weights", "job", "privacy"),
    contract=secure_train_private.check, mechanism=DP_SGD, secure=True, job=True,
    releases=(Released("sealed_shares", Bound.DP,
                       "each round: ciphertexts sealed to the job's members of DP-SGD weights: "
                       "each reveals nothing alone, their sum is covered by the round's charge"),
              N_TRAINED, PRIVACY),
    summary="a federated job: up to R secure rounds of DP-SGD, approved once, ε per round"))
