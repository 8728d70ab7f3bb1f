"""Real int8 execution for notebook 07: our W8A8 exported as QDQ with our scales, its FP32 ONNX
twin and ONNX Runtime's own ``quantize_static``, measured through the experiment's row store.

Top-1 on the evaluation subset, agreement with our simulated W8A8, file size beside the size the
cost table predicts, and median latency at batch 1 and 64, every engine timed in interleaved
rounds of one run so that machine noise hits all alike (:mod:`vitquant_core.export` exports and
runs one model).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..cost import OpCost, priced
from ..nn.config import QuantConfig
from ..nn.protocols import setting_config
from .constants import EnergyConstants, load_constants
from .model import energy_summary

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..rowstore import Record

STUDY = "07_energy"
ENGINES = ("fp32", "ours", "ours+req", "ort-MinMax", "ort-Entropy", "ort-Percentile")
ENGINE_METHOD = {"fp32": "fp32", "ours": "vitquant-int8", "ours+req": "vitquant-int8",
                 "ort-MinMax": "onnxruntime-minmax", "ort-Entropy": "onnxruntime-entropy",
                 "ort-Percentile": "onnxruntime-percentile"}
INT_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "ConvInteger", "MatMulInteger",
               "QLinearAdd")
FLOAT_KERNELS = ("Conv", "FusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm")


def engine_config(engine: str, protocol: str) -> QuantConfig | None:
    """What each engine quantizes, for pricing: None (FP32); ours: W8A8 under ``protocol``;
    ONNX Runtime's quantize_static: every weight and input at 8 bits (its default op types)."""
    if engine == "fp32":
        return None
    if engine.startswith("ort-"):
        return QuantConfig.uniform(8, 8, keep_float=())
    return setting_config("W8A8", protocol)


class Int8Exports:
    """The ONNX files of one model, written on first use (a fully stored run writes none)."""

    def __init__(self, exp: Experiment, config: QuantConfig, workdir: str | Path) -> None:
        self.exp, self.config, self.dir = exp, config, Path(workdir)
        self._paths: dict[str, Path | None] = {}
        self._qmodel: torch.nn.Module | None = None

    def qmodel(self) -> torch.nn.Module:
        from ..nn.quantize import quantize

        if self._qmodel is None:  # the same calibration as the stored simulation: deterministic
            self._qmodel = quantize(self.exp.model, self.config, self.exp.calib, progress=False)
        return self._qmodel

    def applicable(self, engine: str) -> bool:
        """``ours+req`` only where there are convs to requantize (a ViT has none quantized)."""
        from ..nn.modules import QuantConv2d

        return engine != "ours+req" or any(isinstance(m, QuantConv2d) for m in self.qmodel().modules())

    def path(self, engine: str) -> Path:
        from ..export import export_fp32, export_qdq, ort_quantize_static

        if engine not in self._paths:
            example, stem = self.exp.calib[0][:2], self.dir / self.exp.model_name.replace("/", "_")
            if engine == "fp32":
                p = export_fp32(self.exp.model, example, stem.with_suffix(".fp32.onnx"))
            elif engine == "ours":
                p = export_qdq(self.qmodel(), example, stem.with_suffix(".qdq.onnx"))
            elif engine == "ours+req":
                p = export_qdq(self.qmodel(), example, stem.with_suffix(".qdq_req.onnx"), output_calib=self.exp.calib)
            else:
                p = ort_quantize_static(self.path("fp32"), self.exp.calib, engine.removeprefix("ort-"))
            self._paths[engine] = p
        return self._paths[engine]


def time_interleaved(paths: dict[str, Path], batch: int, rounds: int, runs: int,
                     threads: int | None = None) -> dict[str, float]:
    """Median ms per forward pass of each model at ``batch``, the models timed in turn in each round."""
    from ..export.ort import input_shape, ort_session

    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *input_shape(next(iter(paths.values())))), dtype=np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up: the first calls allocate and pack weights
        s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append(time.perf_counter() - t0)
    return {k: 1000.0 * statistics.median(t) for k, t in times.items()}


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def simulated_w8a8(exp: Experiment, protocol: str) -> Record:
    """Our W8A8 min-max PTQ evaluated in PyTorch (fake quantization), through the row store."""
    from ..nn.quantize import quantize

    config = setting_config("W8A8", protocol)
    return exp.measure({"study": STUDY, "protocol": protocol, "config": config.to_json()},
                       lambda: quantize(exp.model, config, exp.calib, progress=False), "min-max", 8, 8,
                       "per_channel", protocol=protocol, engine="torch (simulated)")


