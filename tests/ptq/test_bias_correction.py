"""Bias correction (Liu et al., NeurIPS 2021, §3.4): a known constant error is folded into the bias."""
from __future__ import annotations

import torch
import torch.nn as nn

from vitquant_core import QuantConfig, quantize
from vitquant_core.ptq import correct_bias


def test_bias_correction_removes_a_known_constant_error():
    torch.manual_seed(0)
    lin = nn.Linear(12, 6, bias=False)
    x = torch.randn(12).expand(4, 5, 12).clone()  # every token identical: the error is a per-channel constant
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    with torch.no_grad():
        err = qlin(x) - lin(x)
    assert float(err.abs().max()) > 1e-3
    shift = correct_bias(qlin, x)
    assert qlin.bias is not None  # created: the layer had none
    torch.testing.assert_close(shift, err[0, 0])
    with torch.no_grad():
        torch.testing.assert_close(qlin(x), lin(x), rtol=0, atol=1e-5)
    assert lin.bias is None  # the float layer is untouched
