"""``aggregate``: the domain's own aggregation of a secure round it contributed to, run by
the aggregation route (never submitted as a request)."""

from common import vetted_plans
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.registry import (AGGREGATION_KEY_ASSET, Bound, PlanKind, Released,
                                           register)


def check(result, context):
    """A partial sum in the share wire format (never pickle) and the number of shares
    added; with ``context.model`` / ``n_parties`` a share of that model among that many."""
    part.need(context, "aggregate", "n_ciphertexts")
    result = part.exact_keys("result", result, ("partial_sum", "n_shares"))
    part.partial_sum("partial_sum", result["partial_sum"], context)
    part.exact_int("n_shares", result["n_shares"], context.n_ciphertexts, "sealed shares")


KIND = register(PlanKind(
    name="aggregate", function=vetted_plans.aggregate_round_plan,
    inputs={"aggregation_key": AGGREGATION_KEY_ASSET},
    constants=("aggregator_keys", "ciphertexts"), contract=check, submitted=False,
    releases=(Released("partial_sum", Bound.PUBLIC,
                       "this hospital's sum of the round's shares: uniformly random alone "
                       "(masked by the other parties' seeds); the K sums give the average "
                       "that the contributions' sealed_shares were bounded as (trusted or dp)"),
              Released("n_shares", Bound.PUBLIC, "the round's number of parties")),
    summary="aggregate one secure round this hospital contributed to"))
