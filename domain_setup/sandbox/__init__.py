"""Run researcher code in an isolated sandbox instead of ``exec`` in the server.

Each run is a fresh bubblewrap sandbox: uid 65534 with no capabilities, no
network, no environment, its own /proc, a size-limited /tmp, only /usr, the
interpreter and the vetted packages visible (read-only), seccomp filters (no
sockets, no exec, no new processes once the researcher's code runs), and a cgroup
bounding memory and processes. Data goes in and out as *plain data*: arrays and
basic Python values, never pickle.

    from pathlib import Path
    from domain_setup.sandbox import Sandbox, SandboxLimits, PlanFailed

    sandbox = Sandbox(SandboxLimits(timeout_seconds=60, memory_mb=2048),
                      vetted_packages=[Path("common")], torch_threads=2)
    sandbox.check_available()          # SandboxUnavailable says what to install
    source = '''
    def mean_pixel(images):
        return {"mean": float(images.float().mean())}
    '''
    run = sandbox.run(source, "mean_pixel", {"images": images_tensor})
    run.result["mean"], run.stdout, run.seconds

Errors: ``PlanTimeout``, ``PlanOutOfMemory``, ``PlanFailed`` (the researcher's
exception, with its traceback), ``ResultRefused`` (not plain data, too large),
``SandboxCrashed``; all are ``PlanError`` and carry the run's stdout/stderr.

What a result may be beyond plain data is its plan kind's output contract
(``domain_setup/vetting``), which raises ``ContractViolation`` (a ``PlanError``).
"""

from .errors import (ContractViolation, LimitsError, PlainDataError, PlanError, PlanFailed,
                     PlanOutOfMemory, PlanTimeout, ResultNotPlainData, ResultRefused,
                     SandboxCrashed, SandboxError, SandboxUnavailable)
from .limits import SandboxLimits
from .plain_data import decode, encode
from .runner import Sandbox, SandboxRun, SandboxSession

__all__ = [
    "ContractViolation",
    "LimitsError", "PlainDataError", "PlanError", "PlanFailed", "PlanOutOfMemory", "PlanTimeout",
    "ResultNotPlainData", "ResultRefused", "Sandbox", "SandboxCrashed", "SandboxError",
    "SandboxLimits", "SandboxRun", "SandboxSession", "SandboxUnavailable", "decode", "encode",
]
