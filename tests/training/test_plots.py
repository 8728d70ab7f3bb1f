"""Notebook 00's figures: restart labels say what changed at each warm restart; each figure
has the axes, lines and titles it promises."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from vitquant_core.data import ImageSplit
from vitquant_core.models import CIFAR10_MEAN, CIFAR10_STD
from vitquant_core.training.plots import (
    augmentation_title,
    plot_augmentation_examples,
    plot_data_copy_probe,
    plot_training_curves,
    restart_labels,
)

CROP = "random crop (pad 4) + flip"
TA = CROP + " + TrivialAugmentWide (batched, one draw per image)"


def log(model: str, runs: list[tuple[int, str, float | None]], epochs_per_run: int = 2) -> list[dict]:
    """Rows as history_before tags them: (run, augmentation, drop_path) for each run, epochs counted on."""
    rows, epoch = [], 0
    for run, aug, drop_path in runs:
        for _ in range(epochs_per_run):
            epoch += 1
            row = {"model": model, "run": run, "epoch": epoch, "augmentation": aug, "train_loss": 2.0 / epoch,
                   "train_top1": 40.0 + epoch, "test_top1": 50.0 + epoch + run}
            if drop_path is not None:
                row["drop_path"] = drop_path
            rows.append(row)
    return rows


def test_restart_labels_say_what_changed_and_where():
    logs = pd.DataFrame(log("resnet20_cifar", [(0, CROP, None), (1, TA, None), (2, CROP, None)]))
    cards = {"resnet20_cifar": {"initialised_from": {"test_top1": 91.5}}}
    # the first restart starts from run 0's last test top-1 (50 + 2), the last from its card's figure
    assert restart_labels(logs, cards) == [(2.5, "resnet20_cifar restart from 52.0 %, TrivialAugment added"),
                                           (4.5, "resnet20_cifar restart from 91.5 %, TrivialAugment off")]


def test_restart_labels_of_a_vit_name_unmixed_batches_and_drop_path():
    mixed, unmixed = TA + " + mixup/cutmix", TA
    vit = log("deit_tiny_cifar", [(0, mixed, 0.1), (1, unmixed, 0.1), (2, unmixed, 0.0), (3, unmixed, 0.05)])
    cnn = log("resnet20_cifar", [(0, CROP, None), (1, CROP, None)])
    logs = pd.DataFrame(vit + cnn)  # the CNN's rows have no drop_path: NaN, never a change
    cards = {"deit_tiny_cifar": {"initialised_from": {"test_top1": 80.0}},
             "resnet20_cifar": {"initialised_from": {"test_top1": 90.0}}}
    assert [text for _, text in restart_labels(logs, cards)] == [
        "deit_tiny_cifar restart from 52.0 %, unmixed batches",
        "resnet20_cifar restart from 90.0 %",  # same recipe: nothing to say
        "deit_tiny_cifar restart from 55.0 %, drop path off",
        "deit_tiny_cifar restart from 80.0 %, drop path 0 to 0.05"]


def test_training_curves_have_both_panels_and_a_line_at_each_restart():
    logs = pd.DataFrame(log("resnet20_cifar", [(0, CROP, None), (1, TA, None)]))
    fig = plot_training_curves(logs, {"resnet20_cifar": {"initialised_from": {"test_top1": 91.5}}})
    loss, top1 = fig.axes[:2]
    assert loss.get_title() == "training loss (label-smoothed)" and loss.get_xlabel() == "epoch"
    assert top1.get_ylabel() == "top-1 (%)" and top1.get_title().startswith("top-1 (%)")
    for ax in (loss, top1):
        assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [2.5]
    assert [t.get_text() for t in top1.texts] == ["resnet20_cifar restart from 91.5 %, TrivialAugment added"]
    # the label fits inside the panel: its right edge is not past the axis'
    renderer = fig.canvas.get_renderer()
    assert top1.texts[0].get_window_extent(renderer).x1 <= top1.get_window_extent(renderer).x1 + 1


def test_data_copy_probe_figure_marks_the_published_mean_and_each_run():
    probe = {"published": {"tta_top1": 94.01, "n_runs": 1000},
             "rows": [{"top1": 92.0, "tta_top1": 93.0}, {"top1": 92.2, "tta_top1": 93.4}]}
    ax = plot_data_copy_probe(probe).axes[0]
    assert [line.get_xdata()[0] for line in ax.lines] == [94.01]
    assert [c.get_offsets()[:, 0].tolist() for c in ax.collections] == [[93.0, 93.4], [92.0, 92.2]]
    assert ax.get_xlabel() == "airbench94 test top-1 (%)"


@pytest.mark.parametrize("op, magnitude, title", [
    ("Identity", 0.0, "Identity"), ("Posterize", 6.0, "Posterize\n6 bits"),
    ("Solarize", 0.5, "Solarize\nfrom 128"), ("Rotate", -12.5, "Rotate\n-12.50")],
    ids=["identity", "posterize", "solarize", "rotate"])
def test_augmentation_title(op, magnitude, title):
    assert augmentation_title(op, magnitude) == title


def test_augmentation_examples_show_one_image_per_class_in_three_rows():
    g = torch.Generator().manual_seed(0)
    split = ImageSplit(dataset="cifar10", split="test", root=None, classes=("cat", "dog", "ship"),
                       labels=torch.tensor([2, 0, 1, 0]),
                       images=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
                       mean=CIFAR10_MEAN, std=CIFAR10_STD)
    fig = plot_augmentation_examples(split, seed=0)
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes[:3]] == ["cat", "dog", "ship"]
    assert [ax.get_title() for ax in fig.axes[3:6]] == ["crop + flip"] * 3
    # the top row is each class's first image, as stored
    assert (fig.axes[0].images[0].get_array() == split.images[1].permute(1, 2, 0).numpy()).all()
