"""Fused CPU backend: a C++/OpenMP kernel compiled on first use.

``torch.utils.cpp_extension.load`` builds ``csrc/inter_frame_attention_cpu.cpp`` into the
per-user extension cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``)
the first time the operator runs on a CPU tensor, and reuses the build afterwards (about a
minute for the first build on two cores, milliseconds later). Nothing is compiled when ``sifa``
is imported or installed. When no compiler (or ninja) is there, :func:`load` returns ``None``,
and the reason is kept for :func:`sifa.ops.backends` and the one warning of the dispatcher.

float32 and float64 run natively; other float dtypes are computed in float32.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "inter_frame_attention_cpu.cpp"
# Part of the module name, so that a changed kernel never loads a stale build.
VERSION = 2

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, object] = {}


def _missing_tool() -> str | None:
    """Why a build cannot start, before trying it."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; set CXX)"
    # ninja may sit beside this Python without the environment being activated.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def load():
    """The compiled module, building it if needed; ``None`` (see :func:`failure`) if it cannot
    be built here."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        module, reason = None, _missing_tool()
        if reason is None:
            from torch.utils import cpp_extension

            name = f"sifa_cpu_v{VERSION}"
            if not _is_built(name):
                logger.info("building the fused CPU kernel of sifa (first use only, ~1 minute)")
            try:
                module = cpp_extension.load(
                    name=name,
                    sources=[str(SOURCE)],
                    extra_cflags=["-O3", "-fopenmp"],
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
            except Exception as error:  # a failed build: fall back, say why
                lines = [line for line in str(error).splitlines() if line.strip()]
                reason = f"the C++ build failed: {lines[-1] if lines else type(error).__name__}"
        _state["module"], _state["failure"] = module, reason
        return module


def _is_built(name: str) -> bool:
    """Whether the extension cache already holds a build (then loading takes milliseconds)."""
    from torch.utils import cpp_extension

    try:  # a private helper of cpp_extension: the folder load() builds in
        folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:
        return False
    return (folder / f"{name}.so").is_file()


def failure() -> str | None:
    """Why the kernel is unavailable (``None`` if it loaded or was not tried yet)."""
    return _state.get("failure")  # type: ignore[return-value]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _kernel_inputs(query, key, offset):
    """Contiguous inputs in the compute dtype; the key channels-last, as the kernel reads it."""
    dtype = _compute_dtype(query.dtype)
    key_cl = key.to(dtype).permute(0, 2, 3, 1).contiguous()
    return query.to(dtype).contiguous(), key_cl, offset.to(dtype).contiguous()


def forward(query, key, offset, kernel_size, dilation, groups, scale, normalize):
    out = load().forward(
        *_kernel_inputs(query, key, offset),
        kernel_size,
        dilation,
        groups,
        float(scale),
        normalize == "softmax",
    )
    return out.to(query.dtype)


def backward(grad_out, query, key, offset, kernel_size, dilation, groups, scale, normalize):
    query_c, key_cl, offset_c = _kernel_inputs(query, key, offset)
    grad_query, grad_key_cl, grad_offset = load().backward(
        grad_out.to(query_c.dtype).contiguous(),
        query_c,
        key_cl,
        offset_c,
        kernel_size,
        dilation,
        groups,
        float(scale),
        normalize == "softmax",
    )
    grad_key = grad_key_cl.permute(0, 3, 1, 2).contiguous()
    return grad_query.to(query.dtype), grad_key.to(key.dtype), grad_offset.to(offset.dtype)
