"""SIFA-Net vs its C2D and TSM baselines: one training step and one inference step on the CPU.

    python benchmarks/models.py                      # batch 2, 16 frames, 112 px
    python benchmarks/models.py --repeats 10 --threads 2

The same as ``sifa benchmark models``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "models", *sys.argv[1:]]))
