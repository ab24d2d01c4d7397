"""`python -m domain_setup.server STATE_DIR`: the domain's server process."""
import sys

from domain_setup.server.app import main

sys.exit(main())
