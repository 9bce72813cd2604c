"""What the Triton kernels compile to on a CUDA GPU, read on any machine, GPU or not.

The kernels are built exactly as :mod:`sifa.ops.triton` launches them at the given shapes (the
same :class:`~sifa.ops.triton.Launch` arguments, so the same specialisation on unit strides
and aligned sizes), for a chosen architecture, by Triton's compiler and ``ptxas`` (both ship
in the triton wheel); nothing runs. From the compiled code it reads what decides a kernel's
speed before any timing: registers per thread and bytes spilled to local memory, shared
memory, how many programs fit on one SM by their registers, and the global memory
instructions by kind and width (vector loads and stores; whether the atomics are
fire-and-forget reductions, ``red``, or round trips, ``atom``). Instruction counts are static:
the taps run in a loop, so a count is per loop body, not per launch.

This is how the kernels are tuned where no GPU is at hand; timings still need one
(``sifa benchmark op --device cuda``).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import torch

from sifa.benchmarks.ops import DTYPES, SHAPES

REGISTERS_PER_SM = 65536  # every CUDA architecture since Volta
ARCHES = (80, 86, 89, 90, 100, 120)


class KernelReportError(RuntimeError):
    """The kernels cannot be compiled here (no Triton, interpreter mode, a compiler failure)."""


@dataclass
class KernelStats:
    kernel: str  # forward, backward or gather_key_grad
    channels: int
    size: int
    dtype: str
    block_c: int
    block_p: int
    warps: int
    registers: int  # per thread
    spill_bytes: int  # per thread, in local memory (stack frame)
    shared_bytes: int
    programs_per_sm: int  # resident at once, as far as registers allow
    loads: dict[str, int]  # width ("v4.b32", "b16", ...) -> static count
    stores: dict[str, int]
    atomics: dict[str, int]  # full instruction ("red.global.gpu.relaxed.add.v4.f32") -> count


# ld/st.global, optional qualifiers (cache hints such as L1::evict_last), then the width.
_MEMORY = re.compile(r"\b(ld|st)\.global(?:\.[\w:]+?)*?\.((?:v[248]\.)?[bfsu]\d+)\b")
_ATOMIC = re.compile(r"\b((?:atom|red)\.global[\w.]*)")
_USAGE = re.compile(r"REG:(\d+) STACK:(\d+)")


def memory_instructions(ptx: str) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Static counts of global loads and stores by width, and of atomics by instruction."""
    loads: collections.Counter[str] = collections.Counter()
    stores: collections.Counter[str] = collections.Counter()
    for kind, width in _MEMORY.findall(ptx):
        (loads if kind == "ld" else stores)[width] += 1
    return dict(loads), dict(stores), dict(collections.Counter(_ATOMIC.findall(ptx)))


def _triton():
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise KernelReportError(
            "TRITON_INTERPRET=1 is set: the kernels are then interpreted, not compiled; "
            "unset it to compile them for a GPU"
        )
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, make_backend
        from triton.runtime.jit import create_function_from_signature
    except ImportError as error:
        raise KernelReportError(f"triton cannot be imported ({error})") from None
    return triton, GPUTarget, ASTSource, make_backend, create_function_from_signature


