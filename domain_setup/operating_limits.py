"""The operating limits an admin sets at ``start``: one table, read by the CLI (flags and
``--help``), the admin facade, and the server (``config.extra``). A limit given once is
remembered in the state directory's config until given again.

    python -m domain_setup start --sandbox-memory-budget-mb 8192 --max-concurrent-runs 2
    AdminClient.start(state_dir, operating={"max_concurrent_runs": 2})
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Mapping

from common.errors import DomainError


@dataclass(frozen=True)
class Limit:
    """One ``start`` option: its flag, the config key it is kept under, and its range."""

    flag: str
    key: str
    kind: type
    low: float
    high: float
    metavar: str
    help: str

    def checked(self, value: Any) -> Any:
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            raise DomainError(f"{self.flag} {value!r} is not a number") from None
        if not self.low <= number <= self.high or (self.kind is float and number <= 0):
            raise DomainError(f"{self.flag} {value} must be between {self.low:g} and "
                              f"{self.high:g}")
        return number


LIMITS = (
    Limit("--plan-timeout", "plan_timeout_seconds", float, 0, 86400, "SECONDS",
          "wall-clock limit of each sandboxed run, counted from when it leaves the queue "
          "(default: approval.yaml's)"),
    Limit("--plan-memory-mb", "plan_memory_mb", int, 256, 1 << 20, "MB",
          "memory limit of each sandboxed run (default: approval.yaml's)"),
    Limit("--sandbox-memory-budget-mb", "sandbox_memory_budget_mb", int, 256, 1 << 24, "MB",
          "the memory limits of the runs going at once must fit this; the others wait in a "
          "queue (default: half the machine's memory)"),
    Limit("--max-concurrent-runs", "max_concurrent_runs", int, 1, 1024, "N",
          "sandboxed runs at once (default: the number of cores)"),
    Limit("--max-queued-runs", "max_queued_runs", int, 0, 10_000, "N",
          "runs that may wait for a sandbox; the next is refused at once (default 32)"),
    Limit("--audit-max-mb", "audit_max_mb", int, 1, 1 << 20, "MB",
          "audit.jsonl rotates when it would pass this size (default 50)"),
    Limit("--audit-keep", "audit_keep", int, 1, 1000, "N",
          "rotated audit files kept (audit.jsonl.1 ...; default 5)"),
    Limit("--min-free-disk-mb", "min_free_disk_mb", int, 0, 1 << 24, "MB",
          "/health reports degraded when the state directory's disk has less free space "
          "(default 500)"),
)
BY_KEY = {limit.key: limit for limit in LIMITS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every limit's flag to the ``start`` parser."""
    for limit in LIMITS:
        parser.add_argument(limit.flag, dest=limit.key, type=limit.kind, metavar=limit.metavar,
                            help=limit.help)


def from_args(args: argparse.Namespace) -> dict:
    """The limits given on the command line (key: value)."""
    return {limit.key: getattr(args, limit.key) for limit in LIMITS
            if getattr(args, limit.key, None) is not None}


def checked(values: Mapping[str, Any]) -> dict:
    """`values` validated (DomainError naming the flag on a bad one)."""
    unknown = sorted(set(values) - set(BY_KEY))
    if unknown:
        raise DomainError(f"unknown operating limit(s): {', '.join(unknown)}")
    return {key: BY_KEY[key].checked(value) for key, value in values.items()
            if value is not None}


def get(extra: Mapping[str, Any], key: str, default: Any) -> Any:
    """A limit from the config's ``extra`` (`default` when the admin never set it)."""
    value = extra.get(key)
    return default if value is None else BY_KEY[key].kind(value)
