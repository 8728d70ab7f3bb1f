import fnmatch
import warnings

import numpy as np
import pytest
import torch

from vitquant_core import FLOAT, QuantConfig, quantize
from vitquant_core.mixed import Problem, allocation_to_config, escape_glob, parse_candidate, solve_milp
from vitquant_core.models import create_model
from vitquant_core.quant import PerTensor

CANDS = ("W3A3", "W4A4", "W4A8", "W6A6", "W8A8", "float")


def random_problem(ops, seed=0) -> Problem:
    """Sensitivities that fall with bits, scaled per op at random; BOPs ∝ b_w·b_a."""
    rng = np.random.default_rng(seed)
    drop = {"W3A3": 8.0, "W4A4": 3.0, "W4A8": 2.0, "W6A6": 0.5, "W8A8": 0.1}
    sens = {o: {c: float(rng.uniform(0.1, 3.0)) * d for c, d in drop.items()} for o in ops}

    def bops(c):
        w, a = parse_candidate(c)
        return (w or 32) * (a or 32)

    return Problem(tuple(ops), CANDS, sens, {"bops": {o: {c: bops(c) for c in CANDS} for o in ops}})


def check_report(qmodel, choice):
    report = qmodel.vitquant_report
    rows = {r["name"]: r for r in report.ops}
    for op, label in choice.items():
        w, a = parse_candidate(label)
        attention = op.rsplit(".", 1)[-1] in ("matmul_qk", "softmax", "matmul_av")
        if label == "float":
            assert op in report.float_ops and op not in rows, op
        else:
            assert (rows[op]["w_bits"], rows[op]["a_bits"]) == ((None if attention else w), a), op
    return rows


def test_vit_gets_exactly_the_chosen_bits(tiny_vit):
    ops = [n for n, m in tiny_vit.named_modules() if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    ops += [f"blocks.{i}.attn.{p}" for i in range(2) for p in ("matmul_qk", "softmax", "matmul_av")]
    p = random_problem(ops)
    # the BOPs of uniform W4A8 for the whole problem: room for a mix above and below it
    a = solve_milp(p, {"bops": 32.0 * len(ops)})
    assert len(set(a.choice.values())) >= 3, a.counts()  # a real mix, not a uniform setting
    base = QuantConfig.uniform(8, 8, a_observer="percentile", a_granularity=PerTensor())
    config = allocation_to_config(a, base)
    assert QuantConfig.from_json(config.to_json()) == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every rule matches an operation
        q = quantize(tiny_vit, config, [torch.randn(4, 3, 32, 32)], progress=False)
    rows = check_report(q, a.choice)
    # outside the problem, the base's keep-float rules still hold; its observers are kept inside
    assert {"patch_embed.proj", "head"} <= set(q.vitquant_report.float_ops)
    assert all(r["a_observer"] == "percentile" for r in rows.values())
    assert all(r["w_observer"] == "minmax" for r in rows.values() if r["w_bits"] is not None)


def test_cnn_rules_match_exact_names_only():
    torch.manual_seed(0)
    model = create_model("resnet20_cifar").eval()
    # "conv1" is both the stem and a pattern the base keeps in float; "layer1.0.conv1" must not match it
    ops = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"]
    choice = {"conv1": "W8A8", "layer1.0.conv1": "W3A3", "layer1.0.conv2": "float", "fc": "W4A8"}
    p = random_problem(ops)
    a = p.allocation([CANDS.index(choice[o]) for o in ops], "hand", {}, "given", 0.0)
    config = allocation_to_config(a, QuantConfig.uniform(6, 6))
    q = quantize(model, config, [torch.randn(4, 3, 32, 32)], progress=False)
    rows = check_report(q, choice)
    assert (rows["layer1.1.conv1"]["w_bits"], rows["layer1.1.conv1"]["a_bits"]) == (6, 6)  # the base's default


def test_rules_come_first_and_keep_the_base_rules_after():
    base = QuantConfig.uniform(8, 8, keep_float=("head",))
    p = random_problem(["blocks.0.attn.matmul_qk", "head", "blocks.0.mlp.fc1"])
    a = p.allocation([CANDS.index("W4A4"), CANDS.index("W6A6"), CANDS.index("float")], "hand", {}, "given", 0.0)
    config = allocation_to_config(a, base)
    assert [pat for pat, _ in config.rules] == ["blocks.0.attn.matmul_qk", "head", "blocks.0.mlp.fc1", "head"]
    assert config.spec_for("blocks.0.attn.matmul_qk").label() == "W32A4"  # an activation only
    assert config.spec_for("head").label() == "W6A6"  # the allocation overrides the base's keep-float
    assert config.spec_for("blocks.0.mlp.fc1") == FLOAT
    assert config.spec_for("blocks.1.mlp.fc1").label() == "W8A8"


@pytest.mark.parametrize("name, other", [("blocks.0.mlp.fc1", "blocks.0.mlp.fc10"),
                                         ("features[0].conv", "features0.conv"), ("a*b?c", "aXXbYc")],
                         ids=["plain", "brackets", "wildcards"])
def test_escaped_names_match_only_themselves(name, other):
    pattern = escape_glob(name)
    assert fnmatch.fnmatchcase(name, pattern)
    assert not fnmatch.fnmatchcase(other, pattern)
    assert fnmatch.fnmatchcase(other, name) == (name != "blocks.0.mlp.fc1")  # unescaped, two of them would match


def test_bad_arguments():
    with pytest.raises(TypeError, match="Allocation"):
        allocation_to_config({"a": "W4A4"}, QuantConfig.uniform())
    p = random_problem(["a"])
    a = p.allocation([0], "hand", {}, "given", 0.0)
    with pytest.raises(TypeError, match="QuantConfig"):
        allocation_to_config(a, None)


def test_attention_bits_need_a_base_that_quantizes_attention():
    p = random_problem(["blocks.0.attn.matmul_av"])
    a = p.allocation([CANDS.index("W4A4")], "hand", {}, "given", 0.0)
    with pytest.raises(ValueError, match="quantize_attention=False"):
        allocation_to_config(a, QuantConfig.uniform(8, 8, quantize_attention=False))
    kept = p.allocation([CANDS.index("float")], "hand", {}, "given", 0.0)
    assert allocation_to_config(kept, QuantConfig.uniform(8, 8, quantize_attention=False)).rules[0][1] == FLOAT
