"""The SIFA operator against the slow loop implementation, gradcheck, opcheck and errors."""

from __future__ import annotations

import math
import os
from functools import partial

import pytest
import torch

from sifa.ops import inter_frame_attention

from backend_params import backend_params
from loop_reference import regular_window_attention, slow_inter_frame_attention

F64 = torch.float64
BACKEND_PARAMS = backend_params()


def make_inputs(
    batch=2, channels=4, height=4, width=5, kernel_size=3, offset_scale=1.5, dtype=F64, seed=0
):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    key = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    offset = offset_scale * torch.randn(
        batch, 2 * kernel_size**2, height, width, generator=gen, dtype=dtype
    )
    return query, key, offset


# (input shape, offset scale, operator switches): borders, offsets leaving the image,
# fractional offsets, dilation, groups, softmax, scales, kernel sizes, odd and tiny images.
CASES = {
    "default": (dict(), {}),
    "zero_offsets": (dict(offset_scale=0.0), {}),
    "far_outside": (dict(offset_scale=8.0), {}),
    "dilation2": (dict(), dict(dilation=2)),
    "groups2": (dict(), dict(groups=2)),
    "groups4": (dict(), dict(groups=4)),
    "softmax": (dict(), dict(normalize="softmax")),
    "softmax_groups2_dilation2": (dict(), dict(normalize="softmax", groups=2, dilation=2)),
    "scale_sqrt": (dict(), dict(scale="1/sqrt(C)")),
    "scale_number": (dict(), dict(scale=0.7)),
    "kernel1": (dict(kernel_size=1), dict(kernel_size=1)),
    "kernel5": (dict(kernel_size=5, height=3, width=4), dict(kernel_size=5)),
    "non_square": (dict(height=2, width=7), {}),
    "tiny_1x1": (dict(height=1, width=1), {}),
    "tiny_2x3": (dict(height=2, width=3), dict(normalize="softmax")),
    "batch1": (dict(batch=1, channels=6), dict(groups=3)),
}


def slow_scale(switches, channels):
    groups = switches.get("groups", 1)
    scale = switches.get("scale")
    if scale == "1/sqrt(C)":
        return 1.0 / math.sqrt(channels // groups)
    return scale


def slow(query, key, offset, switches):
    args = dict(switches, scale=slow_scale(switches, query.shape[1]))
    return slow_inter_frame_attention(query, key, offset, **args)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_reference_float64(backend, case):
    attention = partial(inter_frame_attention, backend=backend)
    shape, switches = CASES[case]
    query, key, offset = make_inputs(**shape)
    expected = slow(query, key, offset, switches)
    actual = attention(query, key, offset, **switches)
    assert actual.shape == query.shape and actual.dtype == F64
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_integer_offsets_sample_whole_pixels(backend):
    attention = partial(inter_frame_attention, backend=backend)
    query, key, offset = make_inputs()
    offset = offset.round()
    torch.testing.assert_close(
        attention(query, key, offset), slow(query, key, offset, {}), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_zero_offsets_equal_regular_window(backend, dilation):
    attention = partial(inter_frame_attention, backend=backend)
    query, key, _ = make_inputs(height=6, width=7)
    offset = torch.zeros(2, 18, 6, 7, dtype=F64)
    expected = regular_window_attention(query, key, dilation=dilation)
    actual = attention(query, key, offset, dilation=dilation)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_offsets_fully_outside_give_zero(backend):
    attention = partial(inter_frame_attention, backend=backend)
    query, key, offset = make_inputs()
    offset = torch.full_like(offset, 100.0)
    assert torch.count_nonzero(attention(query, key, offset)) == 0


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_non_contiguous_inputs(backend):
    attention = partial(inter_frame_attention, backend=backend)
    gen = torch.Generator().manual_seed(3)
    # Channels-last storage, a transposed spatial view and a strided slice.
    query = torch.randn(2, 5, 6, 4, generator=gen, dtype=F64).permute(0, 3, 1, 2)
    key = torch.randn(2, 4, 6, 10, generator=gen, dtype=F64)[..., ::2].transpose(2, 3)
    key = key.contiguous(memory_format=torch.channels_last)
    offset = torch.randn(2, 18, 6, 5, generator=gen, dtype=F64).transpose(2, 3) * 1.3
    assert not (query.is_contiguous() or key.is_contiguous() or offset.is_contiguous())
    actual = attention(query, key, offset, groups=2, normalize="softmax")
    expected = slow(
        query.contiguous(),
        key.contiguous(),
        offset.contiguous(),
        dict(groups=2, normalize="softmax"),
    )
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_empty_batch(backend):
    attention = partial(inter_frame_attention, backend=backend)
    query, key, offset = make_inputs(batch=0)
    assert attention(query, key, offset).shape == (0, 4, 4, 5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 1e-2)]
)
def test_lower_precision_close_to_float64(backend, dtype, atol):
    attention = partial(inter_frame_attention, backend=backend)
    query, key, offset = make_inputs(height=5, width=6)
    expected = attention(query, key, offset, normalize="softmax")
    actual = attention(query.to(dtype), key.to(dtype), offset.to(dtype), normalize="softmax")
    assert actual.dtype == dtype
    # Inputs are rounded to the dtype first, so compare against float64 on the rounded inputs.
    rounded = attention(
        query.to(dtype).double(),
        key.to(dtype).double(),
        offset.to(dtype).double(),
        normalize="softmax",
    )
    torch.testing.assert_close(actual.double(), rounded, rtol=0, atol=atol)
    assert (rounded - expected).abs().max() < 1.0  # the rounding itself stays sane


