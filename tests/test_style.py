"""The book's style: each method one colour of its own, aliases agree, labels carry units."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from vitquant_core import style  # noqa: E402

BOOK_METHODS = ["fp32", "min-max", "percentile", "mse", "ranking-aware", "ptq4vit", "repq-vit", "repq+ranking",
                "repq+adalog", "mixed-milp", "mixed-greedy", "mixed-bisection", "uniform", "onnxruntime-minmax",
                "onnxruntime-entropy", "onnxruntime-percentile", "vitquant-int8"]


def test_every_book_method_has_a_colour_no_other_method_has():
    colours = [style.method_color(m) for m in BOOK_METHODS + ["similarity", "similarity+ranking", "similarity+bias"]]
    assert len(set(colours)) == len(colours) == 20
    assert len(set(style.METHOD_COLORS.values())) == len(style.METHOD_COLORS)


@pytest.mark.parametrize("alias, method", [("ptq", "min-max"), ("standard", "min-max"), ("minmax", "min-max"),
                                           ("ptq_weights_only", "min-max"), ("FP32", "fp32"),
                                           ("ranking-aware", "ranking-aware"), ("similarity+bias", "similarity+bias")],
                         ids=lambda v: v)
def test_aliases_take_their_methods_colour(alias, method):
    assert style.method_color(alias) == style.METHOD_COLORS[method]


def test_standard_ptq_is_seaborns_first_colourblind_colour():
    import seaborn as sns

    first = sns.color_palette("colorblind")[0]
    assert style.method_color("standard") == "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in first))


def test_the_palette_keeps_the_datas_spelling_once_per_name():
    pal = style.method_palette(["standard", "similarity", "standard", "ranking-aware"])
    assert list(pal) == ["standard", "similarity", "ranking-aware"]
    assert pal["standard"] == "#0173b2" and pal["ranking-aware"] == "#d55e00"


def test_an_unknown_method_is_refused_with_what_to_do():
    with pytest.raises(KeyError, match="add it to METHOD_COLORS"):
        style.method_palette(["min-max", "brand-new"])


def test_axis_labels_name_a_unit():
    assert style.axis_label("energy", "pJ") == "energy (pJ)"
    with pytest.raises(ValueError, match="quantity and a unit"):
        style.axis_label("energy", " ")
    fig, ax = plt.subplots()
    style.label_axes(ax, style.BITS, style.TOP1, "4 bits cost 30 points per tensor")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "bit width (bits)", "top-1 accuracy (%)", "4 bits cost 30 points per tensor")
    with pytest.raises(ValueError, match="names no unit"):
        style.label_axes(ax, "bits", style.TOP1, "a finding")
    with pytest.raises(ValueError, match="states its finding"):
        style.label_axes(ax, style.BITS, style.TOP1, "")
    plt.close(fig)
