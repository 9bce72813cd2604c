"""The SIFA operator: every available backend against the reference and a 1x3x3 convolution.

    python benchmarks/ops.py                 # batch 8, T = 4, C 64/128/256/512 at 56/28/14/7 px
    python benchmarks/ops.py --backends cpu --repeats 10 --no-memory

The same as ``sifa benchmark op``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "op", *sys.argv[1:]]))
