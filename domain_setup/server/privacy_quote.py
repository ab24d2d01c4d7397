"""What a request would cost in privacy, and why privacy.yaml forbids it: one answer for
the domain's approval guard and the admin's ``review show``.

For a DP plan: the ε asked, the δ of the dataset, what the requester has spent, the
composed total after this release, the budget and what would be left; problems when
the dataset has no privacy rules, the ε passes the per-request maximum, or the total
would pass the budget. For any other code on a dataset with ``require_dp: true``: a
problem when its kind releases a field bounded only by the admin's trust (``trusted``,
see `domain_setup.vetting.registry`): training or evaluating there without DP is a
violation.
"""

from __future__ import annotations

from typing import Any

from common import syft_compat
from common.dp_accounting import epsilon as composed_epsilon
from domain_setup.vetting.registry import identify
from domain_setup.vetting.verdicts import asset_names_of, code_bindings


def quote_code(worker: Any, policies: Any, ledger: Any, code: Any,
               datasets: list | None = None) -> dict:
    """The privacy quote of a syft UserCode on this domain (see the module docstring);
    `datasets` are the server's datasets when the caller has read them already."""
    datasets = syft_compat.all_datasets(worker) if datasets is None else datasets
    inputs, constants = code_bindings(code, asset_names_of(datasets))
    names = {name.split("/", 1)[0] for name in inputs.values() if "/" in name}
    email = syft_compat.email_of(worker, code.user_verify_key)
    user = syft_compat.user_by_verify_key(worker, code.user_verify_key)
    role = syft_compat.role_of(user) if user is not None else "guest"
    kind = identify(code.raw_code)
    quote: dict[str, Any] = {"plan": kind.name, "requester": email, "problems": []}
    for name in sorted(names):
        rules = policies.privacy.dataset(name)
        if rules is not None and rules.require_dp and kind.needs_trust:
            trusted = ", ".join(r.field for r in kind.releases if r.bound.value == "trusted")
            quote["problems"].append(
                f"dataset {name} requires differential privacy: train with train_private and "
                f"evaluate with evaluate_private ({kind.name} releases {trusted} without a "
                "bound)")
    if not kind.private:
        return quote
    dataset = str(inputs.get("images", "?")).split("/", 1)[0]
    rules = policies.privacy.dataset(dataset)
    quote["dataset"] = dataset
    if rules is None:
        quote["problems"].append(f"dataset {dataset} has no privacy rules in privacy.yaml")
        return quote
    asked = constants.get("privacy") if isinstance(constants.get("privacy"), dict) else {}
    target = asked.get("target_epsilon")
    if not isinstance(target, (int, float)) or isinstance(target, bool) or target <= 0:
        return quote  # the catalogue's constant schema says what is wrong
    try:
        n_samples = asset_rows(datasets, inputs["images"])
    except (KeyError, ValueError) as exc:
        quote["problems"].append(f"privacy: {exc}")
        return quote
    if n_samples < rules.min_samples_per_release:
        quote["problems"].append(f"a release on {dataset} needs at least "
                                 f"{rules.min_samples_per_release} images; "
                                 f"{inputs['images']} has {n_samples}")
    budget = rules.budget_for(email, policies.groups_of(email), role)
    account = ledger.account(email, dataset, delta=rules.delta)
    config = constants.get("config") if isinstance(constants.get("config"), dict) else {}
    try:
        mechanism = kind.mechanism.size(target_epsilon=float(target), delta=rules.delta,
                                        n_samples=n_samples,
                                        config={"batch_size": 64, "epochs": 1, **config})
    except (ValueError, TypeError, KeyError) as exc:
        quote["problems"].append(f"privacy: {exc}")
        return quote
    releases = job_rounds(constants) if kind.job else 1  # a job charges every round
    after = composed_epsilon([r.mechanism for r in account.charged]
                             + [mechanism] * releases, rules.delta)
    allowed = budget + account.granted
    quote.update(epsilon=float(target), releases=releases, delta=rules.delta,
                 spent=account.spent,
                 spent_after=after, budget=allowed, left_after=max(0.0, allowed - after))
    if target > rules.max_epsilon_per_request:
        quote["problems"].append(f"ε {target:g} asked; one request on {dataset} may spend at "
                                 f"most {rules.max_epsilon_per_request:g}")
    if after > allowed + 1e-9:
        quote["problems"].append(
            f"over budget: {email} has spent ε {account.spent:.2f} of {allowed:g} on "
            f"{dataset}; this release would bring it to {after:.2f}")
    return quote


def job_rounds(constants: dict) -> int:
    """The rounds a federated job's request may run (1 when its job constant says none)."""
    job = constants.get("job")
    rounds = job.get("rounds") if isinstance(job, dict) else None
    return rounds if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0 \
        else 1


def asset_rows(datasets: list, binding: str) -> int:
    dataset_name, asset_name = binding.split("/", 1)
    for dataset in datasets:
        if dataset.name == dataset_name:
            for asset in dataset.asset_list:
                if asset.name == asset_name and asset.shape:
                    return int(asset.shape[0])
    raise ValueError(f"the size of {binding} is unknown")
