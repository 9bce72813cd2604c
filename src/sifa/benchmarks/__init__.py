"""The benchmarks behind ``sifa benchmark TARGET``, one module per target: :mod:`~.models`
(one training and one inference step per model), :mod:`~.ops` (the operator's backends, target
``op``), :mod:`~.kernels` (the Triton kernels compiled for a GPU, read without one),
:mod:`~.demo` (the demo over many seeds), :mod:`~.data` (data loading), :mod:`~.augment`
(the training augmentations) and :mod:`~.inference` (feature extraction and streaming).

The command's options are in :mod:`sifa.cli.benchmark`. The repository's top-level
``benchmarks/*.py`` scripts of the same names are thin wrappers over ``sifa benchmark TARGET``.
"""
