import sys

from domain_setup.cli import main

sys.exit(main())
