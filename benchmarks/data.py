"""Data loading speed: PyAV vs decord vs frame folders, with 0, 1 and 2 DataLoader workers.

    python benchmarks/data.py                      # 16-frame clips at 112 and 224 px
    python benchmarks/data.py my_videos/*.mp4 --clips 32
    python benchmarks/data.py --prepared --workers 0 --threads 1   # 720p vs its `sifa prepare` copy

The same as ``sifa benchmark data``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "data", *sys.argv[1:]]))
