"""Run the infrastructure commands: `python -m infra --help`."""

import sys

from infra.cli import main

sys.exit(main())
