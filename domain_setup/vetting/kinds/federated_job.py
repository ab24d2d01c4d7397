"""``federated_job``: up to R secure rounds approved at once; each round trains without DP
from the global model the members' partial sums gave (`common.federated_job`) and seals
the weights for the round, like ``secure_train``."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.kinds import secure_train
from domain_setup.vetting.kinds.train import HISTORY, N_TRAINED, VALIDATION
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)


def check(result, context):
    """secure_train's contract, and with SCAFFOLD (``context.with_control``) the hospital's
    new client control variate, which the domain keeps (None otherwise)."""
    result = part.exact_keys("result", result, ("sealed_shares", "n_samples", "history",
                                                "validation", "client_control"))
    kept_control(result, context)
    secure_train.check({k: v for k, v in result.items() if k != "client_control"}, context)


def kept_control(result, context) -> None:
    """A SCAFFOLD round's client control is the model's parameters' shapes; none otherwise."""
    if context.with_control:
        part.control_variate("client_control", result["client_control"], context.model)
    elif result["client_control"] is not None:
        raise part.violation("client_control is given, but this round has no control variates")

KIND = register(PlanKind(
    name="federated_job", function=vetted_plans.federated_job_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels",
            "aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("config", "initial_weights", "job"), contract=check,
    secure=True, job=True, kept=("client_control",),
    releases=(Released("sealed_shares", Bound.TRUSTED,
                       "each round: ciphertexts sealed to the job's members (the federation's): "
                       "each reveals nothing alone; all K aggregations give the round's "
                       "weighted average of models trained without DP"),
              HISTORY, N_TRAINED, VALIDATION),
    summary="a federated job: up to R secure rounds without DP, approved once"))
