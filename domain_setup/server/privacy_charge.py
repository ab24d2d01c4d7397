"""The privacy side of a run of a DP plan: size the noise, charge the ledger, release.

Before the sandbox starts, `PrivacyCharge.prepare` reads the dataset's rules in
``privacy.yaml``, sizes the kind's mechanism for the ε the researcher asked for at the
domain's δ (DP-SGD: the noise multiplier for this many steps; evaluation: Gaussian
noise on the score histogram), charges the researcher's ledger atomically, and gives
the plan the domain's privacy parameters (and the seed of its randomness) in place of
the request's. After the run, `release` turns the checked result into what may leave
(noisy metrics for an evaluation) with the ε spent and the budget left. `refund`
takes the charge back, and only the dispatch calls it, only for a run refused before
any private data entered the sandbox: a run that received data keeps its charge
whatever happens to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.dp_accounting import Mechanism
from domain_setup.policy.privacy import DatasetPrivacy
from domain_setup.server.privacy_ledger import BudgetExceeded, PrivacyLedger, Release


class PrivacyRefused(Exception):
    """A DP run the domain will not start, with the one line the researcher sees."""


@dataclass
class PrivacyCharge:
    """One DP run's charge (see the module docstring)."""

    kind: Any  # the PlanKind
    email: str
    dataset: str
    rules: DatasetPrivacy
    budget: float
    target_epsilon: float
    mechanism: Mechanism
    release_record: Release

    @classmethod
    def prepare(cls, kind: Any, inputs: dict, *, ledger: PrivacyLedger,
                rules: DatasetPrivacy | None, dataset: str, email: str,
                groups: tuple[str, ...], role: str, run_id: str) -> "PrivacyCharge":
        """Charge the ledger and put the domain's privacy parameters into `inputs`
        (PrivacyRefused, nothing charged, when the rules or the budget do not allow it)."""
        if rules is None:
            raise PrivacyRefused(f"dataset {dataset} has no privacy rules in privacy.yaml")
        asked = inputs.get("privacy") or {}
        target = float(asked.get("target_epsilon", 0))
        if not 0 < target <= rules.max_epsilon_per_request:
            raise PrivacyRefused(f"ε {target:g} asked; one request on {dataset} may spend at "
                                 f"most {rules.max_epsilon_per_request:g}")
        n_samples = len(inputs["images"])
        if n_samples < rules.min_samples_per_release:
            raise PrivacyRefused(f"a release on {dataset} needs at least "
                                 f"{rules.min_samples_per_release} images; this split has "
                                 f"{n_samples}")
        mechanism = kind.mechanism.size(target_epsilon=target, delta=rules.delta,
                                        n_samples=n_samples, config=inputs.get("config") or {})
        budget = rules.budget_for(email, groups, role)
        try:
            record = ledger.charge(email, dataset, request_id=run_id, kind=kind.name,
                                   mechanism=mechanism, epsilon=target, delta=rules.delta,
                                   budget=budget)
        except BudgetExceeded as exc:
            raise PrivacyRefused(str(exc)) from None
        inputs["privacy"] = kind.mechanism.plan_privacy(mechanism, asked, delta=rules.delta)
        return cls(kind, email, dataset, rules, budget, target, mechanism, record)

    def release(self, result: dict, ledger: PrivacyLedger) -> dict:
        """What may leave of a checked result (the mechanism's post-processing), with the
        ε spent, the δ, and the researcher's total and budget left as ``privacy``."""
        released = self.kind.mechanism.post_process(result, self.mechanism)
        account = ledger.account(self.email, self.dataset, delta=self.rules.delta)
        released["privacy"] = {"epsilon": self.target_epsilon, "delta": self.rules.delta,
                               "dataset": self.dataset, "spent": account.spent,
                               "spent_sum": account.spent_sum,
                               "left": account.left(self.budget)}
        return released

    def refund(self, ledger: PrivacyLedger, reason: str) -> None:
        """Take the charge back: the run was refused before any data entered the sandbox."""
        ledger.refund(self.release_record.id, reason)
