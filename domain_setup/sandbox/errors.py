"""Errors of the sandbox, one class per thing an admin or researcher must tell apart.

This module imports nothing: it is also bound into the sandbox, where the runner
uses the plain-data errors.

    SandboxError
    ├── LimitsError            invalid SandboxLimits
    ├── SandboxUnavailable     bwrap / cgroups / seccomp missing on this machine
    ├── PlainDataError         malformed, truncated or oversized plain data
    │   └── ResultNotPlainData a value that plain data cannot carry
    └── PlanError              a run produced no result
        ├── PlanTimeout        wall-clock or CPU-time limit
        ├── PlanOutOfMemory    memory limit (cgroup OOM kill or MemoryError)
        ├── PlanFailed         the researcher's code raised
        ├── ResultRefused      result not plain data, too large or malformed
        ├── SandboxCrashed     the sandbox died without reporting anything
        └── ContractViolation  a plain-data result that breaks its plan's output contract
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error raised by the sandbox package."""


class LimitsError(SandboxError):
    """A sandbox limit is missing, of the wrong type or out of range."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run on this machine; the message says what to install or fix."""


class PlainDataError(SandboxError):
    """Plain data that is malformed, truncated, too large or too deep."""


class ResultNotPlainData(PlainDataError):
    """A value that plain data cannot carry (an object, a tensor in a result, ...)."""


class PlanError(SandboxError):
    """A sandboxed run ended without a usable result.

    ``stdout`` and ``stderr`` hold what the run printed (bounded), for the admin.
    """

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


class PlanTimeout(PlanError):
    """The run exceeded its wall-clock or CPU-time limit and was killed."""


class PlanOutOfMemory(PlanError):
    """The run exceeded its memory limit."""


class PlanFailed(PlanError):
    """The researcher's code raised; ``exc_type``, ``exc_message`` and ``traceback`` say how."""

    def __init__(self, message: str, *, exc_type: str = "", exc_message: str = "",
                 traceback: str = "", stdout: str = "", stderr: str = "") -> None:
        super().__init__(message, stdout=stdout, stderr=stderr)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback


class ResultRefused(PlanError):
    """The run returned something that is not plain data, too large, or malformed."""


class SandboxCrashed(PlanError):
    """The sandbox exited without a result or an error report."""


class ContractViolation(PlanError):
    """A result that is plain data but breaks its plan's output contract; it is withheld.

    The message is one line naming the offending path, e.g.
    ``history.loss[2] is not finite (nan)``.
    """
