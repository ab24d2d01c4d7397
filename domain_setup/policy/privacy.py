"""``policies/privacy.yaml``: what each release may cost and what each researcher may spend.

Per dataset: δ (set by the domain, never by the researcher), whether training must be
differentially private (``require_dp``), the largest ε of one request, the smallest
number of images of one release, and budgets: the total ε a researcher may spend on
the dataset, for users, groups or roles with the same matching as the dataset rules
of ``permissions.yaml``. The first budget rule that matches applies; nobody matched
has no budget (0). Validated like the other policy files (``file:line: reason``).

    rules = load_privacy_rules(Path("policies/privacy.yaml"))
    rules.dataset("xray").budget_for("ada@pneumosyft-research.org", ("pneumonia-study",),
                                     "data_scientist")                    # 10.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import PolicyError
from domain_setup.policy.schema import (POSITIVE_INT, TEXT, WHO_SCHEMA, DatasetAccess, DictOf,
                                        ListOf, Scalar, Struct, load_policy)

MAX_EPSILON = 100.0


def _delta_problem(value: float) -> str | None:
    return None if 0 < value < 1e-2 else f"δ must be above 0 and below 0.01, got {value}"


def _epsilon_problem(value: float) -> str | None:
    return None if 0 < value <= MAX_EPSILON else \
        f"ε must be above 0 and at most {MAX_EPSILON:g}, got {value}"


def _budget_problem(rule: dict) -> str | None:
    return None if any(rule.get(key) for key in WHO_SCHEMA) else \
        "a budget names its users, groups or roles"


EPSILON = Scalar(float, _epsilon_problem)
BUDGET_SCHEMA = Struct(required={"epsilon": EPSILON}, optional=WHO_SCHEMA,
                       check=_budget_problem)
PRIVACY_SCHEMA = Struct(required={"datasets": DictOf(Struct(
    required={"delta": Scalar(float, _delta_problem), "max_epsilon_per_request": EPSILON,
              "min_samples_per_release": POSITIVE_INT, "budgets": ListOf(BUDGET_SCHEMA)},
    optional={"require_dp": Scalar(bool)}), key=TEXT)})


@dataclass(frozen=True)
class Budget:
    """One budget rule: who it is for and the total ε they may spend."""

    who: DatasetAccess
    epsilon: float


@dataclass(frozen=True)
class DatasetPrivacy:
    """The privacy rules of one dataset."""

    name: str
    delta: float
    require_dp: bool
    max_epsilon_per_request: float
    min_samples_per_release: int
    budgets: tuple[Budget, ...]

    def budget_for(self, email: str, groups: tuple[str, ...] | list[str], role: str) -> float:
        """The ε budget of the first rule that matches (0 when none does)."""
        for budget in self.budgets:
            if budget.who.matches(email, groups, role):
                return budget.epsilon
        return 0.0


@dataclass(frozen=True)
class PrivacyRules:
    """The content of privacy.yaml."""

    datasets: dict[str, DatasetPrivacy]

    def dataset(self, name: str) -> DatasetPrivacy | None:
        """The rules of dataset `name`, or None when privacy.yaml does not list it."""
        return self.datasets.get(name)


def load_privacy_rules(path: str | Path) -> PrivacyRules:
    """The dataset privacy rules of privacy.yaml (PolicyError naming file and line)."""
    data = load_policy(path, PRIVACY_SCHEMA)
    datasets = {}
    for name, rule in data["datasets"].items():
        datasets[name] = DatasetPrivacy(
            name=name, delta=float(rule["delta"]), require_dp=bool(rule.get("require_dp", False)),
            max_epsilon_per_request=float(rule["max_epsilon_per_request"]),
            min_samples_per_release=int(rule["min_samples_per_release"]),
            budgets=tuple(Budget(DatasetAccess.of(b), float(b["epsilon"]))
                          for b in rule["budgets"]))
    return PrivacyRules(datasets)


__all__ = ["Budget", "DatasetPrivacy", "PolicyError", "PrivacyRules", "load_privacy_rules"]
