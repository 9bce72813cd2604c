"""torch.compile: every registered model in one graph (no break at the SIFA operator), with the
outputs and gradients of eager mode."""

from __future__ import annotations

import pytest
import torch

from sifa.models import create_model, list_models, model_entry

from model_fixtures import perturbed, small_sifa_transformer


@pytest.mark.parametrize("name", list_models())
def test_every_model_compiles_to_one_graph_with_eager_outputs(name):
    torch._dynamo.reset()
    # ResNets at width 8: the graph is the same at any width, and building and running the
    # full-width ResNet-101 was a tenth of its test.
    width = dict(base_width=8) if "base_width" in model_entry(name).switches() else {}
    model = create_model(name, num_classes=5, **width).eval()
    clip = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    # fullgraph=True: a graph break anywhere (the SIFA op included) is an error. The "eager"
    # backend runs the captured graph as it is, so this costs only the tracing.
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(clip), model(clip), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "switches"),
    [
        ("sifa_resnet18", dict(base_width=16, dropout=0.0)),
        ("sifa_transformer", dict(drop_path_rate=0.0, dropout=0.0)),
    ],
)
def test_compiled_training_step_matches_eager(name, switches):
    """Forward and backward through AOT autograd's joint graph (functionalised, the SIFA op's
    registered backward inside) against eager mode. (Inductor's generated code around the op
    is tested on the SIFA block in tests/ops; for a whole network it takes a minute here.)

    ``sifa_transformer`` is the first two stages of ``sifa_swin_t`` (``small_sifa_transformer``):
    SIFA blocks, shifted windows with their temporal convs and patch merging, in a third of
    Swin-T's blocks."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    if name == "sifa_transformer":
        model = perturbed(small_sifa_transformer(num_classes=5, **switches)).train()
    else:
        model = perturbed(create_model(name, num_classes=5, **switches)).train()
    clip = torch.randn(2, 3, 8, 32, 32)

    def loss_and_grads(module):
        model.zero_grad()
        output = module(clip)
        logits = output if isinstance(output, torch.Tensor) else torch.cat(tuple(output))
        loss = (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    expected_loss, expected = loss_and_grads(model)
    actual_loss, actual = loss_and_grads(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(actual_loss, expected_loss, rtol=1e-4, atol=1e-4)
    assert actual.keys() == expected.keys()
    offsets = [n for n in expected if "offset_conv" in n]
    assert offsets and all(expected[n].abs().sum() > 0 for n in offsets)  # SIFA is in the loss
    for name_, grad in expected.items():
        torch.testing.assert_close(actual[name_], grad, rtol=1e-3, atol=1e-4, msg=name_)
