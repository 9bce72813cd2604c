import sys

from sifa.cli import main

sys.exit(main())
