"""vitquant_core: post-training quantization of vision transformers and CNNs.

One verb quantizes::

    from vitquant_core import QuantConfig, quantize
    qmodel = quantize(model, QuantConfig.uniform(w_bits=8, a_bits=8), calib_batches)

The float model is never mutated; ``qmodel.vitquant_report`` says what was quantized.
"""
from .nn import FLOAT, LayerSpec, QuantConfig, quant_report, quantize
from .quant import PerChannel, PerTensor, QType, qint, quint

__version__ = "0.1.0"
__all__ = ["FLOAT", "LayerSpec", "QuantConfig", "quant_report", "quantize", "PerChannel", "PerTensor",
           "QType", "qint", "quint", "__version__"]