def measure_engines(exp: Experiment, engines: Sequence[str], protocol: str, table: Sequence[OpCost],
                    batches: Sequence[int] = (1, 64), rounds: int = 5, runs: dict[int, int] | None = None,
                    threads: int | None = None, constants: EnergyConstants | None = None) -> dict[str, Any]:
    """Top-1, agreement with our simulated W8A8, size and latency of each ONNX engine (row store).

    ``runs``: timed runs per round at each batch (default 20 at batch 1, 3 otherwise). Returns
    ``{"simulated": Record, "engines": {engine: Record}, "latency": Record | None, "skipped": {engine: why}}``.
    """
    c = constants or load_constants()
    sim = simulated_w8a8(exp, protocol)
    config = setting_config("W8A8", protocol)
    versions = _onnx_versions()
    runs = {b: (runs or {}).get(b, 20 if b == 1 else 3) for b in batches}
    out: dict[str, Any] = {"simulated": sim, "engines": {}, "latency": None, "skipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ex = Int8Exports(exp, config, tmp)
        for engine in engines:
            spec = {"study": STUDY, "kind": "onnx", "engine": engine, "versions": versions,
                    **({} if engine == "fp32" else {"config": config.to_json()} if not engine.startswith("ort-")
                       else {"ort_method": engine.removeprefix("ort-")})}
            if engine == "ours+req" and exp.store.get(spec) is None and not ex.applicable(engine):
                out["skipped"][engine] = "no quantized conv: nothing to requantize"
                continue
            out["engines"][engine] = exp.store.get_or_compute(
                spec, lambda engine=engine: _engine_row(exp, ex, engine, sim, protocol, table, c))
        measured = list(out["engines"])
        if measured:
            spec = {"study": STUDY, "kind": "onnx_latency", "engines": measured, "batches": list(batches),
                    "rounds": rounds, "runs": {str(b): n for b, n in runs.items()}, "threads": threads,
                    "versions": versions, "config": config.to_json()}

            def compute() -> tuple[dict[str, Any], None, dict[str, Any]]:
                paths = {e: ex.path(e) for e in measured}
                ms = {str(b): time_interleaved(paths, b, rounds, runs[b], threads) for b in batches}
                return {"latency_ms": ms, "threads": threads or torch.get_num_threads()}, None, {}
            out["latency"] = exp.store.get_or_compute(spec, compute)
    return out


def _engine_row(exp: Experiment, ex: Int8Exports, engine: str, sim: Record, protocol: str,
                table: Sequence[OpCost], c: EnergyConstants) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    from ..export import evaluate_onnx, file_size, kernel_counts

    path = ex.path(engine)
    r = evaluate_onnx(path, exp.loader())
    agree = 100.0 * (r.predictions == torch.tensor(sim.predictions)).float().mean().item()
    counts = kernel_counts(path)
    cfg = engine_config(engine, protocol)
    bits = 32 if engine == "fp32" else 8
    row = {"model": exp.model_name, "method": ENGINE_METHOD[engine], "engine": engine, "w_bits": bits, "a_bits": bits,
           "granularity": "none" if engine == "fp32" else "per_channel", "protocol": "none" if engine == "fp32"
           else (protocol if not engine.startswith("ort-") else "onnxruntime default"),
           "top1": round(r.top1, 3), "agreement_with_simulated": round(agree, 3), "n_eval": r.n,
           "size_bytes": file_size(path), "predicted_size_bytes": predicted_size_bytes(table, cfg),
           "energy_pj": energy_summary(table, cfg, c)["total_pj"],
           "int_kernels": sum(counts.get(k, 0) for k in INT_KERNELS),
           "float_kernels": sum(counts.get(k, 0) for k in FLOAT_KERNELS)}
    return row, r.predictions.tolist(), {"kernels": counts}


def predicted_size_bytes(table: Sequence[OpCost], config: QuantConfig | None) -> int:
    """The parameter bytes the cost table prices (weights at b_w, biases at 32 bits)."""
    return int(priced(table, config).weight_bytes.sum())


def engine_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The engines' results rows with their latencies (ms at each batch) and speed-up vs FP32."""
    lat = result["latency"].row["latency_ms"] if result["latency"] is not None else {}
    rows = []
    for engine, rec in result["engines"].items():
        row = {**rec.row, "simulated_top1": result["simulated"].row["top1"]}
        for b, ms in lat.items():
            row[f"latency_ms_b{b}"] = round(ms[engine], 3)
            row[f"speedup_b{b}"] = round(ms["fp32"] / ms[engine], 3)
        rows.append(row)
    return rows


def engine_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The measured engines side by side; what was not measured says so instead of NaN."""
    cols = {"top1": "top-1 (%)", "agreement_with_simulated": "agreement with simulated W8A8 (%)",
            "size_bytes": "size (MB)", "predicted_size_bytes": "predicted size (MB)"}
    out = []
    for r in rows:
        d = {"model": r["model"], "engine": r["engine"], **{v: r[k] for k, v in cols.items()}}
        d["size (MB)"], d["predicted size (MB)"] = d["size (MB)"] / 1e6, d["predicted size (MB)"] / 1e6
        d["top-1 − simulated (points)"] = r["top1"] - r["simulated_top1"]
        for k in [k for k in r if k.startswith(("latency_ms_b", "speedup_b"))]:
            b = k.rsplit("_b", 1)[1]
            d[f"latency (ms) @ batch {b}" if k.startswith("latency") else f"speed-up vs fp32 @ batch {b}"] = r[k]
        d["int8 / float kernels"] = f"{r['int_kernels']} / {r['float_kernels']}"
        out.append(d)
    return pd.DataFrame(out).set_index(["model", "engine"]).round(2).astype(object).fillna("not measured")
