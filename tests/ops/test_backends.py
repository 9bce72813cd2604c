"""Backend choice: argument, environment, automatic fallback with one warning, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import sifa
from sifa.ops import backends, cpu, inter_frame_attention, reference
from sifa.ops.backends import BackendUnavailableError, select_backend

from backend_params import require_cpu_kernel

CPU = torch.device("cpu")


def inputs(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 6, 5, 4, generator=gen, dtype=dtype) for _ in "qk")
    return q, k, 1.7 * torch.randn(2, 18, 5, 4, generator=gen, dtype=dtype)


@pytest.fixture
def no_cpu_kernel(monkeypatch):
    """The state of a machine where the CPU kernel could not be built."""
    monkeypatch.setattr(cpu, "_state", {"module": None, "failure": "no C++ compiler (test)"})
    monkeypatch.setattr(backends, "_warned", set())


def test_cpu_kernel_builds_where_a_compiler_is():
    if cpu._missing_tool() is not None:
        pytest.skip(f"no build tools here: {cpu._missing_tool()}")
    assert cpu.load() is not None, cpu.failure()


def test_automatic_choice_is_the_cpu_kernel_here(monkeypatch):
    require_cpu_kernel()
    monkeypatch.delenv(backends.ENV, raising=False)
    assert select_backend(CPU) == "cpu"
    assert select_backend(CPU, "reference") == "reference"
    assert select_backend(torch.device("meta")) == "reference"  # no kernel for that device


def test_environment_variable_and_argument(monkeypatch):
    require_cpu_kernel()
    monkeypatch.setenv(backends.ENV, "reference")
    assert select_backend(CPU) == "reference"
    assert select_backend(CPU, "cpu") == "cpu"  # the argument wins
    monkeypatch.setenv(backends.ENV, "cuda")
    with pytest.raises(ValueError, match="SIFA_BACKEND must be one of"):
        select_backend(CPU)


def test_bad_backend_argument_is_named():
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'fast'"):
        inter_frame_attention(*inputs(), backend="fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        sifa.InterFrameAttention(8, backend="gpu")


def test_backend_for_another_device_is_refused():
    with pytest.raises(BackendUnavailableError, match="runs on CPU tensors, these are on meta"):
        select_backend(torch.device("meta"), "cpu")


def test_unbuildable_kernel_falls_back_with_one_warning(no_cpu_kernel, monkeypatch):
    monkeypatch.delenv(backends.ENV, raising=False)
    q, k, o = inputs()
    with pytest.warns(RuntimeWarning, match=r"fused CPU kernel is unavailable \(no C\+\+ compiler"):
        out = inter_frame_attention(q, k, o)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        inter_frame_attention(q, k, o)
    expected = reference.forward(q, k, o, 3, 1, 1, 1 / 6, "none")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(BackendUnavailableError, match="'cpu' cannot run: no C\\+\\+ compiler"):
        inter_frame_attention(q, k, o, backend="cpu")
    rows = {r["backend"]: r for r in backends.backend_report()}
    assert rows["cpu"]["available"] is False and "compiler" in rows["cpu"]["reason"]
    assert rows["reference"]["available"] is True


def test_missing_compiler_is_detected_before_building(tmp_path):
    """A process where $CXX names no compiler: the reason is given, nothing is built."""
    code = (
        "import json, warnings, torch\n"
        "from sifa.ops import backend_report, inter_frame_attention\n"
        "q = torch.randn(1, 4, 3, 3)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    inter_frame_attention(q, q, torch.zeros(1, 18, 3, 3))\n"
        "print(json.dumps({'warnings': [str(w.message) for w in caught],\n"
        "                  'report': backend_report()}))\n"
    )
    env = {**os.environ, "CXX": "no-such-compiler", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop(backends.ENV, None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=True)  # fmt: skip
    found = json.loads(result.stdout)
    assert len(found["warnings"]) == 1 and "'no-such-compiler' not found" in found["warnings"][0]
    assert found["report"][1]["reason"].startswith("no C++ compiler")
    assert list(tmp_path.iterdir()) == []


def test_block_gives_the_same_with_either_backend():
    require_cpu_kernel()
    torch.manual_seed(0)
    block = sifa.InterFrameAttention(8, offset_init="kaiming").double()
    clip = torch.randn(2, 8, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    results = []
    for name in ("reference", "cpu"):
        block.backend = name
        out = block(clip)
        grads = torch.autograd.grad(out.square().sum(), [clip, block.offset_conv.weight])
        results.append((out, *grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_first_build_is_announced(monkeypatch, tmp_path, caplog):
    """Without a build in the cache the user is told why the first call takes a minute."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setattr(cpu, "_missing_tool", lambda: None)
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: tmp_path)
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: "built module")
    with caplog.at_level("INFO", logger="sifa.ops.cpu"):
        assert cpu.load() == "built module"
    assert "building the fused CPU kernel" in caplog.text

    caplog.clear()
    monkeypatch.setattr(cpu, "_state", {})
    (tmp_path / f"sifa_cpu_v{cpu.VERSION}.so").touch()  # built before: nothing to announce
    with caplog.at_level("INFO", logger="sifa.ops.cpu"):
        cpu.load()
    assert caplog.text == ""


def test_failed_build_gives_its_reason(monkeypatch):
    from torch.utils import cpp_extension

    def broken(**kwargs):
        raise RuntimeError("ninja: build stopped\nError building extension 'sifa_cpu_v1'")

    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setattr(cpu, "_missing_tool", lambda: None)
    monkeypatch.setattr(cpp_extension, "load", broken)
    assert cpu.load() is None
    assert cpu.failure() == "the C++ build failed: Error building extension 'sifa_cpu_v1'"
    with pytest.raises(BackendUnavailableError, match="the C\\+\\+ build failed"):
        select_backend(CPU, "cpu")
