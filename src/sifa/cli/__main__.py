"""``python -m sifa.cli``, as ``python -m sifa``."""

import sys

from sifa.cli import main

sys.exit(main())
