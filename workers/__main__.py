"""``python -m workers``: the ``modelyard`` command line, for an environment without the script."""

import sys

from workers.cli import main

sys.exit(main())
