"""``train_private``: DP-SGD in the domain; the weights are covered by the charge, and
nothing un-noised leaves (no loss or accuracy history)."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.mechanisms import DP_SGD
from domain_setup.vetting.registry import Bound, PlanKind, Released, register

N_TRAINED = Released("n_samples", Bound.PUBLIC, "images trained on: the asset's shape")
PRIVACY = Released("privacy", Bound.PUBLIC,
                   "the ε asked and δ, and the researcher's own spent and left: her own "
                   "charges, set by the domain before the run")


def check(result, context):
    """The model's weights, n_samples and the ε Opacus accounted (at most the charge)."""
    part.need(context, "train_private", "model", "n_samples", "max_epsilon")
    result = part.exact_keys("result", result, ("weights", "n_samples", "privacy"))
    part.weights("weights", result["weights"], context.model)
    part.exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    part.privacy_spent(result["privacy"], context)


KIND = register(PlanKind(
    name="train_private", function=vetted_plans.train_private_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels"},
    constants=("config", "initial_weights", "privacy"), contract=check, mechanism=DP_SGD,
    releases=(Released("weights", Bound.DP,
                       "DP-SGD weights: Poisson batches and Gaussian noise from the domain's "
                       "seed, (ε, δ) charged before the run"), N_TRAINED, PRIVACY),
    summary="train a model with DP-SGD"))
