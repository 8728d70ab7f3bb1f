"""How a model becomes a quantized model: the per-layer config, quantized modules, ``quantize``."""
from .config import DEFAULT_KEEP_FLOAT, FLOAT, NEVER_QUANTIZED, LayerSpec, QuantConfig
from .modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear, WeightQuantizer
from .quantize import QuantReport, act_quantizers, calibrate, fold_batchnorm, prepare, quant_report, quantize

__all__ = ["DEFAULT_KEEP_FLOAT", "FLOAT", "NEVER_QUANTIZED", "LayerSpec", "QuantConfig", "ActQuantizer",
           "QuantAttention", "QuantConv2d", "QuantLinear", "WeightQuantizer", "QuantReport", "act_quantizers",
           "calibrate", "fold_batchnorm", "prepare", "quant_report", "quantize"]
