"""Activation capture for ranking-aware PTQ: the block-input cache gives every layer exactly the
inputs of a forward pass from the network input."""
from __future__ import annotations

import torch

from vitquant_core import QuantConfig, quantize
from vitquant_core.ptq.ranking.capture import BlockInputCache, block_container, capture_inputs, discover_operations


def test_incremental_capture_gives_the_inputs_of_a_full_forward_pass(micro_vit):
    """Block-boundary activations advanced block by block: every layer sees exactly the inputs a
    forward pass from the network input gives, on the float and on the quantized model."""
    model = micro_vit(3)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    batches = [x[:4], x[4:]]
    q = quantize(model, QuantConfig.uniform(4, 4), batches, progress=False)
    units = discover_operations(q, x[:1])
    assert block_container(q, [n for n, _ in units]) == "blocks"
    cache = BlockInputCache(q, "blocks", batches, torch.device("cpu"))
    for name, kind in units:
        old = capture_inputs(q, name, kind, batches, torch.device("cpu"))
        new = capture_inputs(q, name, kind, batches, torch.device("cpu"), cache)
        assert len(old) == len(new)
        for a, b in zip(old, new):
            assert torch.equal(a, b), name
    assert cache.block == 1  # advanced once, to the last block
