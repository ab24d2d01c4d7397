"""Hospital side of PneumoSyft, by process: `server/` (the domain), `sandbox/` (researcher
code), `admin/` (the admin's CLI and `AdminClient`); the modules here (state, policies,
roles, code rules) serve both."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: common/, policies/, ...
