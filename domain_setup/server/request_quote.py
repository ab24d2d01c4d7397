"""The domain's quote of a request: what it would cost in privacy and, for a secure round,
who its parties are; with every problem that makes it a violation. The approval guard
binds every approval to it, and ``review show`` prints it (``GET
/pneumosyft/requests/{id}/quote``).

    quote = quote_request(worker, policies, ledger, code, own_key=public_key)
    quote["privacy"]["spent_after"], quote["round"]["parties"], quote["problems"]
"""

from __future__ import annotations

from typing import Any

from common import syft_compat
from domain_setup.server.privacy_quote import asset_rows, quote_code
from domain_setup.server.round_quote import own_training_count, round_quote
from domain_setup.vetting.registry import identify
from domain_setup.vetting.verdicts import asset_names_of, code_bindings


def quote_request(worker: Any, policies: Any, ledger: Any, code: Any, *,
                  own_key: bytes | None, datasets: list | None = None) -> dict:
    """The privacy quote, the round quote (None unless the kind is secure) and all their
    problems, for a syft UserCode on this domain under `policies` (the snapshot)."""
    datasets = syft_compat.all_datasets(worker) if datasets is None else datasets
    privacy = quote_code(worker, policies, ledger, code, datasets)
    round_ = None
    if identify(code.raw_code).secure:
        inputs, constants = code_bindings(code, asset_names_of(datasets))
        try:
            own_count = own_training_count(asset_rows(datasets, inputs.get("images", "?/?")),
                                           constants.get("config"))
        except (KeyError, ValueError):
            own_count = None
        round_ = round_quote(policies, constants, own_key=own_key, own_count=own_count)
    problems = privacy["problems"] + (round_["problems"] if round_ else [])
    return {"privacy": privacy, "round": round_, "problems": problems}
