"""Figures of notebook 00: training curves across warm restarts, the data-copy probe, and what
the training augmentation does to an image."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..data import ImageSplit
from .augment import TRIVIAL_AUGMENT_OPS, random_crop_flip, sample_trivial_augment, trivial_augment_wide


def restart_labels(logs: pd.DataFrame, cards: dict[str, dict[str, Any]]) -> list[tuple[float, str]]:
    """Where each warm restart began (half an epoch before its first) and its label: the test
    top-1 it started from and what changed there that moves the training-batch curve by itself
    (TrivialAugment on or off, mixing off, stochastic depth changed).

    ``logs`` holds the rows of :func:`~vitquant_core.training.report.training_logs`. The last
    restart starts from its card's figure, earlier ones from their log's last test top-1.
    """
    labels = []
    for name, model_log in logs.groupby("model"):
        per_run = dict(first=("epoch", "min"), aug=("augmentation", "last"), top1=("test_top1", "last"))
        if "drop_path" in model_log:  # a ViT's stochastic depth (NaN for a CNN)
            per_run["drop_path"] = ("drop_path", "last")
        starts = model_log.groupby("run").agg(**per_run)
        for i, k in enumerate(starts.index):
            if k == 0:
                continue
            prev = starts.iloc[i - 1]
            start_top1 = cards[name]["initialised_from"]["test_top1"] if k == starts.index[-1] else prev["top1"]
            why = _what_changed(starts.loc[k], prev)
            labels.append((starts.loc[k, "first"] - 0.5, f"{name} restart from {start_top1} %{why}"))
    return sorted(labels)


def _what_changed(run: pd.Series, prev: pd.Series) -> str:
    aug, prev_aug = str(run["aug"]), str(prev["aug"])
    ta, prev_ta = "TrivialAugment" in aug, "TrivialAugment" in prev_aug
    why = ""
    if ta and "mix" not in aug and "mix" in prev_aug:
        why = ", unmixed batches"
    elif ta != prev_ta:
        why = ", TrivialAugment added" if ta else ", TrivialAugment off"
    # stochastic depth acts on training batches only
    dp, prev_dp = run.get("drop_path"), prev.get("drop_path")
    if pd.notna(dp) and pd.notna(prev_dp) and dp != prev_dp:
        why += ", drop path off" if dp == 0 else f", drop path {prev_dp:g} to {dp:g}"
    return why


def plot_training_curves(logs: pd.DataFrame, cards: dict[str, dict[str, Any]]) -> Figure:
    """Training loss (left) and top-1 on training batches and the test split (right) per
    epoch, a dotted line where each warm restart began, labelled by :func:`restart_labels`."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    sns.lineplot(logs, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0])
    axes[0].set(title="training loss (label-smoothed)")
    acc = logs.melt(id_vars=["model", "epoch"], value_vars=[c for c in ("train_top1", "test_top1") if c in logs],
                    var_name="split", value_name="top1").dropna()
    sns.lineplot(acc, x="epoch", y="top1", hue="model", style="split", marker="o", ax=axes[1])
    axes[1].set(title="top-1 (%): training batches (augmented) and test split", ylabel="top-1 (%)")
    labels = restart_labels(logs, cards)
    for x, _ in labels:
        for ax in axes:
            ax.axvline(x, color="grey", ls=":", lw=1)
    # one line each at the foot of the panel, one above the other (restarts of two models may share an epoch)
    notes = [axes[1].annotate(text, (x, 0.03 + 0.06 * j), xycoords=("data", "axes fraction"), xytext=(3, 0),
                              textcoords="offset points", fontsize=7, color="grey", ha="left", va="bottom")
             for j, (x, text) in enumerate(labels)]
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1))  # clear of the labels
    fig.tight_layout()
    _fit_labels(fig, axes[1], notes)
    return fig


def _fit_labels(fig: Figure, ax: plt.Axes, notes: list[Any]) -> None:
    """Widen ``ax``'s x axis where a label would run past its right edge (measured on the final layout).

    A label of width w anchored a fraction f along a panel of width W fits once the axis spans
    f * W / (W - w) of its present span (widening moves the anchors left, not the widths).
    """
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    lo, hi = ax.get_xlim()
    spans = [(e.x0 - box.x0) / max(box.width - e.width, 0.25 * box.width) * (hi - lo)
             for e in (n.get_window_extent(renderer) for n in notes) if e.x1 > box.x1]
    if spans:
        ax.set_xlim(lo, lo + max(spans) * 1.02)


def plot_data_copy_probe(probe: dict[str, Any]) -> Figure:
    """The probe's runs on this copy, with and without TTA, against the published mean."""
    published, runs = probe["published"], pd.DataFrame(probe["rows"])
    fig, ax = plt.subplots(figsize=(8, 2.2))
    ax.axvline(published["tta_top1"], color="grey",
               label=f"published, original files (mean of {published['n_runs']} runs)")
    ax.scatter(runs["tta_top1"], [0] * len(runs), marker="o", label="this copy, with TTA (one run each)")
    ax.scatter(runs["top1"], [0] * len(runs), marker="x", label="this copy, without TTA")
    ax.set(yticks=[], xlabel="airbench94 test top-1 (%)", title="the same recipe on the two copies of CIFAR-10")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def augmentation_title(op: str, magnitude: float) -> str:
    """A TrivialAugment draw in words: the operation and, where it has one, its magnitude."""
    return {"Identity": op, "AutoContrast": op, "Equalize": op, "Posterize": f"{op}\n{magnitude:.0f} bits",
            "Solarize": f"{op}\nfrom {255 * magnitude:.0f}"}.get(op, f"{op}\n{magnitude:+.2f}")


def plot_augmentation_examples(split: ImageSplit, seed: int) -> Figure:
    """The first image of each class (top), after random crop and flip (middle), and after
    TrivialAugment on top of that (bottom), titled with the operation and magnitude drawn."""
    first = torch.stack([(split.labels == c).nonzero()[0, 0] for c in range(len(split.classes))])
    x = split.images[first]
    g = torch.Generator().manual_seed(seed)
    cropped = random_crop_flip(x, g)
    ops, mags = sample_trivial_augment(len(x), g)
    augmented = trivial_augment_wide(cropped, ops=ops, magnitudes=mags)
    fig, axes = plt.subplots(3, len(x), figsize=(1.5 * len(x), 5), squeeze=False)
    for j in range(len(x)):
        label = augmentation_title(TRIVIAL_AUGMENT_OPS[int(ops[j])], float(mags[j]))
        for i, (row, title) in enumerate(((x, split.classes[j]), (cropped, "crop + flip"), (augmented, label))):
            axes[i, j].imshow(row[j].permute(1, 2, 0).numpy())
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    return fig
