"""The maths of quantization: integer types, granularities, quantizers and observers."""
from .granularity import Granularity, PerChannel, PerTensor, granularity_from_json
from .observers import OBSERVERS, MinMaxObserver, MSEObserver, Observer, PercentileObserver, make_observer
from .qtypes import QType, qint, qint4, qint6, qint8, quint, quint4, quint8
from .quantizer import (
                        QTensor,
                        affine_scale,
                        check_finite,
                        fake_quantize,
                        quantize_codes,
                        quantize_tensor,
                        symmetric_scale,
)

__all__ = [
    "Granularity", "PerChannel", "PerTensor", "granularity_from_json", "OBSERVERS", "MinMaxObserver",
    "MSEObserver", "Observer", "PercentileObserver", "make_observer", "QType", "qint", "qint4", "qint6",
    "qint8", "quint", "quint4", "quint8", "QTensor", "affine_scale", "check_finite", "fake_quantize",
    "quantize_codes", "quantize_tensor", "symmetric_scale",
]
