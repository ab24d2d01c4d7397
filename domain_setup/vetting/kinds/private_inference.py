"""``private_inference``: an inference service on a secret-shared model, approved once;
each query (a secret-shared X-ray from an image holder) is served by the inference routes
(`server/inference_routes.py`) with the other computing hospital, never run by syft; each
answer goes through this kind's contract and release filter."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.registry import Bound, PlanKind, Released, register


def check(result, context):
    """A query's answer: this hospital's share of the logits, uint64 words of shape
    (the X-rays asked, 2), nothing else (the inference route checks each answer)."""
    import numpy as np

    part.need(context, "private_inference", "n_samples")
    result = part.exact_keys("result", result, ("output_share",))
    share = result["output_share"]
    if not isinstance(share, np.ndarray) or share.dtype != np.uint64 \
            or share.shape != (context.n_samples, 2):
        raise part.violation(f"output_share must be uint64 words of shape "
                             f"({context.n_samples}, 2)")


KIND = register(PlanKind(
    name="private_inference", function=vetted_plans.private_inference_plan,
    inputs={}, constants=("model_share", "service"), contract=check,
    served_by="the inference routes, one query at a time (scientist.inference)",
    releases=(Released("output_share", Bound.PUBLIC,
                       "per query, this hospital's share of the logits of the image holder's "
                       "X-rays, sent to her alone: uniformly random without the other "
                       "computing hospital's share (shape: images x 2, known in advance)"),),
    summary="serve private predictions of a shared model with another member, "
            "a query budget per image holder"))
