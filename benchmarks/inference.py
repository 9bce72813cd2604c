"""Inference speed: videos per second of feature extraction and latency of streaming
predictions, on synthetic videos with random weights (nothing downloaded, no checkpoint needed).

    python benchmarks/inference.py                 # sifa_resnet18 (demo) 8x64, sifa_resnet50 16x224
    python benchmarks/inference.py --models sifa_resnet50 --frames 8 --size 112 --threads 1
    python benchmarks/inference.py --realtime      # the video read at its own pace, as if live

The same as ``sifa benchmark inference``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "inference", *sys.argv[1:]]))
