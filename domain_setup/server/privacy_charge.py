"""The privacy side of a run of a DP plan: size the noise, charge the ledger, release.

Before the sandbox starts, `PrivacyCharge.prepare` reads the dataset's rules in
``privacy.yaml``, sizes the mechanism for the ε the researcher asked for at the
domain's δ (DP-SGD: the noise multiplier for this many steps; evaluation: Gaussian
noise on the score histogram), charges the researcher's ledger atomically, and gives
the plan the domain's privacy parameters in place of the request's. After the run,
`release` turns the checked result into what leaves the domain (noisy metrics for an
evaluation) with the ε spent and the budget left; `refund` takes the charge back
when nothing was released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.dp_accounting import (Mechanism, dp_sgd_mechanism, gaussian_count_mechanism)
from domain_setup.privacy_policy import DatasetPrivacy
from domain_setup.server.privacy_ledger import BudgetExceeded, PrivacyLedger, Release

PRIVATE_KINDS = ("train_private", "secure_train_private", "evaluate_private")
DP_SGD_KINDS = ("train_private", "secure_train_private")
RELEASED_KEYS = {"train_private": ("weights", "history", "n_samples"),
                 "secure_train_private": ("sealed_shares", "n_samples", "history")}


class PrivacyRefused(Exception):
    """A DP run the domain will not start, with the one line the researcher sees."""


@dataclass
class PrivacyCharge:
    """One DP run's charge (see the module docstring)."""

    kind: str
    email: str
    dataset: str
    rules: DatasetPrivacy
    budget: float
    target_epsilon: float
    mechanism: Mechanism
    release_record: Release

    @classmethod
    def prepare(cls, kind: str, inputs: dict, *, ledger: PrivacyLedger,
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
        config = inputs.get("config") or {}
        if kind in DP_SGD_KINDS:
            mechanism = dp_sgd_mechanism(target_epsilon=target, delta=rules.delta,
                                         n_samples=n_samples, batch_size=int(config["batch_size"]),
                                         epochs=int(config["epochs"]))
        else:
            mechanism = gaussian_count_mechanism(target_epsilon=target, delta=rules.delta)
        budget = rules.budget_for(email, groups, role)
        try:
            record = ledger.charge(email, dataset, request_id=run_id, kind=kind,
                                   mechanism=mechanism, epsilon=target, delta=rules.delta,
                                   budget=budget)
        except BudgetExceeded as exc:
            raise PrivacyRefused(str(exc)) from None
        if kind in DP_SGD_KINDS:
            inputs["privacy"] = {"noise_multiplier": mechanism.noise_multiplier,
                                 "max_grad_norm": float(asked.get("max_grad_norm", 1.0)),
                                 "delta": rules.delta}
        else:  # the evaluation's noise is the server's: the plan gets nothing of it
            inputs["privacy"] = {}
        return cls(kind, email, dataset, rules, budget, target, mechanism, record)

    def release(self, result: dict, ledger: PrivacyLedger) -> dict:
        """What leaves the domain: the result (evaluation: metrics of the noisy counts)
        with the ε spent, the δ, and the researcher's total and budget left."""
        from common.dp_metrics import add_gaussian_noise, metrics_from_histogram

        if self.kind == "evaluate_private":
            noisy = add_gaussian_noise(result["histogram"], self.mechanism.noise_multiplier)
            released: dict[str, Any] = {"metrics": metrics_from_histogram(noisy)}
        else:
            released = {key: result[key] for key in RELEASED_KEYS[self.kind]}
        account = ledger.account(self.email, self.dataset, delta=self.rules.delta)
        released["privacy"] = {"epsilon": self.target_epsilon, "delta": self.rules.delta,
                               "dataset": self.dataset, "spent": account.spent,
                               "spent_sum": account.spent_sum,
                               "left": account.left(self.budget)}
        return released

    def refund(self, ledger: PrivacyLedger, reason: str) -> None:
        """Take the charge back: nothing of the run was released."""
        ledger.refund(self.release_record.id, reason)