GRAD_CASES = [
    "default",
    "dilation2",
    "groups2",
    "groups4",
    "softmax",
    "softmax_groups2_dilation2",
    "scale_sqrt",
    "scale_number",
    "kernel1",
    "kernel5",
    "non_square",
    "tiny_2x3",
]


# Triton's interpreter takes a good fraction of a second per launch: there, gradcheck runs in
# fast mode (a random projection of the Jacobian) over the cases that cover every branch of
# the kernels; on a GPU every case runs in full (tests/ops/test_triton_cuda.py).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
INTERPRETED_GRAD_CASES = ["softmax_groups2_dilation2", "kernel1", "tiny_2x3"]


def gradcheck_params() -> list:
    params = []
    for backend in BACKEND_PARAMS:
        slow_launches = backend.values[0] == "triton" and INTERPRETED
        for case in INTERPRETED_GRAD_CASES if slow_launches else GRAD_CASES:
            params.append(pytest.param(backend.values[0], case, marks=backend.marks))
    return params


@pytest.mark.parametrize("backend, case", gradcheck_params())
def test_gradcheck_float64(backend, case):
    attention = partial(inter_frame_attention, backend=backend)
    shape, switches = CASES[case]
    shape = dict(shape, batch=1, height=min(shape.get("height", 3), 3), width=4)
    inputs = tuple(t.requires_grad_() for t in make_inputs(**shape))
    fast_mode = backend == "triton" and INTERPRETED
    assert torch.autograd.gradcheck(
        lambda q, k, o: attention(q, k, o, **switches), inputs, fast_mode=fast_mode
    )


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case", ["default", "softmax_groups2_dilation2", "far_outside"])
def test_gradients_match_loop_reference(backend, case):
    attention = partial(inter_frame_attention, backend=backend)
    shape, switches = CASES[case]
    inputs = [t.requires_grad_() for t in make_inputs(**dict(shape, batch=1))]
    grad_out = torch.randn(inputs[0].shape, dtype=F64)
    fast = torch.autograd.grad(attention(*inputs, **switches), inputs, grad_out)
    reference = torch.autograd.grad(slow(*inputs, switches), inputs, grad_out)
    for name, a, b in zip(("query", "key", "offset"), fast, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "options", [(3, 1, 1, 0.25, "none"), (3, 2, 2, 0.5, "softmax"), (1, 1, 4, 1.0, "none")]
)
def test_opcheck(backend, options):
    kernel_size = options[0]
    # opcheck runs the op 5 times and its backward 6. In Triton's interpreter each image is a
    # program of its own, seconds each: the Triton case checks one image, the others two.
    batch = 1 if backend == "triton" and INTERPRETED else 2
    query, key, offset = make_inputs(batch=batch, kernel_size=kernel_size)
    for t in (query, key, offset):
        t.requires_grad_()
    torch.library.opcheck(
        torch.ops.sifa.inter_frame_attention.default, (query, key, offset, *options, backend)
    )
    grad_out = torch.randn_like(query)
    torch.library.opcheck(
        torch.ops.sifa.inter_frame_attention_backward.default,
        (grad_out, query.detach(), key.detach(), offset.detach(), *options, backend),
    )


