"""ONNX Runtime helpers: evaluation, latency, file size, and its own quantize_static."""
import logging

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from vitquant_core.export import (
    evaluate_onnx,
    export_fp32,
    file_size,
    kernel_counts,
    latency,
    ort_quantize_static,
    ort_session,
    run,
)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    m = SmallCNN().eval()
    m.body[1].running_mean.uniform_(-0.5, 0.5)
    m.body[4].running_var.uniform_(0.5, 2.0)
    path = export_fp32(m, torch.randn(2, 3, 16, 16), tmp_path_factory.mktemp("m") / "fp32.onnx")
    return m, path


def test_fp32_twin_folds_batchnorm_and_matches_torch(fp32):
    m, path = fp32
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(run(ort_session(path, 1), x), m(x).numpy(), rtol=1e-4, atol=1e-5)


def test_evaluate_onnx_counts_hits(fp32):
    _, path = fp32
    x = torch.randn(10, 3, 16, 16)
    pred = torch.from_numpy(run(ort_session(path, 1), x).argmax(1))
    y = pred.clone()
    y[:4] = (y[:4] + 1) % 4  # four constructed misses out of ten
    res = evaluate_onnx(path, [(x[:6], y[:6]), (x[6:], y[6:])], threads=1)
    assert res.n == 10 and res.top1 == pytest.approx(60.0)
    assert torch.equal(res.predictions, pred)
    with pytest.raises(ValueError, match="no batch"):
        evaluate_onnx(path, [])


def test_latency_and_size(fp32):
    _, path = fp32
    ms = latency(path, batch=4, n_warmup=1, n_runs=3, threads=1)
    assert 0 < ms < 5000
    assert file_size(path) == path.stat().st_size
    with pytest.raises(ValueError, match="n_runs"):
        latency(path, n_runs=0)


def test_ort_quantize_static_places_int8_qdq(fp32, capsys, caplog):
    _, path = fp32
    calib = [torch.randn(8, 3, 16, 16)]
    out = ort_quantize_static(path, calib, "Entropy")
    # its advice and calibration progress stay off the page
    assert capsys.readouterr().out == "" and not [r for r in caplog.records if r.levelno < logging.ERROR]
    out = ort_quantize_static(path, calib, "MinMax")
    assert out.name == "fp32.ort_minmax.onnx"
    g = onnx.load(str(out)).graph
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    assert any(w.dtype == np.int8 and w.ndim == 4 for w in weights.values())  # per-channel conv weights
    assert kernel_counts(out).get("QLinearConv", 0) >= 1
    with pytest.raises(ValueError, match="method must be one of"):
        ort_quantize_static(path, calib, "KL")
