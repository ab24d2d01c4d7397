"""Resource limits of one sandboxed run.

    >>> limits = SandboxLimits.from_mapping({"timeout_seconds": 30, "memory_mb": 2048})
    >>> limits.describe().split(", ")[:2]
    ['timeout 30 s', 'memory 2048 MB']
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import LimitsError

MB = 1024 * 1024

# name -> (smallest allowed value, largest allowed value, unit for messages)
_RANGES: dict[str, tuple[float, float, str]] = {
    "timeout_seconds": (0.1, 7 * 24 * 3600, "s"),
    "memory_mb": (64, 1024 * 1024, "MB"),
    "cpu_seconds": (1, 30 * 24 * 3600, "s"),
    "max_file_mb": (1, 1024 * 1024, "MB"),
    "max_processes": (8, 100_000, ""),
    "max_open_files": (16, 1_048_576, ""),
    "tmpfs_mb": (1, 1024 * 1024, "MB"),
    "max_output_mb": (1, 64 * 1024, "MB"),
    "max_log_kb": (1, 1024 * 1024, "KB"),
}


@dataclass(frozen=True)
class SandboxLimits:
    """Limits enforced on every run; all values must be positive numbers.

    ``timeout_seconds`` wall clock (kill), ``memory_mb`` memory cgroup (RAM plus
    /tmp, which is a tmpfs), ``cpu_seconds`` RLIMIT_CPU of the interpreter,
    ``max_file_mb`` RLIMIT_FSIZE, ``max_processes`` pids cgroup (threads count),
    ``max_open_files`` RLIMIT_NOFILE, ``tmpfs_mb`` size of /tmp, ``max_output_mb``
    bound on the encoded result, ``max_log_kb`` bound on each of stdout/stderr.
    """

    timeout_seconds: float = 600
    memory_mb: int = 4096
    cpu_seconds: int = 3600
    max_file_mb: int = 256
    max_processes: int = 64
    max_open_files: int = 256
    tmpfs_mb: int = 256
    max_output_mb: int = 256
    max_log_kb: int = 256

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name), integer=field.name != "timeout_seconds")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SandboxLimits":
        """Build limits from a mapping (e.g. a policy file); unknown keys are refused."""
        if not isinstance(values, Mapping):
            raise LimitsError(f"sandbox limits must be a mapping, got {type(values).__name__}")
        known = [field.name for field in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise LimitsError(f"unknown sandbox limit {key!r} (known: {', '.join(known)})")
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        """The limits as a plain dict (the inverse of ``from_mapping``)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for the admin: "timeout 30 s, memory 2048 MB, ..."."""
        return (f"timeout {self.timeout_seconds:g} s, memory {self.memory_mb} MB, "
                f"CPU {self.cpu_seconds} s, {self.max_processes} processes/threads, "
                f"{self.max_open_files} open files, files up to {self.max_file_mb} MB, "
                f"/tmp {self.tmpfs_mb} MB, result up to {self.max_output_mb} MB, "
                f"logs up to {self.max_log_kb} KB")

    @property
    def memory_bytes(self) -> int:
        """``memory_mb`` in bytes."""
        return self.memory_mb * MB

    @property
    def tmpfs_bytes(self) -> int:
        """``tmpfs_mb`` in bytes."""
        return self.tmpfs_mb * MB

    @property
    def max_output_bytes(self) -> int:
        """``max_output_mb`` in bytes."""
        return self.max_output_mb * MB

    @property
    def max_log_bytes(self) -> int:
        """``max_log_kb`` in bytes."""
        return self.max_log_kb * 1024


def _check(name: str, value: Any, *, integer: bool) -> None:
    low, high, unit = _RANGES[name]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise LimitsError(f"sandbox limit {name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        unit = f" {unit}" if unit else ""
        raise LimitsError(f"sandbox limit {name} must be between {low:g} and {high:g}{unit}, "
                          f"got {value!r}")
