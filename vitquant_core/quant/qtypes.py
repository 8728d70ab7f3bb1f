"""Quantized integer types: a small frozen description of a grid of integers."""
from __future__ import annotations

from dataclasses import dataclass

MIN_BITS, MAX_BITS = 2, 16


@dataclass(frozen=True)
class QType:
    """An integer grid ``[qmin, qmax]`` of ``bits`` bits.

    ``signed`` grids are symmetric-restricted (qmin = -2^(b-1), qmax = 2^(b-1) - 1, and the
    scale maps max|x| to qmax); unsigned grids hold 0 .. 2^b - 1 for non-negative tensors
    (post-softmax, post-ReLU) or for asymmetric (zero-point) quantization.
    """

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise TypeError(f"bits must be an int, got {type(self.bits).__name__}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be between {MIN_BITS} and {MAX_BITS}, got {self.bits}: "
                             "keep a tensor in float with bits=None instead of 32")

    @property
    def name(self) -> str:
        return f"{'q' if self.signed else 'qu'}int{self.bits}"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    @property
    def storage_dtype(self):
        import torch

        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed and self.bits <= 16 else torch.int32

    def __str__(self) -> str:
        return self.name


def qint(bits: int) -> QType:
    return QType(bits, signed=True)


def quint(bits: int) -> QType:
    return QType(bits, signed=False)


qint4, qint6, qint8 = qint(4), qint(6), qint(8)
quint4, quint8 = quint(4), quint(8)
