"""``federated_job``: up to R secure rounds approved at once; each round trains without DP
from the global model the members' partial sums gave (`common.federated_job`) and seals
the weights for the round, like ``secure_train``."""

from common import vetted_plans
from domain_setup.vetting.kinds import secure_train
from domain_setup.vetting.kinds.train import HISTORY, N_TRAINED, VALIDATION
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)

KIND = register(PlanKind(
    name="federated_job", function=vetted_plans.federated_job_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels",
            "aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("config", "initial_weights", "job"), contract=secure_train.check,
    secure=True, job=True,
    releases=(Released("sealed_shares", Bound.TRUSTED,
                       "each round: ciphertexts sealed to the job's members (the federation's): "
                       "each reveals nothing alone; all K aggregations give the round's "
                       "weighted average of models trained without DP"),
              HISTORY, N_TRAINED, VALIDATION),
    summary="a federated job: up to R secure rounds without DP, approved once"))
