"""The training log behind a checkpoint, across warm restarts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import models as M


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def history_before(init_from: str | Path) -> list[dict[str, Any]]:
    """The training log behind a checkpoint, whole: the log of the run that wrote it
    (``<name>.train.jsonl``) after the log behind *its* starting weights
    (``<name>.init.train.jsonl``, where it was a warm restart), and so on back to the first run.

    Epochs count from the first run's start; each row names its ``run`` (0: the first), that
    run's ``augmentation`` and, for a ViT, its ``drop_path`` (from the run's card), so that a plot
    can mark each restart and what changed there: either moves the training-batch curve by
    itself. Empty when the checkpoint has no log beside it.
    """
    init = Path(init_from)
    rows = [{"run": 0, **row} for row in _read_jsonl(init.with_suffix(".init.train.jsonl"))]
    own = _read_jsonl(init.with_suffix(".train.jsonl"))
    card_path = init.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    # the epochs behind the run's starting weights: its card's count, else the earlier log's
    offset = (card["epochs_in_total"] - card["epochs"] if "epochs_in_total" in card
              else max((row["epoch"] for row in rows), default=0))
    # its place in the chain, also when the log of the run before it was not kept
    run = max(row["run"] for row in rows) + 1 if rows else int(bool(card.get("initialised_from")))
    recipe = card.get("recipe", {})
    tags = {"augmentation": recipe["augmentation"]} if recipe.get("augmentation") else {}
    entry = M.get_entry(card.get("model", ""))
    if entry is not None and entry.family == "vit" and "drop_path" in recipe:  # a CNN has none
        tags["drop_path"] = recipe["drop_path"]
    return rows + [{**row, "epoch": row["epoch"] + offset, "run": run} | tags for row in own]
