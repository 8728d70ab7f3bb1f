"""The training log behind a checkpoint, across warm restarts."""
from __future__ import annotations

import json

from vitquant_core.training.history import history_before


def test_history_tags_a_vits_drop_path_so_a_plot_can_mark_where_it_changed(tmp_path):
    # stochastic depth acts on training batches only, so turning it off at a restart moves the
    # training-batch curve by itself; a CNN's card carries the field but never uses it
    def run(name, model, drop_path, epochs, init=None):
        recipe = {"augmentation": "random crop (pad 4) + flip", "drop_path": drop_path}
        card = {"model": model, "recipe": recipe, "epochs": epochs, "initialised_from": init}
        if init:
            card["epochs_in_total"] = epochs + init["epochs"]
        (tmp_path / f"{name}.json").write_text(json.dumps(card))
        rows = [{"epoch": e + 1, "train_top1": 50.0 + e} for e in range(epochs)]
        (tmp_path / f"{name}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    run("v0", "deit_tiny_cifar", 0.1, 2)
    first = history_before(tmp_path / "v0.safetensors")
    assert [(r["run"], r["epoch"], r["drop_path"]) for r in first] == [(0, 1, 0.1), (0, 2, 0.1)]
    # a restart's .init.train.jsonl is what history_before gave for its starting checkpoint
    (tmp_path / "v1.init.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    run("v1", "deit_tiny_cifar", 0.0, 1, init={"file": "v0.safetensors", "epochs": 2})
    assert [(r["run"], r["epoch"], r["drop_path"]) for r in history_before(tmp_path / "v1.safetensors")] == [
        (0, 1, 0.1), (0, 2, 0.1), (1, 3, 0.0)]
    run("c0", "resnet20_cifar", 0.1, 1)
    assert [set(r) for r in history_before(tmp_path / "c0.safetensors")] == [
        {"epoch", "train_top1", "run", "augmentation"}]
