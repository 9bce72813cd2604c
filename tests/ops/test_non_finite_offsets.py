"""Non-finite offsets (NaN, +Inf, -Inf, and finite ones too large for the reference's sampling
grid) propagate through every backend exactly as through the reference: the same positions
NaN / Inf / finite in the output and in the three gradients, the finite values close.

The reference samples with ``grid_sample`` on CPU, which gives this rule: a tap whose sampling
coordinate is not finite (or so large that ``2 * coordinate`` overflows: 2**127 in float32, where
the normalised grid overflows) has NaN bilinear weights, so its sample is NaN in every channel
and it reads and writes no key pixel. Everything else follows by IEEE arithmetic, which
``test_the_reference_rule`` spells out; a model whose offsets diverge must not look healthy on
any backend.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sifa.ops import inter_frame_attention

from backend_params import backend_params

NAN, INF = float("nan"), float("inf")
SHAPE = (2, 4, 5, 6)  # B, C, H, W: small, for Triton's interpreter
TAPS = 9

FAST_BACKENDS = [p for p in backend_params() if p.values[0] != "reference"]
SWITCHES = {
    "none": dict(normalize="none"),
    "softmax": dict(normalize="softmax"),
    "none-groups2": dict(normalize="none", groups=2),
    "softmax-groups2": dict(normalize="softmax", groups=2),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Triton's interpreter takes seconds a case: these two reach both normalisations, groups and
# both accumulation dtypes (float32 with the offset whose double overflows).
INTERPRETED = {("none", "float64"), ("softmax-groups2", "float32")}
# (atol, rtol) of the finite values against the reference in the same dtype.
TOLERANCE = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4)}
# Triton's interpreter computes with numpy, which warns about the overflow and the NaNs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def backend_cases() -> list:
    cases = []
    for backend in FAST_BACKENDS:
        name = backend.values[0]
        for switch_id, switches in SWITCHES.items():
            for dtype_id, dtype in DTYPES.items():
                if name == "triton" and (switch_id, dtype_id) not in INTERPRETED:
                    continue
                case_id = f"{name}-{switch_id}-{dtype_id}"
                cases.append(pytest.param(name, switches, dtype, id=case_id, marks=backend.marks))
    return cases


def poisoned_inputs(dtype, seed=0):
    """Random query, key and offsets (fractional, up to past the borders) with non-finite
    offsets per tap and per position, in only dy, only dx or both; and a gradient for the
    output."""
    gen = torch.Generator().manual_seed(seed)
    batch, _, height, width = SHAPE
    q, k, grad_out = (torch.randn(SHAPE, generator=gen, dtype=dtype) for _ in "qkg")
    o = 1.5 * torch.randn(batch, 2 * TAPS, height, width, generator=gen, dtype=dtype)
    o[0, 2 * 0, 1, 1] = NAN  # tap 0, dy only
    o[0, 2 * 4 + 1, 2, 4] = INF  # centre tap, dx only
    o[0, 2 * 8, 3, 0] = -INF  # tap 8, dy only, at the border
    o[0, 2 * 2 + 1, 0, 5] = -INF  # tap 2, dx only, in a corner
    o[1, 2 * 5, 4, 2], o[1, 2 * 5 + 1, 4, 2] = INF, -INF  # both of one tap
    o[1, :, 1, 3] = NAN  # every tap of one position
    o[1, 2 * 7, 3, :] = INF  # one tap over a whole row
    o[1, 2 * 1 + 1, :, 1] = NAN  # one tap over a whole column, dx only
    o[0, 2 * 3, 4, 1] = 1e30  # far outside: an ordinary tap that adds zero
    o[0, 2 * 6 + 1, 2, 2] = -3e38  # float32: 2x overflows the reference's grid, like -inf
    return q, k, o, grad_out


def run(backend, q, k, o, grad_out, switches):
    q, k, o = (t.detach().clone().requires_grad_() for t in (q, k, o))
    out = inter_frame_attention(q, k, o, **switches, backend=backend)
    grads = torch.autograd.grad(out, (q, k, o), grad_out)
    return {"output": out.detach(), **dict(zip(("query", "key", "offset"), grads, strict=True))}


def assert_same_non_finite(name, got, want, atol, rtol):
    for what, mask in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        differ = mask(got) != mask(want)
        if differ.any():
            at = tuple(differ.nonzero()[0].tolist())
            raise AssertionError(
                f"{name}: {int(differ.sum())} of {differ.numel()} elements differ in being "
                f"{what}, first at {at}: got {got[at].item()}, reference {want[at].item()}"
            )
    torch.testing.assert_close(
        got, want, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{name}: {m}"
    )


@pytest.mark.parametrize(("backend", "switches", "dtype"), backend_cases())
def test_backend_propagates_non_finite_offsets_like_the_reference(backend, switches, dtype):
    inputs = poisoned_inputs(dtype)
    want = run("reference", *inputs, switches)
    got = run(backend, *inputs, switches)
    atol, rtol = TOLERANCE[dtype]
    for name in want:
        assert_same_non_finite(name, got[name], want[name], atol, rtol)


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic_mode_propagates_like_the_reference(deterministic, backend):
    """Triton sums the key gradient without atomics in this mode (another kernel, slow in the
    interpreter: one image, the one with a whole pixel, row and column poisoned)."""
    switches = dict(normalize="softmax", groups=2)
    inputs = [t[1:] for t in poisoned_inputs(torch.float64, seed=1)]
    want = run("reference", *inputs, switches)
    got = run(backend, *inputs, switches)
    for name in want:
        assert_same_non_finite(name, got[name], want[name], 1e-10, 1e-10)


def non_finite_taps(offset):
    """``(B, k*k, H, W)``: taps whose sampling coordinate is not finite in the reference (for
    these small images, where ``2 * offset`` is not finite)."""
    bad = ~torch.isfinite(2 * offset)
    return bad.view(offset.shape[0], TAPS, 2, *offset.shape[2:]).any(2)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_the_reference_rule(switches, dtype):
    """What the reference (``grid_sample`` on CPU) does, stated as a rule: if a torch release
    changes it, the backends' tests above follow the new behaviour, and this test says how."""
    q, k, o, grad_out = poisoned_inputs(dtype)
    got = run("reference", q, k, o, grad_out, switches)
    bad_tap = non_finite_taps(o)  # (B, taps, H, W)
    bad_pixel = bad_tap.any(1, keepdim=True)  # (B, 1, H, W)
    assert bad_tap.sum() > 10 and not bad_pixel.all()
    assert (bad_tap.sum() < bad_tap.numel() // 4) and bad_pixel.float().mean() < 0.5
    for name in got:
        assert not torch.isinf(got[name]).any(), name  # NaN, never Inf
    # A pixel with a non-finite tap gets NaN in every channel (the tap's sample is NaN in all
    # of them, so every group's score is), in the output and the query gradient; no other does.
    for name in ("output", "query"):
        assert torch.equal(got[name].isnan(), bad_pixel.expand(SHAPE)), name
    offset_nan = got["offset"].isnan().view(bad_tap.shape[0], TAPS, 2, *SHAPE[2:])
    assert torch.equal(offset_nan[:, :, 0], offset_nan[:, :, 1])  # dy and dx together
    offset_nan = offset_nan[:, :, 0]
    if switches["normalize"] == "none":
        # The non-finite tap's offset gradient is NaN; the other taps' are not, and since the
        # non-finite tap writes no key pixel, the key gradient stays finite.
        assert torch.equal(offset_nan, bad_tap)
        assert torch.isfinite(got["key"]).all()
    else:
        # A NaN score makes the whole softmax NaN: every tap of the pixel has a NaN weight and
        # offset gradient, and every in-image bilinear corner of its finite taps (even one of
        # weight 0) gets NaN in the key gradient, in every channel.
        assert torch.equal(offset_nan, bad_pixel.expand_as(bad_tap))
        key_nan = got["key"].isnan()
        assert torch.equal(key_nan, poisoned_key_pixels(o, bad_tap).unsqueeze(1).expand(SHAPE))
        assert key_nan.any() and not key_nan.all()


def poisoned_key_pixels(offset, bad_tap):
    """``(B, H, W)``: the in-image bilinear corners of the finite taps of pixels that have a
    non-finite tap (with fractional offsets, so rounding cannot move a corner)."""
    batch, _, height, width = offset.shape
    o = offset.double().view(batch, TAPS, 2, height, width)
    steps = torch.arange(3, dtype=torch.float64) - 1
    y = torch.arange(height).view(1, 1, -1, 1) + steps.repeat_interleave(3).view(1, -1, 1, 1)
    x = torch.arange(width).view(1, 1, 1, -1) + steps.repeat(3).view(1, -1, 1, 1)
    y0, x0 = (y + o[:, :, 0]).floor(), (x + o[:, :, 1]).floor()
    spread = bad_tap.any(1, keepdim=True) & ~bad_tap
    pixels = torch.zeros(batch, height, width, dtype=torch.bool)
    for b, n, h, w in spread.nonzero().tolist():
        for row in (y0[b, n, h, w], y0[b, n, h, w] + 1):
            for col in (x0[b, n, h, w], x0[b, n, h, w] + 1):
                if 0 <= row < height and 0 <= col < width:
                    pixels[b, int(row), int(col)] = True
    return pixels


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_the_reference_rule_holds_where_grid_sample_moves_bad_positions_away(monkeypatch, switches):
    """aten's CUDA ``grid_sample`` moves a non-finite sampling position to pixel -100 (outside
    the image: a sample of 0, no gradient) instead of giving it NaN weights. Simulated here on
    the CPU: the reference still gives NaN in the same places, so its rule does not depend on
    the device."""
    from sifa.ops import reference

    inputs = poisoned_inputs(torch.float64)
    want = run("reference", *inputs, switches)

    def moved_away(grid):
        width, height = grid.shape[2], grid.shape[1] // TAPS
        size = torch.tensor([width, height], dtype=grid.dtype)
        pixels = ((grid + 1) * size - 1) / 2
        outside = (2 * -100 + 1) / size - 1
        return torch.where(torch.isfinite(pixels), grid, outside)

    sample, sample_backward = reference.F.grid_sample, reference._sample_backward
    monkeypatch.setattr(reference, "F", SimpleNamespace(
        grid_sample=lambda key, grid, **kw: sample(key, moved_away(grid), **kw)))  # fmt: skip
    monkeypatch.setattr(reference, "_sample_backward",
                        lambda g, key, grid: sample_backward(g, key, moved_away(grid)))  # fmt: skip
    got = run("reference", *inputs, switches)
    for name in want:
        assert_same_non_finite(name, got[name], want[name], 1e-12, 1e-12)


def infinite_inputs(which, dtype, seed=1):
    """Random inputs with +Inf and -Inf in the query or the key: inside the image, at a border
    and in a corner, in different channels; finite offsets."""
    gen = torch.Generator().manual_seed(seed)
    batch, _, height, width = SHAPE
    q, k, grad_out = (torch.randn(SHAPE, generator=gen, dtype=dtype) for _ in "qkg")
    o = 1.5 * torch.randn(batch, 2 * TAPS, height, width, generator=gen, dtype=dtype)
    poisoned = q if which == "query" else k
    poisoned[0, 1, 2, 3] = INF
    poisoned[0, 3, 0, 5] = -INF
    poisoned[1, 0, 4, 0] = INF
    poisoned[1, 2, 2, 2] = -INF
    return q, k, o, grad_out


def infinity_cases() -> list:
    cases = []
    for case in backend_cases():
        backend, switches, dtype = case.values
        for which in ("query", "key"):
            case_id = case.id.replace(f"{backend}-", f"{backend}-{which}-", 1)
            cases.append(pytest.param(backend, which, switches, dtype, marks=case.marks,
                                      id=case_id))  # fmt: skip
    return cases


@pytest.mark.parametrize(("backend", "which", "switches", "dtype"), infinity_cases())
def test_backend_propagates_infinite_query_and_key_like_the_reference(backend, which, switches,
                                                                      dtype):  # fmt: skip
    """+-Inf in the query or key: the same NaN / +Inf / -Inf positions as the reference in the
    output and the three gradients (the fused CPU kernel once summed each corner's product with
    dL/dv before forming the offset gradient, Inf - Inf where the reference has +-Inf; Triton's
    running softmax maximum once turned a first score of -Inf into NaN)."""
    inputs = infinite_inputs(which, dtype)
    want = run("reference", *inputs, switches)
    got = run(backend, *inputs, switches)
    assert any(not torch.isfinite(want[name]).all() for name in want)  # the case reaches Inf
    atol, rtol = TOLERANCE[dtype]
    for name in want:
        assert_same_non_finite(name, got[name], want[name], atol, rtol)
