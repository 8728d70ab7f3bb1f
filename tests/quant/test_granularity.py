"""Granularity: per-tensor or per-channel (any axis), its JSON form and its reduction dims."""
import pytest

from vitquant_core.quant import PerChannel, PerTensor, granularity_from_json
from vitquant_core.quant.granularity import check_activation_granularity, reduce_dims

CASES = [PerTensor(), PerChannel(0), PerChannel(1), PerChannel(-1)]


@pytest.mark.parametrize("gran", CASES, ids=[str(g) for g in CASES])
def test_json_round_trip(gran):
    assert granularity_from_json(gran.to_json()) == gran


def test_json_forms():
    assert PerTensor().to_json() == {"kind": "per_tensor"}
    assert PerChannel(2).to_json() == {"kind": "per_channel", "axis": 2}
    assert granularity_from_json("per_tensor") == PerTensor()
    assert granularity_from_json("per_channel") == PerChannel(0)
    assert granularity_from_json({"kind": "per_channel", "axis": "-1"}) == PerChannel(-1)
    assert (str(PerTensor()), str(PerChannel(0)), str(PerChannel(-1))) == (
        "per_tensor", "per_channel", "per_channel(axis=-1)")


@pytest.mark.parametrize("bad", ["per_row", {"kind": "blocks"}, 3, None, {}, {"kind": "per_channel", "axis": "x"},
                                 {"kind": "per_channel", "axis": 1.5}, {"kind": "per_channel", "axis": True}],
                         ids=["str", "kind", "int", "none", "empty", "axis-str", "axis-float", "axis-bool"])
def test_bad_json_is_value_error(bad):
    with pytest.raises(ValueError, match="granularity"):
        granularity_from_json(bad)


@pytest.mark.parametrize("ndim, gran, dims", [
    (3, PerTensor(), (0, 1, 2)),
    (3, PerChannel(0), (1, 2)),
    (3, PerChannel(1), (0, 2)),
    (3, PerChannel(-1), (0, 1)),
    (4, PerChannel(-1), (0, 1, 2)),
    (4, PerChannel(2), (0, 1, 3)),
    (1, PerChannel(0), ()),
], ids=["3d-tensor", "3d-ax0", "3d-ax1", "3d-ax-1", "4d-ax-1", "4d-ax2", "1d-ax0"])
def test_reduce_dims(ndim, gran, dims):
    assert reduce_dims(ndim, gran) == dims


@pytest.mark.parametrize("ndim, axis", [(3, 3), (3, -4), (2, 5), (1, 1)], ids=["3d-ax3", "3d-ax-4", "2d-ax5", "1d-ax1"])
def test_reduce_dims_axis_out_of_range(ndim, axis):
    with pytest.raises(ValueError, match="out of range"):
        reduce_dims(ndim, PerChannel(axis))


@pytest.mark.parametrize("axis", ["x", 1.0, True, None], ids=["str", "float", "bool", "none"])
def test_per_channel_axis_must_be_an_integer(axis):
    with pytest.raises(TypeError, match=r"PerChannel axis must be an integer, got .*PerChannel\(0\) for a weight"):
        PerChannel(axis)


@pytest.mark.parametrize("gran, ndim", [(PerChannel(0), None), (PerChannel(0), 4), (PerChannel(-3), 3),
                                        (PerChannel(-4), 4)], ids=["ax0", "ax0-4d", "ax-3-3d", "ax-4-4d"])
def test_activation_batch_axis_is_refused(gran, ndim):
    with pytest.raises(ValueError, match=r"is per sample: axis 0 of an activation is the batch axis.*use PerTensor"):
        check_activation_granularity(gran, ndim)


@pytest.mark.parametrize("gran, ndim", [(PerTensor(), 3), (PerChannel(-1), None), (PerChannel(-1), 3),
                                        (PerChannel(1), 4), (PerChannel(-3), 4)],
                         ids=["tensor", "ax-1", "ax-1-3d", "ax1-4d", "ax-3-4d"])
def test_activation_feature_axes_are_accepted(gran, ndim):
    assert check_activation_granularity(gran, ndim) is None
