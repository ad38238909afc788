"""`python -m drillbook.cli`: the same as the `drillbook` command."""

import sys

from drillbook.cli.main import command

sys.exit(command())
