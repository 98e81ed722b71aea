"""``python -m metasr.cli``: the ``metasr`` command."""

import sys

from metasr.cli import main

sys.exit(main())