def _bad(**changes):
    query, key, offset = make_inputs()
    args = dict(query=query, key=key, offset=offset)
    args.update(changes)
    return args


BAD_ARGUMENTS = [
    (dict(kernel_size=4), ValueError, r"kernel_size must be a positive odd integer, got 4"),
    (dict(kernel_size=0), ValueError, r"kernel_size must be a positive odd integer, got 0"),
    (dict(kernel_size=3.0), TypeError, r"kernel_size must be an int, got float 3.0"),
    (dict(dilation=0), ValueError, r"dilation must be a positive integer, got 0"),
    (dict(groups=3), ValueError, r"groups=3 must divide the 4 channels"),
    (dict(groups=True), TypeError, r"groups must be an int, got bool"),
    (dict(normalize="sparsemax"), ValueError, r"normalize must be one of .*'sparsemax'"),
    (dict(normalize=None), TypeError, r"normalize must be a str"),
    (dict(scale="1/D"), ValueError, r"scale must be None, a number or one of .*'1/D'"),
    (dict(scale=[1.0]), TypeError, r"scale must be None, a number .* got list"),
    (dict(scale=float("nan")), ValueError, r"scale must be finite, got nan"),
    (
        dict(kernel_size=5),
        ValueError,
        r"offset must have shape .*\(2, 50, 4, 5\).*got \(2, 18, 4, 5\)",
    ),
]


@pytest.mark.parametrize("options, error, message", BAD_ARGUMENTS)
def test_bad_options_are_named(options, error, message):
    query, key, offset = make_inputs()
    with pytest.raises(error, match=message):
        inter_frame_attention(query, key, offset, **options)


def zeros(*shape, dtype=F64, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


BAD_TENSORS = [
    (dict(query=[1.0]), TypeError, r"query must be a torch.Tensor, got list"),
    (
        dict(key=zeros(2, 4, 4)),
        ValueError,
        r"key must be 4-D \(B, C, H, W\), got shape \(2, 4, 4\)",
    ),
    (
        dict(query=zeros(2, 4, 4, 5, dtype=torch.int64)),
        TypeError,
        r"query must have a floating-point dtype, got torch.int64",
    ),
    (
        dict(key=zeros(2, 4, 4, 5, dtype=torch.float32)),
        TypeError,
        r"key dtype torch.float32 must equal query dtype torch.float64",
    ),
    (
        dict(key=zeros(3, 4, 4, 5)),
        ValueError,
        r"key shape \(3, 4, 4, 5\) must equal query shape \(2, 4, 4, 5\)",
    ),
    (dict(key=zeros(2, 4, 4, 6)), ValueError, r"key shape \(2, 4, 4, 6\) must equal query"),
    (
        dict(offset=zeros(2, 18, 3, 5)),
        ValueError,
        r"offset must have shape .*\(2, 18, 4, 5\).*got \(2, 18, 3, 5\)",
    ),
    (dict(offset=zeros(1, 18, 4, 5)), ValueError, r"offset must have shape .*got \(1, 18, 4, 5\)"),
    (dict(offset=zeros(2, 9, 4, 5)), ValueError, r"offset must have shape .*got \(2, 9, 4, 5\)"),
    (dict(key=zeros(2, 4, 4, 5, device="meta")), ValueError, r"key is on meta but query is on cpu"),
    (
        dict(query=zeros(2, 4, 0, 5), key=zeros(2, 4, 0, 5), offset=zeros(2, 18, 0, 5)),
        ValueError,
        r"at least 1 channel, row and column",
    ),
]


@pytest.mark.parametrize("tensors, error, message", BAD_TENSORS)
def test_bad_tensors_are_named(tensors, error, message):
    args = _bad(**tensors)
    with pytest.raises(error, match=message):
        inter_frame_attention(args.pop("query"), args.pop("key"), args.pop("offset"))
