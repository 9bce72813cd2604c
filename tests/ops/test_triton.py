"""The Triton backend's own behaviour on CPU tensors (its kernels in Triton's interpreter):
deterministic mode, availability and its reasons, and the op's autocast registration.
The correctness cases shared by every backend are in test_inter_frame_attention.py."""

from __future__ import annotations

import pytest
import torch

from sifa.ops import backends, inter_frame_attention
from sifa.ops import triton as triton_backend
from sifa.ops.backends import BackendUnavailableError, select_backend, unavailable_reason

from loop_reference import slow_inter_frame_attention

CPU = torch.device("cpu")
F64 = torch.float64


def require_interpreted_triton() -> None:
    reason = unavailable_reason("triton", CPU)
    if reason is not None:
        pytest.skip(f"Triton backend on CPU tensors: {reason}")


def inputs(offset_spread=0.4, seed=0, height=2, width=3):
    # Two images (the deterministic path offsets its corner lists by image), small: the
    # deterministic key gradient runs one program per key pixel, a slow one in Triton's
    # interpreter.
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 4, height, width, generator=gen, dtype=F64) for _ in "qk")
    o = offset_spread * torch.randn(2, 18, height, width, generator=gen, dtype=F64)
    return [t.requires_grad_() for t in (q, k, o)]


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("switches", [{}, dict(normalize="softmax", groups=2)])
def test_deterministic_backward_matches_the_loop_reference(deterministic, switches):
    require_interpreted_triton()
    # Small offsets: taps of neighbouring pixels share key pixels, so each key pixel collects
    # several contributions (11 to 19 here), which the deterministic path sums in sorted order.
    q, k, o = inputs()
    grad_out = torch.randn_like(q)
    out = inter_frame_attention(q, k, o, **switches, backend="triton")
    # The backward runs twice on the same inputs (the backward op gets only q, k, o and
    # grad_out, so a second forward would change nothing but the time).
    fast = torch.autograd.grad(out, (q, k, o), grad_out, retain_graph=True)
    again = torch.autograd.grad(out, (q, k, o), grad_out)
    slow = torch.autograd.grad(slow_inter_frame_attention(q, k, o, **switches), (q, k, o), grad_out)
    for name, a, b, c in zip(("query", "key", "offset"), fast, again, slow, strict=True):
        assert torch.equal(a, b), name
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_deterministic_and_atomic_paths_agree_on_the_key_gradient(deterministic):
    require_interpreted_triton()
    # Offsets past the borders too; 3 x 4 pixels, so that each key pixel still collects
    # several contributions (2 to 9), summed in two different orders.
    q, k, o = inputs(offset_spread=3.0, seed=1, height=3, width=4)
    grad_out = torch.randn_like(q)
    # One forward, two backwards: the backward reads the deterministic switch when it runs.
    out = inter_frame_attention(q, k, o, backend="triton")
    sorted_sum = torch.autograd.grad(out, (k,), grad_out, retain_graph=True)[0]
    torch.use_deterministic_algorithms(False)
    atomic = torch.autograd.grad(out, (k,), grad_out)
    torch.testing.assert_close(sorted_sum, atomic[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "budget, layout, mode, height, width",
    [
        # 4 pixels per tile: the first spans both rows, the second is half full
        (8, "contiguous", "atomic", 2, 3),
        # one pixel per tile (the tile is smaller than the channels), two tiles each way;
        # planes not contiguous
        (1, "transposed", "deterministic", 2, 2),
    ],
)
def test_tiles_smaller_than_the_image(monkeypatch, budget, layout, mode, height, width):
    require_interpreted_triton()
    # The other tests' images fit in one tile; here the image is cut into several (each
    # program costs the interpreter time, hence the small images).
    monkeypatch.setattr(triton_backend, "_FORWARD_TILE", budget)
    monkeypatch.setattr(triton_backend, "_BACKWARD_TILE", budget)
    gen = torch.Generator().manual_seed(4)
    q, k = (torch.randn(1, 4, height, width, generator=gen, dtype=F64) for _ in "qk")
    o = 1.2 * torch.randn(1, 18, height, width, generator=gen, dtype=F64)
    if layout == "transposed":
        q, k, o = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (q, k, o))
    q, k, o = (t.requires_grad_() for t in (q, k, o))
    grad_out = torch.randn(q.shape, generator=gen, dtype=F64)
    torch.use_deterministic_algorithms(mode == "deterministic")
    try:
        out = inter_frame_attention(q, k, o, normalize="softmax", groups=2, backend="triton")
        fast = torch.autograd.grad(out, (q, k, o), grad_out)
    finally:
        torch.use_deterministic_algorithms(False)
    slow_out = slow_inter_frame_attention(q, k, o, normalize="softmax", groups=2)
    slow = torch.autograd.grad(slow_out, (q, k, o), grad_out)
    torch.testing.assert_close(out, slow_out, rtol=0, atol=1e-10)
    for name, a, b in zip(("query", "key", "offset"), fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_contiguous_planes_take_the_pixel_index_path():
    require_interpreted_triton()
    q = torch.randn(2, 4, 5, 7, dtype=F64)
    offset = torch.randn(2, 18, 5, 7, dtype=F64)
    key = triton_backend._channels_last(q)
    plain = triton_backend.forward_launch(q, key, offset, torch.empty_like(q), 3, 1, 1, 1.0, "none")
    view = q.transpose(2, 3).contiguous().transpose(2, 3)
    strided = triton_backend.forward_launch(
        view, key, offset, torch.empty_like(q), 3, 1, 1, 1.0, "none"
    )
    assert plain.constants["PLANES"] and not strided.constants["PLANES"]
    assert plain.constants["BLOCK_C"] == 4 and plain.constants["BLOCK_P"] == 64  # whole image


def test_cuda_choice_without_a_usable_kernel_falls_back_once(monkeypatch):
    monkeypatch.setattr(
        triton_backend, "_state", {"module": None, "failure": "triton cannot be imported (test)"}
    )
    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.delenv(backends.ENV, raising=False)
    cuda = torch.device("cuda")
    with pytest.warns(RuntimeWarning, match=r"Triton GPU kernel is unavailable \(triton cannot"):
        assert select_backend(cuda) == "reference"
    assert "triton" in backends._warned
    with pytest.raises(BackendUnavailableError, match=r"'triton' cannot run: triton cannot be"):
        select_backend(cuda, "triton")


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv(triton_backend.INTERPRET_ENV, raising=False)
    with pytest.raises(BackendUnavailableError, match="CPU tensors only with TRITON_INTERPRET=1"):
        select_backend(CPU, "triton")
    with pytest.raises(BackendUnavailableError, match="runs on CUDA tensors, these are on meta"):
        select_backend(torch.device("meta"), "triton")
    monkeypatch.delenv(backends.ENV, raising=False)
    assert select_backend(CPU) != "triton"  # never chosen automatically for CPU tensors


def test_report_names_the_triton_row():
    rows = {row["backend"]: row for row in backends.backend_report()}
    row = rows["triton"]
    assert row["available"] == (row["reason"] is None)
    if not torch.cuda.is_available() and unavailable_reason("triton", CPU) is None:
        assert row["devices"] == "cpu (Triton interpreter)" and row["available"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_casts_float32_inputs_to_the_autocast_dtype(dtype):
    gen = torch.Generator().manual_seed(2)
    q, k = (torch.randn(2, 8, 5, 6, generator=gen) for _ in "qk")
    o = torch.randn(2, 18, 5, 6, generator=gen)
    expected = inter_frame_attention(q.to(dtype), k.to(dtype), o.to(dtype), backend="reference")
    # Compiled under one autocast dtype only: PyTorch 2.11 (not 2.13) reuses a compiled graph
    # of this op across autocast dtypes, through its compile caches.
    compile_too = dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=dtype):
        out = inter_frame_attention(q, k, o, backend="reference")
        compiled = (
            out
            if not compile_too
            else torch.compile(
                lambda *x: inter_frame_attention(*x, backend="reference"), fullgraph=True
            )(q, k, o)
        )
        untouched = inter_frame_attention(q.double(), k.double(), o.double(), backend="reference")
    assert out.dtype == compiled.dtype == dtype and untouched.dtype == F64
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(compiled, expected, rtol=0, atol=0)


def test_autocast_gradients_come_back_in_float32():
    q, k, o = (t.float().detach().requires_grad_() for t in inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = inter_frame_attention(q, k, o, backend="reference")
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert q.grad.dtype == k.grad.dtype == o.grad.dtype == torch.float32
