"""Running exported models on ONNX Runtime's CPU engine: accuracy, latency, size, and
ONNX Runtime's own static quantization as a baseline.

ONNX Runtime (https://onnxruntime.ai) is used here as the integer engine: its graph
optimizer fuses the QDQ groups of :mod:`.onnx_qdq` into int8 kernels (QLinearConv,
QLinearMatMul, MatMulIntegerToFloat ...), so a QDQ model really runs in integers,
unlike the fake-quantized PyTorch model. Its ``quantize_static`` (MinMax, Entropy and
Percentile calibration) is the baseline our scales are compared against.
"""
from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .onnx_qdq import INPUT_NAME

CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")


def ort_session(path: str | Path, threads: int | None = None,
                optimized_path: str | Path | None = None) -> ort.InferenceSession:
    """A CPU session with every graph optimization on (the QDQ fusions need them).

    ``threads``: intra-op threads (None: ONNX Runtime's default, one per core).
    ``optimized_path``: also write the optimized graph there, to see which kernels ran.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # warnings about unused initializers are noise here
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for one per core), got {threads}")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits of one batch."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


@dataclass
class OnnxEval:
    top1: float  # percent
    n: int
    predictions: torch.Tensor


def evaluate_onnx(path: str | Path, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  threads: int | None = None) -> OnnxEval:
    """Top-1 (percent) and per-image predictions of the ONNX model over ``loader``."""
    sess = ort_session(path, threads)
    preds, labels = [], []
    for x, y in loader:
        logits = run(sess, x)
        if not np.isfinite(logits).all():
            raise FloatingPointError(f"{path}: ONNX Runtime produced NaN/Inf logits")
        preds.append(torch.from_numpy(logits.argmax(1)))
        labels.append(torch.as_tensor(y))
    if not preds:
        raise ValueError("the loader yielded no batch: pass at least one (x, y) batch")
    p, y = torch.cat(preds), torch.cat(labels)
    return OnnxEval(100.0 * (p == y).float().mean().item(), len(y), p)


def input_shape(path: str | Path) -> tuple[int, ...]:
    """The model input's shape without its (dynamic) batch axis."""
    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    return tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])


def latency(path: str | Path, batch: int = 1, n_warmup: int = 3, n_runs: int = 20,
            threads: int | None = None, seed: int = 0) -> float:
    """Median wall time of one forward pass of ``batch`` random inputs, in milliseconds."""
    if batch < 1 or n_runs < 1 or n_warmup < 0:
        raise ValueError(f"need batch >= 1, n_runs >= 1, n_warmup >= 0; got {batch}, {n_runs}, {n_warmup}")
    sess = ort_session(path, threads)
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape(path)), dtype=np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(n_warmup):
        sess.run(None, feed)
    times = []
    for _ in range(n_runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def file_size(path: str | Path) -> int:
    """Bytes on disk, external data files included."""
    path = Path(path)
    data = onnx.load(str(path), load_external_data=False).graph.initializer
    extra = {e.value for i in data for e in i.external_data if e.key == "location"}
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in extra)


def kernel_counts(path: str | Path, threads: int | None = 1) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime actually runs (after its QDQ fusions)."""
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "optimized.onnx"
        ort_session(path, threads, optimized_path=opt)
        counts: dict[str, int] = {}
        for node in onnx.load(str(opt)).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class _Reader:
    """ONNX Runtime's CalibrationDataReader over our calibration batches."""

    def __init__(self, batches: Sequence[torch.Tensor]) -> None:
        self.batches = [np.ascontiguousarray(b.detach().cpu().numpy(), dtype=np.float32) for b in batches]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {INPUT_NAME: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def ort_quantize_static(fp32_path: str | Path, calib_batches: Sequence[torch.Tensor], method: str = "MinMax",
                        out_path: str | Path | None = None, op_types: Sequence[str] | None = None) -> Path:
    """ONNX Runtime's own W8A8 static quantization of the FP32 export: QDQ, per-channel int8
    weights, int8 activations with its ``method`` calibration on the same images.

    ``op_types``: the operator types it quantizes (None: its default set, which leaves
    residual ``Add`` in float, and with it the convs feeding one). Returns the path written
    (``out_path``, else ``<fp32 stem>.ort_<method>.onnx`` beside it).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if not calib_batches:
        raise ValueError("pass at least one calibration batch")
    fp32_path = Path(fp32_path)
    out = Path(out_path) if out_path else fp32_path.with_name(f"{fp32_path.stem}.ort_{method.lower()}.onnx")
    # ONNX Runtime's defaults otherwise: asymmetric int8 activations, symmetric int8 weights.
    # Its advice to pre-process, per-tensor notes on 1-D weights and calibration progress go to
    # the root logger and stdout: kept off the pages, errors still raise.
    with _quiet():
        quantize_static(str(fp32_path), str(out), _Reader(calib_batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        calibration_providers=["CPUExecutionProvider"],
                        op_types_to_quantize=list(op_types) if op_types is not None else None)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
