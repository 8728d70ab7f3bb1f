"""QType: the integer grid [qmin, qmax] of a b-bit (un)signed quantizer, and its storage dtype."""
import dataclasses

import pytest
import torch

from vitquant_core.quant import QType, qint, qint4, qint6, qint8, quint, quint4, quint8
from vitquant_core.quant.qtypes import MAX_BITS, MIN_BITS

ALL_BITS = list(range(2, 17))


def test_bit_limits_are_2_to_16():
    assert (MIN_BITS, MAX_BITS) == (2, 16)


@pytest.mark.parametrize("bits", ALL_BITS, ids=[f"b{b}" for b in ALL_BITS])
def test_signed_grid(bits):
    qt = qint(bits)
    assert qt.signed is True
    assert qt.qmin == -(2 ** (bits - 1))
    assert qt.qmax == 2 ** (bits - 1) - 1
    assert qt.qmax - qt.qmin + 1 == 2 ** bits  # exactly 2^b levels
    assert qt.name == f"qint{bits}" and str(qt) == f"qint{bits}"


@pytest.mark.parametrize("bits", ALL_BITS, ids=[f"b{b}" for b in ALL_BITS])
def test_unsigned_grid(bits):
    qt = quint(bits)
    assert qt.signed is False
    assert qt.qmin == 0
    assert qt.qmax == 2 ** bits - 1
    assert qt.name == f"quint{bits}" and str(qt) == f"quint{bits}"


EXPECTED_DTYPE = (
    [(b, True, torch.int8) for b in range(2, 9)] + [(b, False, torch.uint8) for b in range(2, 9)]
    + [(b, True, torch.int16) for b in range(9, 17)] + [(b, False, torch.int32) for b in range(9, 17)]
)


@pytest.mark.parametrize("bits, signed, dtype", EXPECTED_DTYPE,
                         ids=[f"{'s' if s else 'u'}{b}" for b, s, _ in EXPECTED_DTYPE])
def test_storage_dtype_holds_the_grid(bits, signed, dtype):
    qt = QType(bits, signed)
    assert qt.storage_dtype == dtype
    info = torch.iinfo(qt.storage_dtype)
    assert info.min <= qt.qmin and qt.qmax <= info.max
    # the extremes survive the round trip through the storage dtype and back to float32
    grid_ends = torch.tensor([qt.qmin, qt.qmax], dtype=torch.float32)
    assert torch.equal(grid_ends.to(dtype).to(torch.float32), grid_ends)


@pytest.mark.parametrize("bits", [0, 1, 17, 32, -8], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_bits_out_of_range_is_value_error(bits, signed):
    with pytest.raises(ValueError, match="between 2 and 16"):
        QType(bits, signed)


@pytest.mark.parametrize("bits", [8.0, "8", None, True, 4.5], ids=["float", "str", "none", "bool", "frac"])
def test_non_int_bits_is_type_error(bits):
    with pytest.raises(TypeError, match="bits must be an int"):
        QType(bits)


def test_constructors_raise_too():
    with pytest.raises(ValueError):
        qint(1)
    with pytest.raises(ValueError):
        quint(17)
    with pytest.raises(TypeError):
        qint(8.0)


def test_predefined_types():
    assert (qint4, qint6, qint8) == (QType(4, True), QType(6, True), QType(8, True))
    assert (quint4, quint8) == (QType(4, False), QType(8, False))
    assert (qint8.qmin, qint8.qmax, quint8.qmin, quint8.qmax) == (-128, 127, 0, 255)
    assert (qint4.qmin, qint4.qmax, quint4.qmax) == (-8, 7, 15)


def test_qtype_is_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        qint8.bits = 4  # type: ignore[misc]
    assert qint(8) == qint8 and hash(qint(8)) == hash(qint8)
    assert qint(8) != quint(8)
    assert len({qint(8), qint(8), quint(8), qint(4)}) == 3
