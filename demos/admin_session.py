"""An admin's session at one hospital host: several CLI commands in one process (syft is
imported once), each exactly as typed at the terminal; stops at the first that fails.

    python -m demos.admin_session STATE_DIR "start --name X --port 8443" "federation enable"

Prints each command's output; exits with the first failing command's code.
"""
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain_setup.admin.cli import main  # noqa: E402

if __name__ == "__main__":
    state_dir, *commands = sys.argv[1:]
    for command in commands:
        code = main([*shlex.split(command), "--state-dir", state_dir])
        sys.stdout.flush()
        if code:
            print(f"failed: {command}", file=sys.stderr)
            sys.exit(code)
