"""Notebook 08's tables, its answer, its results rows, and picking a point in JupyterLab.

The page is static in the book: every point carries an id (P01, P02, ...) printed beside the
plots, and :func:`describe` says what that configuration quantized, how it was measured and by
which run. In a live JupyterLab with ipympl (matplotlib's widget backend, an optional
development dependency), :func:`connect_picker` makes clicking a point print the same text.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import Provenance, write_results
from .pareto import COSTS, Points, mark_fronts, pareto_front

# Marker per protocol (what a W/A setting quantizes); float models and unknown protocols last.
PROTOCOL_MARKERS = {"none": "*", "default": "o", "paper": "s", "onnxruntime default": "D"}
OTHER_MARKER = "X"
WITHIN_POINTS = 1.0  # "as accurate as FP32": within one percentage point of top-1
TABLE_COLUMNS = {"id": "id", "method": "method", "protocol": "protocol", "setting": "setting",
                 "granularity": "granularity", "top1": "top-1 (%)", "energy_uj": "energy (µJ)",
                 "size_mb": "weight size (MB)", "latency_ms": "latency (ms)", "sources": "results of"}


def marker(protocol: str) -> str:
    return PROTOCOL_MARKERS.get(protocol, OTHER_MARKER)


def describe(points: Points, point_id: str) -> str:
    """What point ``point_id`` is: its numbers, the configuration it quantized, and its provenance."""
    if point_id not in points.details:
        raise KeyError(f"no point {point_id!r}: ids run from P01 to P{len(points.frame):02d} (see the table "
                       "beside the plots)")
    p = points.frame.set_index("id").loc[point_id]
    d = points.details[point_id]
    also = "; also " + ", ".join(d["also_in"]) if d["also_in"] else ""
    latency = "not measured (simulated widths have no latency)" if pd.isna(p.latency_ms) else f"{p.latency_ms:.2f} ms"
    lines = [f"{point_id}: {p.model}, {p.method}, {p.setting} under protocol {p.protocol} ({p.granularity})",
             f"  top-1 {p.top1:.2f} %; energy {p.energy_uj:.2f} µJ per inference; weight size {p.size_mb:.3f} MB; "
             f"latency {latency}",
             f"  results of {p.sources} (row {d['row_index']}{also})",
             "  configuration: " + ("float (nothing quantized)" if d["config"] is None else ""),
             *(["    " + line for line in d["config"].splitlines()] if d["config"] else []),
             "  provenance: " + json.dumps(d["provenance"], ensure_ascii=False)]
    return "\n".join(lines)


def front_table(points: Points, model: str, cost: str) -> pd.DataFrame:
    """The points of ``model`` on its front of top-1 against ``cost``, cheapest first; what was not
    measured reads "not measured", never NaN."""
    df = mark_fronts(points, [cost])
    df = df[(df.model == model) & df[f"front_{cost}"]].sort_values(cost)
    return readable(df)


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """Points as the page shows them: named columns, rounded, "not measured" in place of a missing latency."""
    out = df[[c for c in TABLE_COLUMNS if c in df.columns]].rename(columns=TABLE_COLUMNS).set_index("id")
    out = out.round({"top-1 (%)": 2, "energy (µJ)": 2, "weight size (MB)": 3, "latency (ms)": 2})
    return out.astype(object).where(out.notna(), "not measured")


def cheapest_within(points: Points, model: str, cost: str = "energy_uj",
                    within: float = WITHIN_POINTS) -> pd.Series | None:
    """The cheapest quantized point of ``model`` whose top-1 is within ``within`` points of its FP32
    reference (None if no quantized point is, or there is no FP32 reference)."""
    df = points.of(model)
    ok = df[(df.method != "fp32") & df.fp32_top1.notna() & df[cost].notna()]
    ok = ok[ok.top1 >= ok.fp32_top1 - within]
    return None if ok.empty else ok.sort_values([cost, "top1"], ascending=[True, False]).iloc[0]


def _name(p: pd.Series) -> str:
    return f"{p.id} ({p.method} {p.setting}, {p.protocol})"


def model_summary(points: Points, model: str) -> str:
    """One sentence: how many configurations, which are on the energy front, the cheapest within
    one point of FP32 and its energy against FP32's."""
    df = mark_fronts(points, ["energy_uj"])
    mine = df[df.model == model]
    front = mine[mine.front_energy_uj].sort_values("energy_uj")
    text = (f"for {model}, {len(mine)} configuration{'s' if len(mine) != 1 else ''}, {len(front)} on the energy front: "
            + ", ".join(_name(p) for _, p in front.iterrows()))
    best = cheapest_within(points, model)
    fp = mine[mine.method == "fp32"]
    if best is None:
        return text + f"; no quantized configuration is within {WITHIN_POINTS:.0f} point of FP32"
    saving = f", {100 * (1 - best.energy_uj / fp.energy_uj.iloc[0]):.1f} % below FP32" if len(fp) else ""
    return (text + f"; the cheapest within {WITHIN_POINTS:.0f} point of FP32 ({best.fp32_top1:.2f} %) is "
            f"{_name(best)} at {best.top1:.2f} % and {best.energy_uj:.2f} µJ{saving}")


