"""`sifa benchmark kernels`: the Triton kernels compiled for an H100 (sm_90) on this CPU-only
machine, and what their compiled code says. The compiles run in a subprocess, since the test
session interprets Triton kernels (TRITON_INTERPRET=1) and interpreted kernels do not compile."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from sifa.benchmarks.kernels import memory_instructions

PTX = """
	ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
	@%p1 ld.global.b32 { %r5 }, [ %rd2 + 0 ];
	ld.global.L1::evict_last.b16 { %rs1 }, [ %rd3 + 0 ];
	ld.shared.b32 %r6, [ %r7 + 0 ];
	st.global.v2.b32 [ %rd4 + 0 ], { %r1, %r2 };
	st.shared.b32 [ %r7 + 0 ], %r1;
	@%p2 red.global.gpu.relaxed.add.v4.f32 [ %rd5 + 0 ], { %f1, %f2, %f3, %f4 };
	atom.global.gpu.acq_rel.add.f32 %f5, [ %rd6 + 0 ], %f6;
"""


def test_memory_instructions_count_global_widths_and_atomics():
    loads, stores, atomics = memory_instructions(PTX)
    assert loads == {"v4.b32": 1, "b32": 1, "b16": 1}  # shared-memory traffic not counted
    assert stores == {"v2.b32": 1}
    assert atomics == {
        "red.global.gpu.relaxed.add.v4.f32": 1,
        "atom.global.gpu.acq_rel.add.f32": 1,
    }


def _without_interpreter() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


SCRIPT = """
import json
from sifa.benchmarks.kernels import as_dicts, kernel_report
print(json.dumps({
    "float32": as_dicts(kernel_report()),
    "bfloat16": as_dicts(kernel_report(dtype="bfloat16", shapes=((128, 28), (512, 7)))),
    "deterministic": as_dicts(kernel_report(
        shapes=((128, 28),), normalize="softmax", groups=2, deterministic=True
    )),
}))
"""


@pytest.fixture(scope="module")
def compiled():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=_without_interpreter(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_kernel_compiles_for_sm90_without_spilling(compiled):
    rows = compiled["float32"] + compiled["bfloat16"] + compiled["deterministic"]
    assert len(compiled["float32"]) == 8  # forward and backward at the four SIFA-Net shapes
    for row in rows:
        where = f"{row['kernel']} {row['channels']}x{row['size']} {row['dtype']}"
        assert row["spill_bytes"] == 0, where
        assert 0 < row["registers"] <= 255 and row["programs_per_sm"] >= 2, where


def test_key_gradient_adds_are_relaxed_vector_reductions(compiled):
    for row in compiled["float32"] + compiled["bfloat16"]:
        if row["kernel"] == "forward":
            assert row["atomics"] == {}
            continue
        # Relaxed (no acquire-release ordering), four channels per instruction. Triton 3.9
        # lowers an add whose result is unused to a fire-and-forget red; 3.7 keeps atom.
        assert row["atomics"], row
        for instruction in row["atomics"]:
            assert re.fullmatch(r"(red|atom)\.global\.gpu\.relaxed\.add\.v4\.f32", instruction), row


def test_contiguous_planes_are_read_and_written_in_vectors(compiled):
    # At 56 x 56 and 28 x 28 (H*W a multiple of 16) the query and offsets are read and the
    # output written four pixels per instruction: the forward's global stores are all vectors.
    for row in compiled["float32"]:
        if row["kernel"] == "forward" and row["size"] in (56, 28):
            assert set(row["stores"]) == {"v4.b32"}, row
            assert row["loads"]["v4.b32"] > row["loads"].get("b32", 0), row


def test_deterministic_backward_uses_no_atomics(compiled):
    rows = compiled["deterministic"]
    assert [r["kernel"] for r in rows] == ["forward", "backward", "gather_key_grad"]
    assert all(r["atomics"] == {} for r in rows)
    assert rows[0]["block_c"] == 64  # one of the two channel groups per program


def test_the_command_refuses_interpreted_kernels_by_name():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-m", "sifa", "benchmark", "kernels", "--shapes", "128x28"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "TRITON_INTERPRET=1 is set" in result.stderr and "unset it" in result.stderr
