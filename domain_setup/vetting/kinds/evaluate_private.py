"""``evaluate_private``: the held-out images counted by label and score bin inside the
domain; the server adds Gaussian noise and only metrics of the noisy counts leave."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.kinds.train_private import PRIVACY
from domain_setup.vetting.mechanisms import NOISY_COUNTS
from domain_setup.vetting.registry import Bound, PlanKind, Released, register


def check(result, context):
    """Exact counts per label and score bin, summing to the images given (the domain adds
    the noise before anything is released)."""
    from common.dp_metrics import BINS

    part.need(context, "evaluate_private", "n_samples")
    result = part.exact_keys("result", result, ("histogram", "n_samples"))
    part.exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    rows = part.sized_list("histogram", result["histogram"], 2, "rows", ", one per label")
    total = 0
    for label, row in enumerate(rows):
        for count in part.sized_list(f"histogram[{label}]", row, BINS, "counts"):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise part.violation(f"histogram[{label}] holds a {type(count).__name__}; "
                                     "counts are non-negative integers")
            total += count
    if total != context.n_samples:
        raise part.violation(f"histogram counts {total} images; the plan was given "
                             f"{context.n_samples}")


KIND = register(PlanKind(
    name="evaluate_private", function=vetted_plans.evaluate_private_xray_plan,
    inputs={"images": "test_images", "labels": "test_labels"},
    constants=("weights", "config", "privacy"), contract=check, mechanism=NOISY_COUNTS,
    releases=(Released("metrics", Bound.DP,
                       "accuracy, sensitivity, specificity, ROC and AUC computed from label x "
                       "score-bin counts with the domain's Gaussian noise (sensitivity 1)"),
              PRIVACY),
    summary="evaluate weights on the held-out split with noisy counts"))