def answer(points: Points, models: Sequence[str], n_models: int = 3) -> dict[str, str]:
    """The strings the page's answer glues, "n/a" where nothing was read."""
    present = [m for m in models if m in points.models()]
    lat = points.frame[points.frame.latency_ms.notna()] if len(points.frame) else points.frame
    g = {"n_points": str(len(points.frame)), "n_models": str(len(present)),
         "sources_read": ", ".join(sorted(set(points.frame.source))) if len(points.frame) else "none",
         "n_latency": str(len(lat)),
         "latency_note": (f"{len(lat)} configurations, the ones notebook 07 ran on ONNX Runtime, have a measured "
                          "latency" if len(lat) else "no configuration has a measured latency (notebook 07's "
                          "ONNX Runtime runs are not in the results read)")}
    for i in range(1, n_models + 1):
        g[f"m{i}_summary"] = "n/a"
    for i, m in enumerate(present[:n_models], start=1):
        g[f"m{i}_summary"] = model_summary(points, m)
    return g


def results_rows(points: Points) -> list[dict[str, Any]]:
    """The contract's rows: each point priced, with its fronts and where it came from (a latency
    only where one was measured)."""
    df = mark_fronts(points)
    rows = []
    for r in df.to_dict("records"):
        row = {"model": r["model"], "method": r["method"], "w_bits": r["w_bits"], "a_bits": r["a_bits"],
               "granularity": r["granularity"], "top1": r["top1"], "protocol": r["protocol"], "point": r["id"],
               "setting": r["setting"], "energy_pj": r["energy_uj"] * 1e6, "size_bytes": round(r["size_mb"] * 1e6),
               "source": r["sources"], **{f"front_{c}": bool(r[f"front_{c}"]) for c in COSTS}}
        if pd.notna(r["latency_ms"]):
            row["latency_ms"] = r["latency_ms"]
        rows.append(row)
    return rows


def draw_panel(ax: Any, df: pd.DataFrame, cost: str) -> dict[Any, list[str]]:
    """Top-1 against ``cost`` for one model's points: a colour per method (the book's), a marker per
    protocol, the front as a dashed step line with its points' ids. Returns artist → point ids."""
    from .. import style

    df = df[df[cost].notna()]
    artists: dict[Any, list[str]] = {}
    for (method, protocol), g in df.groupby(["method", "protocol"], sort=False):
        sc = ax.scatter(g[cost], g.top1, color=style.method_color(method), marker=marker(protocol), s=46,
                        edgecolor="white", linewidth=0.5, label=f"{method} · {protocol}", zorder=3)
        artists[sc] = list(g.id)
    front = df[np.array(pareto_front(df, "top1", cost), dtype=bool)].sort_values(cost)
    if len(front):
        ax.step(front[cost], front.top1, where="post", color="#000000", linestyle="--", linewidth=0.9, zorder=2)
        for _, p in front.iterrows():
            ax.annotate(p.id, (p[cost], p.top1), textcoords="offset points", xytext=(4, 4), fontsize=7)
    return artists


def check_study_parameters(models: Any, sources: Any, latency_batch: Any) -> None:
    """Notebook 08's own parameters, checked before anything is read."""
    from .pareto import SOURCES

    if isinstance(models, str) or not isinstance(models, (list, tuple)) or not models \
            or not all(isinstance(m, str) and m for m in models):
        raise TypeError(f"parameter models must be a non-empty list of names such as ['resnet18_cifar'], "
                        f"got {models!r}")
    if isinstance(sources, str) or not isinstance(sources, (list, tuple)) or not sources:
        raise TypeError(f"parameter sources must be a non-empty list of notebook stems such as ['02_ptq'], "
                        f"got {sources!r}")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"parameter sources: {unknown} are not notebooks that write configurations; choose from "
                         f"{list(SOURCES)}")
    if isinstance(latency_batch, bool) or not isinstance(latency_batch, int) or latency_batch < 1:
        raise ValueError(f"parameter latency_batch must be a batch size notebook 07 timed, e.g. 64, got "
                         f"{latency_batch!r}")


def save_results(results_dir: str | Path, points: Points, provenance: Provenance) -> Path:
    """Write ``{results_dir}/08_pareto.json``: every point as a contract row, and the notes."""
    return write_results(results_dir, "08_pareto", provenance, results_rows(points),
                         {"notes": points.notes, "read": sorted(set(points.frame.source))})


# -- JupyterLab: pick a point ----------------------------------------------------------------

def widget_backend() -> bool:
    """Switch this kernel to ipympl's interactive backend; False (with a note) where ipympl or a
    live IPython kernel is missing, so that the book build never needs it."""
    try:
        import ipympl  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        print("ipympl is not installed (pip install -r requirements-dev.txt): the plots stay static; "
              "describe('P01') says what a point is")
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.run_line_magic("matplotlib", "widget")
    return True


def _output_sink() -> Callable[[str], None]:
    """Where a picked point's text goes: an ipywidgets Output under the figure, else print."""
    try:
        from IPython.display import display
        from ipywidgets import Output
    except ImportError:
        return print
    box = Output()
    display(box)

    def show(text: str) -> None:
        box.clear_output()
        with box:
            print(text)

    return show


def connect_picker(fig: Any, artists: dict[Any, list[str]], describe_point: Callable[[str], str],
                   out: Callable[[str], None] | None = None) -> Callable[[Any], None]:
    """Make each scatter in ``artists`` (artist → point ids, in plotting order) pickable; a pick
    sends :func:`describe` of the picked points to ``out`` (default: an ipywidgets Output shown
    under the figure when ipywidgets is there, else print). Returns the handler."""
    sink = out or _output_sink()
    for artist in artists:
        artist.set_picker(5)  # points within 5 pixels of the click

    def on_pick(event: Any) -> None:
        ids = artists.get(event.artist)
        if ids is not None:
            sink("\n".join(describe_point(ids[i]) for i in event.ind))

    fig.canvas.mpl_connect("pick_event", on_pick)
    return on_pick
