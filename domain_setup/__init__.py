"""Hospital side of PneumoSyft, by process: `server/` (the domain), `sandbox/` (researcher
code), `admin/` (the admin's CLI and `AdminClient`); `policy/` (the policy files and the
federation's members) and `vetting/` (plan kinds, verdicts, what each run may release)
serve all three, as do the state directory and the aggregation key modules here."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: common/, policies/, ...
