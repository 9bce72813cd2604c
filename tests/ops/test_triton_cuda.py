"""The Triton backend compiled for a GPU: every case against the reference, float64 gradcheck,
lower precisions, deterministic mode, autocast, torch.compile and a SIFA-Net training step.
Skipped without CUDA; tests/ops/test_inter_frame_attention.py and tests/ops/test_triton.py check
the same kernels in Triton's interpreter on CPU tensors."""

from __future__ import annotations

import pytest
import torch

from sifa.ops import inter_frame_attention, reference
from sifa.ops.backends import select_backend, unavailable_reason

if not torch.cuda.is_available():
    pytest.skip("no CUDA device here", allow_module_level=True)
if unavailable_reason("triton", torch.device("cuda")) is not None:
    pytest.skip(
        f"Triton backend: {unavailable_reason('triton', torch.device('cuda'))}",
        allow_module_level=True,
    )

CUDA = torch.device("cuda")
F64 = torch.float64

# (batch, channels, height, width, kernel_size, offset scale, switches)
CASES = {
    "default": (2, 4, 4, 5, 3, 1.5, {}),
    "far_outside": (2, 4, 4, 5, 3, 8.0, {}),
    "dilation2_groups2": (2, 8, 6, 5, 3, 1.5, dict(dilation=2, groups=2)),
    "softmax_groups4": (2, 8, 5, 6, 3, 1.5, dict(normalize="softmax", groups=4)),
    "kernel5_softmax": (1, 6, 3, 4, 5, 1.5, dict(kernel_size=5, normalize="softmax")),
    "kernel1": (2, 4, 3, 3, 1, 1.5, dict(kernel_size=1)),
    "tiny_1x1": (1, 3, 1, 1, 3, 1.5, dict(groups=3)),
    "sifa_net_res3": (2, 128, 28, 28, 3, 2.0, {}),
    "wide_group_odd": (2, 96, 7, 9, 3, 2.0, dict(normalize="softmax", scale="1/sqrt(C)")),
}


def make(case, dtype=F64, device=CUDA, seed=0):
    batch, channels, height, width, kernel_size, spread, switches = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, channels, height, width, generator=gen, dtype=F64) for _ in "qk")
    o = spread * torch.randn(batch, 2 * kernel_size**2, height, width, generator=gen, dtype=F64)
    # Fractions kept away from whole pixels: in half precision many offsets round to integers,
    # where the bilinear derivative jumps and any two implementations may take either side.
    o = o.floor() + 0.1 + 0.8 * torch.rand(o.shape, generator=gen, dtype=F64)
    return [t.to(device=device, dtype=dtype) for t in (q, k, o)], switches


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_gradients_match_reference_float64(case):
    (q, k, o), switches = make(case)
    inputs = [t.requires_grad_() for t in (q, k, o)]
    grad_out = torch.randn_like(q)
    results = {}
    for backend in ("triton", "reference"):
        out = inter_frame_attention(*inputs, **switches, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, inputs, grad_out))
    for name, a, b in zip(("out", "query", "key", "offset"), *results.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("case", ["default", "dilation2_groups2", "softmax_groups4", "kernel1"])
def test_gradcheck_float64(case):
    (q, k, o), switches = make(case)
    inputs = tuple(t.requires_grad_() for t in (q, k, o))
    assert torch.autograd.gradcheck(
        lambda *x: inter_frame_attention(*x, **switches, backend="triton"), inputs
    )


# Tolerances relative to the largest reference value: float32 inputs with float32 arithmetic;
# half-precision inputs are rounded first, so the reference runs on the rounded inputs.
@pytest.mark.parametrize(
    "dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)]
)
@pytest.mark.parametrize("case", ["sifa_net_res3", "wide_group_odd", "softmax_groups4"])
def test_lower_precision(case, dtype, tolerance):
    (q, k, o), switches = make(case, dtype=dtype)
    inputs = [t.requires_grad_() for t in (q, k, o)]
    grad_out = torch.randn_like(q)
    out = inter_frame_attention(*inputs, **switches, backend="triton")
    grads = torch.autograd.grad(out, inputs, grad_out)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    exact = [t.detach().double().requires_grad_() for t in inputs]
    ref = inter_frame_attention(*exact, **switches, backend="reference")
    ref_grads = torch.autograd.grad(ref, exact, grad_out.double())
    for name, a, b in zip(("out", "query", "key", "offset"), (out, *grads), (ref, *ref_grads),
                          strict=True):  # fmt: skip
        error = (a.double() - b).abs().max() / b.abs().max()
        assert error < tolerance, f"{name}: relative error {error:.2e}"


def test_deterministic_mode_repeats_bit_for_bit():
    (q, k, o), switches = make("softmax_groups4", dtype=torch.float32)
    o = o * 0.3  # many taps of neighbouring pixels land on the same key pixels
    inputs = [t.requires_grad_() for t in (q, k, o)]
    grad_out = torch.randn_like(q)

    def key_grad():
        out = inter_frame_attention(*inputs, **switches, backend="triton")
        return torch.autograd.grad(out, inputs, grad_out)[1]

    atomic = key_grad()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = key_grad(), key_grad()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, atomic, rtol=1e-5, atol=1e-5)


