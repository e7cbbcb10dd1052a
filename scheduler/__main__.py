"""`python -m scheduler` runs the eastwest command."""

import sys

from scheduler.cli import main

sys.exit(main())
