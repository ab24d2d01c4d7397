"""``secure_train``: train without DP, then seal the weights as seeded shares of a secure
round with the federation's members; the shares add up (over the round) to the
federated average, which needs the admin's trust."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.kinds.train import HISTORY, N_TRAINED, VALIDATION
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)


def sealed_shares(result, context) -> None:
    """One ciphertext per party of the round, each exactly as long as what it must be (a
    sealed seed; at the hospital's own index its sealed correction share)."""
    lengths = part.contribution_lengths(context.model, context.n_parties, context.own_index,
                                        context.with_control)
    shares = part.sized_list("sealed_shares", result["sealed_shares"], len(lengths), "items",
                             ", one per party of the round")
    for party, (sealed, length) in enumerate(zip(shares, lengths)):
        path = f"sealed_shares[{party}]"
        part.bytes_value(path, sealed)
        if len(sealed) != length:
            what = "sealed correction share" if party == context.own_index else "sealed seed"
            raise part.violation(f"{path} is {len(sealed)} bytes; a {what} of the "
                                 f"{context.model} model for party {party} is {length} bytes")


def check(result, context):
    """Sealed shares for the round's parties, plus the history, n_samples and validation
    of train."""
    part.need(context, "secure_train", "model", "epochs", "n_samples", "n_parties",
              "own_index")
    result = part.exact_keys("result", result, ("sealed_shares", "n_samples", "history",
                                                "validation"))
    sealed_shares(result, context)
    part.history("history", result["history"], context.epochs)
    part.exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    part.validation(result, context)


KIND = register(PlanKind(
    name="secure_train", function=vetted_plans.secure_train_xray_plan,
    inputs={"images": "train_images", "labels": "train_labels",
            "aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("config", "initial_weights", "aggregator_keys"), contract=check, secure=True,
    releases=(Released("sealed_shares", Bound.TRUSTED,
                       "ciphertexts sealed to the round's parties (the federation's members): "
                       "each reveals nothing alone; all K aggregations give the round's "
                       "weighted average of models trained without DP"),
              HISTORY, N_TRAINED, VALIDATION),
    summary="train without differential privacy and seal the weights for a secure round"))
