"""Training augmentations: ms per clip of each RandAugment operation, RandAugment as a whole and
random erasing, beside kornia's counterparts where kornia is installed.

    python benchmarks/augment.py                   # 16x3x224x224 clips, one thread
    python benchmarks/augment.py --frames 8 --size 112 --no-kornia

The same as ``sifa benchmark augment``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "augment", *sys.argv[1:]]))
