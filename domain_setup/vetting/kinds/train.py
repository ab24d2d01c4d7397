"""``train``: a model trained in the domain without DP; weights, history and validation
need the admin's trust (``require_dp: false``), the count is public."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.registry import Bound, PlanKind, Released, register

TRAINED_WEIGHTS = Released(
    "weights", Bound.TRUSTED, "the trained model: a function of every training image that "
    "the researcher's config and initial weights choose, at full precision")
HISTORY = Released("history", Bound.TRUSTED, "training loss and accuracy per pass, full "
                   "precision means over the private images")
N_TRAINED = Released("n_samples", Bound.PUBLIC, "images trained on: the asset's shape "
                     "minus the held-out share of the config")
VALIDATION = Released("validation", Bound.TRUSTED, "loss, accuracy and AUC of the model "
                      "received, on held-out private images (None without any)")


def check(result, context):
    """The weights of exactly the model's state dict, a per-pass history, n_samples, and
    with images held out, their validation metrics."""
    part.need(context, "train", "model", "epochs", "n_samples")
    result = part.exact_keys("result", result, ("weights", "history", "n_samples", "validation"))
    part.weights("weights", result["weights"], context.model)
    part.history("history", result["history"], context.epochs)
    part.exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    part.validation(result, context)


KIND = register(PlanKind(
    name="train", function=vetted_plans.train_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels"},
    constants=("config", "initial_weights"), contract=check,
    releases=(TRAINED_WEIGHTS, HISTORY, N_TRAINED, VALIDATION),
    summary="train a model without differential privacy"))
