import sys

from domain_setup.admin.cli import main

sys.exit(main())
