"""The demo over many seeds, on its data and on a copy re-encoded at another CRF; checks that
every SIFA-Net run reaches 95% and every C2D run stays at or under 60%.

    python benchmarks/demo.py                  # 8 seeds, original data and a CRF 30 copy
    python benchmarks/demo.py --seeds 3 --crf 0

The same as ``sifa benchmark demo``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "demo", *sys.argv[1:]]))
