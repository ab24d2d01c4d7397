"""``evaluate``: exact metrics of the researcher's weights on held-out images; they need
the admin's trust (with crafted weights they are a per-patient oracle)."""

import numpy as np

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.registry import Bound, PlanKind, Released, register


def check(result, context):
    """Aggregate metrics only: accuracy, auc, confusion matrix, ROC curve, n_samples."""
    from common.training import ROC_THRESHOLDS

    part.need(context, "evaluate", "n_samples")
    metrics = part.exact_keys("result", result, ("metrics",))["metrics"]
    metrics = part.exact_keys("metrics", metrics, ("accuracy", "auc", "confusion_matrix", "roc",
                                                   "n_samples"))
    part.exact_int("metrics.n_samples", metrics["n_samples"], context.n_samples, "images")
    (tn, fp), (fn, tp) = part.confusion_matrix("metrics.confusion_matrix",
                                               metrics["confusion_matrix"], context.n_samples)
    part.float_in("metrics.accuracy", metrics["accuracy"], 0.0, 1.0)
    if context.n_samples and metrics["accuracy"] != (tn + tp) / context.n_samples:
        raise part.violation(f"metrics.accuracy is {metrics['accuracy']}; the confusion "
                             f"matrix gives {(tn + tp) / context.n_samples}")
    if metrics["auc"] is not None:
        part.float_in("metrics.auc", metrics["auc"], 0.0, 1.0)
    roc = part.exact_keys("metrics.roc", metrics["roc"], ("fpr", "tpr"))
    for name in ("fpr", "tpr"):
        rates = part.finite_floats(f"metrics.roc.{name}", roc[name], len(ROC_THRESHOLDS),
                                   0.0, 1.0)
        if np.any(np.diff(rates) > 0):  # thresholds ascend, so rates cannot rise
            raise part.violation(f"metrics.roc.{name} rises with the threshold; a ROC rate "
                                 "cannot")


KIND = register(PlanKind(
    name="evaluate", function=vetted_plans.evaluate_xray_plan,
    inputs={"images": "test_images", "labels": "test_labels"},
    constants=("weights", "config"), contract=check,
    releases=(Released("metrics", Bound.TRUSTED,
                       "exact accuracy, AUC, confusion matrix and ROC of weights the "
                       "researcher chooses: with crafted weights, any patient's label"),),
    summary="evaluate weights on the held-out split without differential privacy"))
