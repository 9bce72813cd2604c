"""What the Triton kernels compile to on a GPU (registers, spills, memory instructions), read
on any machine: nothing runs, so no GPU is needed.

    python benchmarks/kernels.py                          # sm_90 (H100), float32, SIFA-Net shapes
    python benchmarks/kernels.py --arch 80 --dtype bfloat16 --deterministic

The same as ``sifa benchmark kernels``; every option of that command works here.
"""

import sys

from sifa.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "kernels", *sys.argv[1:]]))
