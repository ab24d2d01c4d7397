"""``secure_train_private``: DP-SGD, then the weights sealed as seeded shares of a secure
round with the federation's members; the average they give is covered by the charge."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.kinds.secure_train import sealed_shares
from domain_setup.vetting.kinds.train_private import N_TRAINED, PRIVACY
from domain_setup.vetting.mechanisms import DP_SGD
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)


def check(result, context):
    """Sealed shares for the round's parties, n_samples and the ε Opacus accounted."""
    part.need(context, "secure_train_private", "model", "n_samples", "n_parties",
              "own_index", "max_epsilon")
    result = part.exact_keys("result", result, ("sealed_shares", "n_samples", "privacy"))
    sealed_shares(result, context)
    part.exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    part.privacy_spent(result["privacy"], context)


KIND = register(PlanKind(
    name="secure_train_private", function=vetted_plans.secure_train_private_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels",
            "aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("config", "initial_weights", "aggregator_keys", "privacy"), contract=check,
    mechanism=DP_SGD, secure=True,
    releases=(Released("sealed_shares", Bound.DP,
                       "ciphertexts sealed to the round's parties (the federation's members) "
                       "of DP-SGD weights: each reveals nothing alone, their sum is covered "
                       "by the charge"), N_TRAINED, PRIVACY),
    summary="train with DP-SGD and seal the weights for a secure round"))
