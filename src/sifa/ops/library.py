"""The SIFA operator registered with ``torch.library``.

``torch.ops.sifa.inter_frame_attention`` and its backward are custom ops with fake (meta)
implementations, so ``torch.compile`` and ``torch.export`` see one opaque op instead of the
sampling and einsum steps inside it. The last argument names the backend (``"auto"``, or one
of :data:`sifa.ops.backends.BACKENDS`); :mod:`sifa.ops.backends` picks the implementation.
The public entry point with argument checks is :func:`sifa.ops.inter_frame_attention`.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from sifa.ops import reference
from sifa.ops.backends import implementation, select_backend


@torch.library.custom_op("sifa::inter_frame_attention", mutates_args=())
def inter_frame_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int,
    dilation: int,
    groups: int,
    scale: float,
    normalize: str,
    backend: str,
) -> torch.Tensor:
    run = implementation(select_backend(query.device, backend))
    return run.forward(query, key, offset, kernel_size, dilation, groups, scale, normalize)


@inter_frame_attention_op.register_fake
def _(query, key, offset, kernel_size, dilation, groups, scale, normalize, backend):
    return torch.empty_like(query, memory_format=torch.contiguous_format)


@torch.library.custom_op("sifa::inter_frame_attention_backward", mutates_args=())
def inter_frame_attention_backward_op(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int,
    dilation: int,
    groups: int,
    scale: float,
    normalize: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    run = implementation(select_backend(query.device, backend))
    return run.backward(
        grad_out, query, key, offset, kernel_size, dilation, groups, scale, normalize
    )


@inter_frame_attention_backward_op.register_fake
def _(grad_out, query, key, offset, kernel_size, dilation, groups, scale, normalize, backend):
    return (
        torch.empty_like(query, memory_format=torch.contiguous_format),
        torch.empty_like(key, memory_format=torch.contiguous_format),
        torch.empty_like(offset, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    query, key, offset, kernel_size, dilation, groups, scale, normalize, backend = inputs
    ctx.save_for_backward(query, key, offset)
    ctx.options = (kernel_size, dilation, groups, scale, normalize, backend)


def _backward(ctx, grad_out):
    query, key, offset = ctx.saved_tensors
    grads = inter_frame_attention_backward_op(grad_out, query, key, offset, *ctx.options)
    return (*grads, None, None, None, None, None, None)


inter_frame_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _register_autocast(device_type: str) -> None:
    """Under autocast on ``device_type``, float32 inputs are cast to the autocast dtype of the
    moment (``torch.autocast(..., dtype=...)``), as autocast does for convolutions, and the op
    runs with autocast off; the kernels accumulate in float32 whatever the input dtype.
    ``register_autocast`` of ``torch.library`` fixes one dtype when registering, hence this."""
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def cast(value):
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            return value.to(torch.get_autocast_dtype(device_type))
        return value

    def kernel(_keyset, *args):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return torch.ops.sifa.inter_frame_attention.default(*(cast(a) for a in args))

    _AUTOCAST_LIBRARY.impl("inter_frame_attention", kernel, key, with_keyset=True)


_AUTOCAST_LIBRARY = torch.library.Library("sifa", "IMPL")
for _device_type in ("cuda", "cpu"):
    _register_autocast(_device_type)


def inter_frame_attention_macs(query_shape, kernel_size: int) -> int:
    """Multiply-adds of one forward call: per channel and tap, 4 for the bilinear sample (one
    per corner), 1 for the score and 1 for the aggregation."""
    batch, channels, height, width = query_shape
    return 6 * batch * channels * kernel_size * kernel_size * height * width


# flop_counter counts FLOPs, two per multiply-add. The backward (gradients of the scores, the
# values, the query, and of key and offsets through the sampling) is counted as twice the
# forward, the usual convention for convolutions.
@register_flop_formula(torch.ops.sifa.inter_frame_attention)
def _forward_flops(query_shape, key_shape, offset_shape, kernel_size, *args, **kwargs) -> int:
    return 2 * inter_frame_attention_macs(query_shape, kernel_size)


@register_flop_formula(torch.ops.sifa.inter_frame_attention_backward)
def _backward_flops(grad_shape, query_shape, key_shape, offset_shape, kernel_size, *args, **kwargs):
    return 4 * inter_frame_attention_macs(query_shape, kernel_size)


def _decomposed_forward(query, key, offset, kernel_size, dilation, groups, scale, normalize,
                        backend):  # fmt: skip
    # The reference implementation is written in standard aten ops only (grid_sample, einsum,
    # arithmetic), so tracing it replaces the custom op by operators every runtime knows.
    return reference.forward(query, key, offset, kernel_size, dilation, groups, scale, normalize)


def decompositions() -> dict:
    """``{op: function}`` rewriting ``torch.ops.sifa.inter_frame_attention`` into standard
    aten ops (``grid_sample`` with bilinear sampling and zero padding, ``einsum``).

    For :meth:`torch.export.ExportedProgram.run_decompositions`: the result needs neither
    ``sifa`` to load nor a custom operator in ONNX (the sampling becomes ``GridSample``)."""
    return {torch.ops.sifa.inter_frame_attention.default: _decomposed_forward}
