"""Real integer execution: ONNX QDQ export with our scales, run on ONNX Runtime's CPU engine."""
from .onnx_qdq import ExportError, QDQParam, calibrate_conv_outputs, export_fp32, export_qdq, qdq_params, qdq_twin
from .ort import (
           CALIBRATION_METHODS,
           OnnxEval,
           evaluate_onnx,
           file_size,
           kernel_counts,
           latency,
           ort_quantize_static,
           ort_session,
           run,
)

__all__ = ["ExportError", "QDQParam", "calibrate_conv_outputs", "export_fp32", "export_qdq", "qdq_params",
           "qdq_twin", "CALIBRATION_METHODS", "OnnxEval", "evaluate_onnx", "file_size", "kernel_counts", "latency",
           "ort_quantize_static", "ort_session", "run"]