def compile_launch(launch, arch: int):
    """Compile one :class:`~sifa.ops.triton.Launch` for CUDA compute capability ``arch``
    (90 = H100) the way launching it would, without launching it."""
    from sifa.ops.triton import LAUNCH_OPTIONS

    triton, GPUTarget, ASTSource, make_backend, signature_binder = _triton()
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    fn = launch.kernel
    try:
        # Triton's own argument binding: the specialisation a launch on a GPU would get.
        binder = signature_binder(fn.signature, fn.params, backend)
        kwargs = dict(launch.constants, **LAUNCH_OPTIONS, debug=False)
        bound, specialization, options = binder(*launch.args, **kwargs)
        options, signature, constants, attrs = fn._pack_args(
            backend, kwargs, bound, specialization, options
        )
    except (AttributeError, TypeError) as error:
        raise KernelReportError(
            f"this triton ({triton.__version__}) binds kernel arguments differently "
            f"({type(error).__name__}: {error}); the report knows triton 3.9"
        ) from None
    try:
        return triton.compile(
            ASTSource(fn, signature, constants, attrs), target=target, options=options.__dict__
        )
    except Exception as error:  # compiler or ptxas failure: say which kernel
        raise KernelReportError(f"compiling {launch.name} for sm_{arch} failed: {error}") from None


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """``(registers, spilled bytes)`` per thread, from ``cuobjdump``."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as file:
            file.write(cubin)
        result = subprocess.run(
            [knobs.nvidia.cuobjdump.path, "-res-usage", path],
            capture_output=True,
            text=True,
            check=False,
        )
    match = _USAGE.search(result.stdout)
    if match is None:
        raise KernelReportError(f"cuobjdump gave no resource usage: {result.stderr.strip()}")
    registers, stack = (int(g) for g in match.groups())
    return registers, stack


def _launches(channels, size, pairs, dtype, normalize, groups, deterministic):
    """The launches one forward and one backward make at this shape (CPU tensors stand in
    for the GPU's: only dtypes, shapes, strides and alignment matter)."""
    from sifa.ops import triton as backend

    query, key, grad_out = (torch.empty(pairs, channels, size, size, dtype=dtype) for _ in "qkg")
    offset = torch.empty(pairs, 18, size, size, dtype=dtype)
    out = torch.empty_like(query)
    key = backend._channels_last(key)
    switches = (3, 1, groups, 1.0, normalize)
    launches = [backend.forward_launch(query, key, offset, out, *switches)]
    buffers = backend.BackwardBuffers.allocate(query, offset, 3, groups, deterministic)
    launches.append(
        backend.backward_launch(grad_out, query, key, offset, buffers, *switches, deterministic)
    )
    if deterministic:
        rowptr = torch.zeros(pairs * size * size + 1, dtype=torch.int64)
        order = torch.zeros(buffers.corner_index.numel(), dtype=torch.int64)
        launches.append(backend.gather_launch(rowptr, order, buffers, grad_out, query, groups))
    return launches


def kernel_report(
    *,
    shapes=SHAPES,
    batch: int = 8,
    frames: int = 4,
    dtype: str = "float32",
    arch: int = 90,
    normalize: str = "none",
    groups: int = 1,
    deterministic: bool = False,
) -> list[KernelStats]:
    """Every kernel of a forward and a backward at every ``(channels, size)``, compiled for
    ``sm_{arch}``, at the operator benchmark's shapes (``batch * (frames - 1)`` frame pairs)."""
    rows = []
    for channels, size in shapes:
        if channels % groups:
            raise ValueError(f"groups={groups} does not divide {channels} channels")
        launches = _launches(
            channels, size, batch * (frames - 1), DTYPES[dtype], normalize, groups, deterministic
        )
        for launch in launches:
            compiled = compile_launch(launch, arch)
            registers, spill = resource_usage(compiled.asm["cubin"])
            warps = compiled.metadata.num_warps
            loads, stores, atomics = memory_instructions(compiled.asm["ptx"])
            rows.append(
                KernelStats(
                    kernel=launch.name,
                    channels=channels,
                    size=size,
                    dtype=dtype,
                    block_c=launch.constants["BLOCK_C"],
                    block_p=launch.constants.get("BLOCK_P", 1),
                    warps=warps,
                    registers=registers,
                    spill_bytes=spill,
                    shared_bytes=compiled.metadata.shared,  # Triton's is all dynamic
                    programs_per_sm=REGISTERS_PER_SM // max(1, registers * 32 * warps),
                    loads=loads,
                    stores=stores,
                    atomics=atomics,
                )
            )
    return rows


def _widths(counts: dict[str, int]) -> str:
    return " ".join(f"{n}x{w}" for w, n in sorted(counts.items())) or "-"


def format_kernel_report(rows: list[KernelStats], setting: str) -> str:
    lines = [
        f"({setting})",
        "",
        "| C x H x W | kernel | tile C x P | warps | registers | spilled B | shared B "
        "| programs/SM | global loads | global stores | atomics |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.channels} x {r.size} x {r.size} | {r.kernel} | {r.block_c} x {r.block_p} "
            f"| {r.warps} | {r.registers} | {r.spill_bytes} | {r.shared_bytes} "
            f"| {r.programs_per_sm} | {_widths(r.loads)} | {_widths(r.stores)} "
            f"| {_widths(r.atomics)} |"
        )
    return "\n".join(lines)


def as_dicts(rows: list[KernelStats]) -> list[dict]:
    return [asdict(r) for r in rows]
