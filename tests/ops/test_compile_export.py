"""torch.compile and torch.export see the SIFA operator as one op."""

from __future__ import annotations

import torch

from sifa.nn import InterFrameAttention


def _block_and_clip():
    torch.manual_seed(0)
    return InterFrameAttention(8, offset_init="kaiming"), torch.randn(2, 8, 3, 6, 7)


def _sifa_calls(graph: torch.fx.Graph) -> list[str]:
    return [str(n.target) for n in graph.nodes if str(n.target).startswith("sifa.")]


def test_export_keeps_one_op_and_runs_with_dynamic_batch():
    block, x = _block_and_clip()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(block, (x,), dynamic_shapes={"x": {0: batch}})
    assert _sifa_calls(program.graph) == ["sifa.inter_frame_attention.default"]
    other = torch.randn(5, 8, 3, 6, 7)
    torch.testing.assert_close(program.module()(other), block(other), rtol=0, atol=0)


def test_compile_fullgraph_matches_eager_forward_and_backward():
    block, x = _block_and_clip()
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    x_eager = x.clone().requires_grad_()
    x_compiled = x.clone().requires_grad_()
    y_eager, y_compiled = block(x_eager), compiled(x_compiled)
    torch.testing.assert_close(y_compiled, y_eager, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y_eager)
    y_eager.backward(grad)
    weight_grad = block.offset_conv.weight.grad.clone()
    block.offset_conv.weight.grad = None
    y_compiled.backward(grad)
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.offset_conv.weight.grad, weight_grad, rtol=1e-4, atol=1e-5)


def test_decompositions_replace_the_op_by_standard_aten_ops():
    from sifa.ops import decompositions

    from loop_reference import slow_inter_frame_attention

    block, x = _block_and_clip()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(block, (x,), dynamic_shapes={"x": {0: batch}})
    table = torch.export.default_decompositions()
    table.update(decompositions())
    plain = program.run_decompositions(table)
    assert _sifa_calls(plain.graph) == []
    targets = {str(n.target) for n in plain.graph.nodes}
    assert "aten.grid_sampler_2d.default" in targets
    other = torch.randn(3, 8, 3, 6, 7)
    with torch.no_grad():
        offset = block.offsets(other[:, :, 0], other[:, :, 1])
        first = other[:, :, 0] + slow_inter_frame_attention(other[:, :, 0], other[:, :, 1], offset)
        torch.testing.assert_close(plain.module()(other)[:, :, 0], first, rtol=1e-5, atol=1e-5)