def test_automatic_choice_on_cuda_is_triton(monkeypatch):
    monkeypatch.delenv("SIFA_BACKEND", raising=False)
    assert select_backend(CUDA) == "triton"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_the_autocast_dtype(dtype):
    (q, k, o), switches = make("sifa_net_res3", dtype=torch.float32)
    # Compiled under one autocast dtype only: PyTorch 2.11 (not 2.13) reuses a compiled graph
    # of this op across autocast dtypes, through its compile caches.
    compile_too = dtype == torch.bfloat16
    with torch.autocast("cuda", dtype=dtype):
        out = inter_frame_attention(q, k, o, **switches)
        compiled = out
        if compile_too:
            attend = torch.compile(lambda *x: inter_frame_attention(*x, **switches), fullgraph=True)
            compiled = attend(q, k, o)
    assert out.dtype == compiled.dtype == dtype
    expected = inter_frame_attention(q.to(dtype), k.to(dtype), o.to(dtype), **switches)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(compiled, expected, rtol=0, atol=0)


def test_opcheck_on_cuda():
    (q, k, o), _ = make("dilation2_groups2", dtype=torch.float32)
    options = (3, 2, 2, 0.5, "softmax", "triton")
    torch.library.opcheck(
        torch.ops.sifa.inter_frame_attention.default,
        tuple(t.requires_grad_() for t in (q, k, o)) + options,
    )


def test_sifa_resnet50_trains_under_bf16_autocast():
    from sifa.models import classification_loss, create_model

    torch.manual_seed(0)
    model = create_model("sifa_resnet50", num_classes=10).to(CUDA).train()
    clips = torch.randn(2, 3, 8, 112, 112, device=CUDA)
    labels = torch.tensor([1, 7], device=CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(6):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = classification_loss(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    # The dual branch sees 8 frames pooled to one time step here, where SIFA is the identity.
    offsets = [
        m for n, m in model.named_modules() if n.endswith("offset_conv") and "_dual" not in n
    ]
    assert offsets and all(m.weight.grad is not None for m in offsets)


def test_reference_helper_agrees_on_cuda():
    # The reference backend itself on CUDA, as the oracle above runs there.
    (q, k, o), _ = make("default")
    cpu = reference.forward(q.cpu(), k.cpu(), o.cpu(), 3, 1, 1, 0.25, "none")
    torch.testing.assert_close(reference.forward(q, k, o, 3, 1, 1, 0.25, "none").cpu(), cpu)


@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_non_finite_offsets_give_nan_where_the_reference_on_the_cpu_does(normalize):
    """aten's CUDA grid_sample treats a non-finite position differently from the CPU's; the
    reference adds the CPU rule itself, and the Triton kernels follow it (see
    tests/ops/test_non_finite_offsets.py for the rule)."""
    (q, k, o), _ = make("softmax_groups4")
    o[0, 0, 1, 1], o[0, 9, 2, 3], o[1, 4, 0, 0] = float("nan"), float("inf"), -float("inf")
    o[1, :, 3, 2] = float("nan")
    grad_out = torch.randn_like(q)
    results = {}
    for backend, device in (("reference", "cpu"), ("reference", CUDA), ("triton", CUDA)):
        inputs = [t.detach().to(device).requires_grad_() for t in (q, k, o)]
        out = inter_frame_attention(*inputs, groups=4, normalize=normalize, backend=backend)
        grads = torch.autograd.grad(out, inputs, grad_out.to(device))
        results[backend, str(device)] = [t.cpu() for t in (out, *grads)]
    want = results["reference", "cpu"]
    assert want[0].isnan().any() and not want[0].isnan().all()
    for key, got in results.items():
        for name, a, b in zip(("out", "query", "key", "offset"), got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9, equal_nan=True,
                                       msg=lambda m, n=name, k=key: f"{k} {n}: {m}")  # fmt: skip
