"""What a researcher is told when a run releases nothing: a fixed line per category.

Once private data has entered the sandbox, a failure is a release too, and its text a
channel: an exception message, a contract violation naming a value, a result path
named after a dict key the code chose, the name of a class the code defined. So the
researcher gets one of the lines below, whose only parameters are known before the
run (the kind's name, the sandbox's limits, an exception name from a fixed list);
the admin gets the full reason in the domain log and the audit log.

    researcher_message(kind="custom", error=exc, limits=limits)
    # 'the plan raised ValueError inside the sandbox (the hospital admin has the details)'
"""

from __future__ import annotations

from typing import Any

from common import errors as project_errors
from domain_setup.sandbox.errors import (ContractViolation, PlanFailed, PlanOutOfMemory,
                                         PlanTimeout, ResultRefused)
from domain_setup.vetting.registry import ReleaseRefused

# The exception names a failed run may report: common builtins and the project's own
# errors. A name outside this list (a class the code defined, whatever its name says
# otherwise) is reported as "Exception": a run can choose among these few names only.
REPORTED_EXCEPTIONS = frozenset({
    "ArithmeticError", "AssertionError", "AttributeError", "ImportError", "IndexError",
    "KeyError", "LookupError", "MemoryError", "ModuleNotFoundError", "NameError",
    "NotImplementedError", "OverflowError", "RecursionError", "RuntimeError",
    "StopIteration", "TypeError", "ValueError", "ZeroDivisionError",
    *(name for name, value in vars(project_errors).items()
      if isinstance(value, type) and issubclass(value, Exception)),
})
DETAILS = "the hospital admin has the details"


def reported_exception(name: Any) -> str:
    """`name` if it is one of `REPORTED_EXCEPTIONS`, else "Exception"."""
    return name if isinstance(name, str) and name in REPORTED_EXCEPTIONS else "Exception"


def researcher_message(*, kind: str, error: BaseException, limits: Any) -> str:
    """The one line the researcher sees for a run that released nothing (see the module
    docstring); `limits` are the run's `SandboxLimits`."""
    if isinstance(error, PlanFailed):
        return (f"the plan raised {reported_exception(error.exc_type)} inside the sandbox "
                f"({DETAILS})")
    if isinstance(error, PlanTimeout):
        return (f"the plan exceeded its time limit ({limits.timeout_seconds:g} s wall clock, "
                f"{limits.cpu_seconds} s CPU) and was stopped")
    if isinstance(error, PlanOutOfMemory):
        return f"the plan exceeded its {limits.memory_mb} MB memory limit and was stopped"
    if isinstance(error, ContractViolation):
        return f"result withheld: it breaks the {kind} output contract ({DETAILS})"
    if isinstance(error, ResultRefused):
        return f"result withheld: it is not plain data or is too large ({DETAILS})"
    if isinstance(error, ReleaseRefused):
        return f"result withheld: it holds a value the {kind} plan kind may not release here"
    return f"the run ended without a result ({DETAILS})"
