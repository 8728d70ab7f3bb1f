"""The book's figure style: one colour per method on every page, and axis labels with units.

Every notebook draws with the same colour for the same method, so a reader who learnt on
page 02 that min-max is blue finds it blue on page 08. The colours are the 10 of seaborn's
``colorblind`` palette (Waskom, *seaborn*, JOSS 2021; after Okabe & Ito's colour-universal
design) and the 9 of Paul Tol's ``muted`` scheme (Tol, *Colour Schemes*, SRON/EPS/TN/09-002,
2021), both designed to stay distinct under the common colour-vision deficiencies, plus
black for the float reference. No two methods share a colour.

Use::

    from vitquant_core.style import method_palette, use_book_style, TOP1
    use_book_style()
    sns.barplot(df, x="setting", y="top1", hue="method", palette=method_palette(df.method))
    ax.set(ylabel=TOP1)
"""
from __future__ import annotations

from collections.abc import Iterable

import matplotlib.axes

# seaborn's "colorblind" palette, in seaborn's order
_SNS_CB = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9")
# Paul Tol's "muted" scheme (without its pale grey, which is for missing data)
_TOL_MUTED = ("#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", "#cc6677", "#882255", "#aa4499")

METHOD_COLORS: dict[str, str] = {
    "fp32": "#000000",
    "min-max": _SNS_CB[0],
    "mse": _SNS_CB[1],
    "percentile": _SNS_CB[2],
    "ranking-aware": _SNS_CB[3],
    "ptq4vit": _SNS_CB[4],
    "onnxruntime-minmax": _SNS_CB[5],
    "onnxruntime-percentile": _SNS_CB[6],
    "uniform": _SNS_CB[7],
    "similarity+bias": _SNS_CB[8],
    "repq-vit": _SNS_CB[9],
    "mixed-milp": _TOL_MUTED[0],
    "similarity": _TOL_MUTED[1],
    "repq+adalog": _TOL_MUTED[2],
    "onnxruntime-entropy": _TOL_MUTED[3],
    "mixed-greedy": _TOL_MUTED[4],
    "similarity+ranking": _TOL_MUTED[5],
    "repq+ranking": _TOL_MUTED[6],
    "vitquant-int8": _TOL_MUTED[7],
    "mixed-bisection": _TOL_MUTED[8],
}

# Other names the notebooks and results rows use for the same methods. Standard PTQ is
# min-max calibration (notebook 02's "ptq" rows, notebook 03's "standard" variant).
ALIASES: dict[str, str] = {
    "float": "fp32", "fp": "fp32", "fp16": "fp32",
    "minmax": "min-max", "ptq": "min-max", "ptq_weights_only": "min-max", "standard": "min-max",
    "standard ptq": "min-max",
    "ranking": "ranking-aware", "ranking_aware": "ranking-aware",
    "repq": "repq-vit", "repq_vit": "repq-vit",
    "ort-minmax": "onnxruntime-minmax", "ort-entropy": "onnxruntime-entropy",
    "ort-percentile": "onnxruntime-percentile",
}

# Axis labels: each says the quantity and its unit.
TOP1 = "top-1 accuracy (%)"
TOP5 = "top-5 accuracy (%)"
AGREEMENT = "agreement with fp32 (% of images)"
DELTA_TOP1 = "top-1 difference (percentage points)"
BITS = "bit width (bits)"
SECONDS = "time (s)"
LAYER = "layer (index, forward order)"


def canonical_method(name: str) -> str:
    """The key of ``name`` in :data:`METHOD_COLORS` (aliases resolved, case-insensitive)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in METHOD_COLORS:
        raise KeyError(f"method {name!r} has no colour in vitquant_core.style: add it to METHOD_COLORS "
                       f"(a colour no other method uses) or to ALIASES; known: {sorted(METHOD_COLORS)}")
    return key


def method_color(name: str) -> str:
    """The hex colour of method ``name`` on every page of the book."""
    return METHOD_COLORS[canonical_method(name)]


def method_palette(names: Iterable[str]) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=``, keyed by the names exactly as given
    (aliases keep the spelling the data uses), each name once."""
    return {n: method_color(n) for n in dict.fromkeys(str(n) for n in names)}


def axis_label(quantity: str, unit: str) -> str:
    """``"quantity (unit)"``: an axis label that cannot forget its unit."""
    if not quantity.strip() or not unit.strip():
        raise ValueError(f"an axis label needs a quantity and a unit, got {quantity!r} and {unit!r}")
    return f"{quantity} ({unit})"


def label_axes(ax: matplotlib.axes.Axes, x: str, y: str, finding: str) -> matplotlib.axes.Axes:
    """Set both axis labels and a title that states the figure's finding; the labels must
    name a unit in parentheses, e.g. ``style.TOP1`` or ``axis_label("energy", "pJ")``."""
    for which, text in (("x", x), ("y", y)):
        if not (text.rstrip().endswith(")") and "(" in text):
            raise ValueError(f"{which} label {text!r} names no unit: write it as 'quantity (unit)', "
                             "e.g. with vitquant_core.style.axis_label")
    if not finding.strip():
        raise ValueError("a figure's title states its finding: pass a sentence, not an empty string")
    ax.set(xlabel=x, ylabel=y, title=finding)
    return ax


def use_book_style() -> None:
    """The book's seaborn theme: white grid, notebook context, the colour-blind palette."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette=list(_SNS_CB))
