"""The direct sweep equals quantizing each operation alone (and AIMET's left-in-float view equals
switching one operation off in the fully quantized model), on a micro ViT and a micro CNN."""
from __future__ import annotations

import pytest
import torch

from vitquant_core.analysis.sensitivity import (
    only_op_config,
    scores_at,
    sensitivity_sweep,
    sensitivity_table,
    split_name,
)
from vitquant_core.analysis.sensitivity.ops import Switches
from vitquant_core.analysis.sensitivity.replay import Replay
from vitquant_core.mixed import Problem, solve_milp
from vitquant_core.nn import QuantConfig, quantize
from vitquant_core.nn.protocols import protocol_config

W3A3_VIT = protocol_config("paper", 3, 3)  # every operation of the ViT quantized, softmax included
W3A3_CNN = QuantConfig.uniform(3, 3, keep_float=())  # stem and classifier too


def configs(model_kind: str) -> dict[str, QuantConfig]:
    return {"W3A3": W3A3_VIT if model_kind == "vit" else W3A3_CNN}


def hand_kl(float_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over images of Σ_c p_c (log p_c − log q_c), written out."""
    p, logp, logq = float_logits.softmax(-1), float_logits.log_softmax(-1), logits.log_softmax(-1)
    return float((p * (logp - logq)).sum(-1).mean())


@pytest.fixture(scope="module")
def sweeps(vit, cnn, data16):
    calib, x, y = data16
    out = {}
    for kind, model in (("vit", vit), ("cnn", cnn)):
        rows = sensitivity_sweep(model, configs(kind), ["W3A3", "float"], calib, x, y,
                                 views=("direct", "left_float"), batch_size=10, progress=False)
        out[kind] = (model, rows)
    return out


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_direct_equals_quantizing_each_op_alone(kind, sweeps, data16):
    model, rows = sweeps[kind]
    calib, x, y = data16
    with torch.no_grad():
        fl = model(x)
    float_top1 = 100.0 * float((fl.argmax(-1) == y).float().mean())
    quantized = [r for r in rows if r["candidate"] == "W3A3"]
    expected_ops = 16 if kind == "vit" else 6  # 2 x (qkv, 3 matmul ops, proj, fc1, fc2) + embed, head | 5 convs + fc
    assert len(quantized) == expected_ops and all(r["quantized"] for r in quantized)
    assert any(r["kl"] > 1e-3 for r in quantized)  # 3 bits leave a mark: the comparison is not of zeros
    for r in quantized:
        q = quantize(model, only_op_config(configs(kind)["W3A3"], r["op"]), calib, progress=False)
        with torch.no_grad():
            lq = q(x)
        assert r["kl"] == pytest.approx(hand_kl(fl, lq), rel=1e-4, abs=1e-8), r["op"]
        assert r["top1"] == pytest.approx(100.0 * float((lq.argmax(-1) == y).float().mean())), r["op"]
        assert r["top1_drop"] == pytest.approx(float_top1 - r["top1"])


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_left_float_equals_switching_one_op_off(kind, sweeps, data16):
    model, rows = sweeps[kind]
    calib, x, y = data16
    qa = quantize(model, configs(kind)["W3A3"], calib, progress=False)
    with torch.no_grad():
        fl, la = model(x), qa(x)
    all_top1 = 100.0 * float((la.argmax(-1) == y).float().mean())
    sw = Switches(qa)
    for r in (r for r in rows if r["candidate"] == "W3A3"):
        assert r["all_top1"] == pytest.approx(all_top1) and r["all_kl"] == pytest.approx(hand_kl(fl, la), rel=1e-4)
        sw.ops[r["op"]].set(False)
        with torch.no_grad():
            lo = qa(x)
        sw.ops[r["op"]].set(True)
        assert r["kl_left_float"] == pytest.approx(hand_kl(fl, lo), rel=1e-4, abs=1e-8), r["op"]
        assert r["recovery_top1"] == pytest.approx(100.0 * float((lo.argmax(-1) == y).float().mean()) - all_top1)
        assert r["recovery_kl"] == pytest.approx(r["all_kl"] - r["kl_left_float"])


def test_float_candidate_and_float_ops_have_zero_sensitivity(vit, sweeps, data16):
    calib, x, y = data16
    _, rows = sweeps["vit"]
    for r in (r for r in rows if r["candidate"] == "float"):
        assert (r["kl"], r["top1_drop"], r["recovery_kl"], r["recovery_top1"], r["quantized"]) == (0, 0, 0, 0, False)
    # protocol "default" keeps the patch embedding, the head and the softmax output in float
    kept = ["patch_embed.proj", "head", "blocks.1.attn.softmax"]
    rows = sensitivity_sweep(vit, "default", ["W3A3"], calib, x, y, ops=kept + ["blocks.1.mlp.fc2"],
                             progress=False)
    by_op = {r["op"]: r for r in rows}
    for op in kept:
        assert (by_op[op]["kl"], by_op[op]["top1_drop"], by_op[op]["quantized"], by_op[op]["seconds"]) == (0, 0,
                                                                                                          False, 0)
    assert by_op["blocks.1.mlp.fc2"]["quantized"] and by_op["blocks.1.mlp.fc2"]["kl"] > 0


def test_replay_changes_nothing_and_skips_earlier_blocks(vit, sweeps, data16):
    calib, x, y = data16
    fast = sensitivity_sweep(vit, configs("vit"), ["W3A3"], calib, x, y, batch_size=10, progress=False)
    slow = sensitivity_sweep(vit, configs("vit"), ["W3A3"], calib, x, y, batch_size=10, replay_depth=0,
                             progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in fast]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in slow]
    # a pass for an operation of block 1 computes neither block 0 nor the patch embedding
    # (their calls return the recorded outputs: nothing inside them runs)
    target = vit.blocks[1].mlp.fc2
    replay = Replay(vit, 2, [target])
    expected = replay.trace(x)
    assert {"patch_embed", "blocks.0"} <= set(replay.plan(target)) and "blocks.1" not in replay.plan(target)
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: calls.append(n))
             for n, m in (("blocks.0.attn", vit.blocks[0].attn), ("patch_embed.proj", vit.patch_embed.proj),
                          ("blocks.1.attn", vit.blocks[1].attn))]
    try:
        out = replay.run(x, target)
    finally:
        for h in hooks:
            h.remove()
    assert calls == ["blocks.1.attn"] and torch.equal(out, expected)
    assert "forward" not in vit.blocks[0].__dict__  # the replayed modules are restored


def test_sweep_is_deterministic(cnn, data16):
    calib, x, y = data16
    a, b = (sensitivity_sweep(cnn, configs("cnn"), ["W3A3"], calib, x, y,
                              progress=False) for _ in range(2))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in b]


def test_output_plugs_into_the_allocation_problem(sweeps):
    _, rows = sweeps["cnn"]
    table = sensitivity_table(rows, "kl")
    ops = list(table)
    cost = {op: {"W3A3": 3.0, "float": 32.0} for op in ops}
    problem = Problem(ops, ("W3A3", "float"), table, {"bits": cost})
    # room for exactly one operation in float: the MILP keeps the most sensitive one
    alloc = solve_milp(problem, {"bits": 3.0 * (len(ops) - 1) + 32.0})
    most = max(ops, key=lambda op: table[op]["W3A3"])
    assert [op for op, c in alloc.choice.items() if c == "float"] == [most]
    # negative top-1 drops are clipped for the problem, kept when asked
    assert all(v >= 0 for row in sensitivity_table(rows, "top1_drop").values() for v in row.values())
    assert scores_at(rows, "W3A3", "kl") == {op: table[op]["W3A3"] for op in ops}


def test_split_name():
    assert split_name("blocks.8.mlp.fc2") == ("blocks.8", "mlp.fc2")
    assert split_name("layer1.0.conv1") == ("layer1.0", "conv1")
    assert split_name("head") == (None, "head")


def test_bad_input_raises_clear_errors(vit, data16):
    calib, x, y = data16
    with pytest.raises(ValueError, match="not quantizable operations"):
        sensitivity_sweep(vit, "paper", ["W4A4"], calib, x, y, ops=["blocks.0.attn"], progress=False)
    with pytest.raises(ValueError, match="not understood"):
        sensitivity_sweep(vit, "paper", ["4 bits"], calib, x, y, progress=False)
    with pytest.raises(ValueError, match="one per image"):
        sensitivity_sweep(vit, "paper", ["W4A4"], calib, x, y[:3], progress=False)
    with pytest.raises(ValueError, match="views"):
        sensitivity_sweep(vit, "paper", ["W4A4"], calib, x, y, views=("aimet",), progress=False)
    with pytest.raises(ValueError, match="not a protocol"):
        sensitivity_sweep(vit, "papers", ["W4A4"], calib, x, y, progress=False)
    with pytest.raises(ValueError, match="no QuantConfig for candidate"):
        sensitivity_sweep(vit, {"W8A8": W3A3_VIT}, ["W4A4"], calib, x, y, progress=False)
    with pytest.raises(TypeError, match="not a QuantConfig"):
        sensitivity_sweep(vit, lambda c: "W4A4", ["W4A4"], calib, x, y, progress=False)
    with pytest.raises(ValueError, match="pass calib"):
        sensitivity_sweep(vit, "paper", ["W4A4"], None, x, y, progress=False)
    with pytest.raises(ValueError, match="repeat"):
        sensitivity_sweep(vit, "paper", ["W4A4", "W4A4"], calib, x, y, progress=False)
    with pytest.raises(ValueError, match="view that measures it"):
        sensitivity_table([{"op": "head", "candidate": "W4A4", "kl": 0.1}], "recovery_kl")
