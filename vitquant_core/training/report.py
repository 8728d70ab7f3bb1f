"""What notebook 00 shows of the reference models: their cards, logs and the data-copy probe.

Each function reads the files shipped in ``checkpoints/`` (model cards, training logs,
``data_copy_probe.json``) and returns plain data (dicts, DataFrames, text) that a notebook
displays; :func:`retrain_reference_models` trains them again from their cards' recipes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .. import models as M
from .config import TrainConfig, check_model_name
from .history import history_before

PROBE_FILE = "data_copy_probe.json"
PROBE_COMMAND = (".venv/bin/python vitquant_core/training/benchmarks/data_copy_probe.py "
                 "--seeds 0 1 --bf16 --out checkpoints")


def load_cards(first: str, pattern: str = "*cifar") -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The cards of the registered models matching ``pattern`` that have a shipped checkpoint,
    ``first`` first and the rest by name, and the names that have none yet."""
    cards, missing = {}, []
    for name in sorted(M.list_models(pattern), key=lambda n: (n != first, n)):
        path = M.get_entry(name).default_checkpoint
        if path.exists():
            cards[name] = M.read_card(path)
        else:
            missing.append(name)
    return cards, missing


def missing_message(missing: list[str]) -> str:
    """How to train each model that has no shipped checkpoint ("" when none is missing)."""
    return "\n".join(f"{name}: no shipped checkpoint yet; train it with "
                     f"`python -m vitquant_core.training.train --model {name}` (see the README)" for name in missing)


def teacher_label(card: dict[str, Any]) -> str:
    """The checkpoint a distilled model learnt from, by hash (cards before this record: its name)."""
    t = card.get("teacher")
    if t:
        return f"{t['model']} ({t['test_top1']} %, {t['sha256'][:12]}...)"
    return card["recipe"].get("teacher") or ""


def card_table(cards: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model card: what it is, how long its last run took, what it reaches."""
    return pd.DataFrame([{
        "model": n, "architecture": c["architecture"], "epochs": c.get("epochs_in_total", c["epochs"]),
        "last run: epochs": c["epochs"], "last run: time (h)": round(c["train_seconds"] / 3600, 2),
        "test top-1 (%)": c["test_top1"], "hardware": c["hardware"],
        "parameters (M)": round(c["n_parameters"] / 1e6, 2), "file (MB)": round(c["size_bytes"] / 1e6, 2),
        "sha256": c["sha256"][:12] + "...", "distilled from": teacher_label(c),
    } for n, c in cards.items()])


def card_notes(cards: dict[str, dict[str, Any]]) -> str:
    """Each card's note as a Markdown list item, headed by the model and its test top-1."""
    return "\n".join(f"- **{n}** ({c['test_top1']:.2f} %): {c.get('note', 'no note in the card')}"
                     for n, c in cards.items())


def card_recipes(cards: dict[str, dict[str, Any]]) -> str:
    """Each card's recipe, as indented JSON under the model's name."""
    return "\n".join(f"{n}: recipe\n{json.dumps(c['recipe'], indent=1)}" for n, c in cards.items())


def training_logs(cards: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every epoch behind each shipped checkpoint, a warm restart's after those of the runs
    before it, each row tagged with its ``model``, its ``run`` (0: the first) and that run's
    augmentation (:func:`~vitquant_core.training.history.history_before`)."""
    return pd.DataFrame([{**row, "model": name} for name in cards
                         for row in history_before(M.get_entry(name).default_checkpoint)])


def retrain_config(name: str, *, seed: int, data_root: str | None, device: str, epochs: int | None = None,
                   init_from: dict[str, str | None] | None = None) -> TrainConfig:
    """The config that trains ``name`` again with its card's recipe and epochs on ``device``.

    ``init_from`` maps a model to the checkpoint its warm restart started from, or to None to
    train the recipe from scratch for the epochs in total; ``epochs`` overrides the card's.
    """
    check_model_name(name, "retrain_models entry")
    card = M.read_card(M.get_entry(name).default_checkpoint)
    overrides: dict[str, Any] = {"seed": seed, "data_root": data_root, "device": device}
    if init_from and name in init_from:
        overrides["init_from"] = init_from[name]
        if init_from[name] is None:
            overrides["epochs"] = card.get("epochs_in_total", card["epochs"])
    if epochs:
        overrides["epochs"] = epochs
    return TrainConfig.from_card(card, **overrides)


def retrain_reference_models(names: list[str], *, seed: int, data_root: str | None, device: str,
                             epochs: int | None = None,
                             init_from: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
    """Train each model in ``names`` again (:func:`retrain_config`); returns the new cards."""
    from .train import train  # the trainer's imports (timm, tqdm) only when training

    configs = [retrain_config(n, seed=seed, data_root=data_root, device=device, epochs=epochs,
                              init_from=init_from) for n in names]  # every name checked before the first run
    return [train(cfg) for cfg in configs]


def read_data_copy_probe(folder: str | Path) -> dict[str, Any] | None:
    """The data-copy probe's runs shipped in ``folder``, or None when it has not been run."""
    path = Path(folder) / PROBE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def data_copy_runs(probe: dict[str, Any]) -> pd.DataFrame:
    """One row per probe run: its seed, test top-1 with and without TTA, steps and seconds."""
    return pd.DataFrame(probe["rows"])[["seed", "top1", "tta_top1", "steps", "train_seconds"]].rename(columns={
        "top1": "test top-1 (%)", "tta_top1": "with TTA (%)", "train_seconds": "train time (s)"})


def data_copy_summary(probe: dict[str, Any] | None) -> dict[str, Any]:
    """What the copy costs the published recipe: the runs' mean top-1 with TTA against the
    published figure (empty when the probe has not been run)."""
    if probe is None:
        return {}
    tta = pd.Series([r["tta_top1"] for r in probe["rows"]])
    published = probe["published"]["tta_top1"]
    return {"tta_top1_mean": round(tta.mean(), 2), "n_runs": len(tta), "published_tta_top1": published,
            "difference": round(tta.mean() - published, 2)}


def data_copy_report(probe: dict[str, Any] | None) -> str:
    """One line on the probe's result against the published one, or how to run the probe."""
    if probe is None:
        return f"no {PROBE_FILE}: `{PROBE_COMMAND}` writes it (about 20 min per seed on 2 CPU cores)"
    published, prov = probe["published"], probe["provenance"]
    tta = pd.Series([r["tta_top1"] for r in probe["rows"]])
    return (f"{prov['dataset']['copy']}, {prov['precision']}: {tta.mean():.2f} % with TTA (mean of {len(tta)} runs); "
            f"{published['data']}: {published['tta_top1']:.2f} % (n={published['n_runs']}, {published['source']}); "
            f"difference {tta.mean() - published['tta_top1']:+.2f} point")


def card_rows(cards: dict[str, dict[str, Any]], *, n_eval: int, seed: int, data_root: str | None,
              profile: str) -> list[dict[str, Any]]:
    """The notebook's result rows: each card's figure and, with ``n_eval`` > 0, a re-evaluation
    of the shipped checkpoint on that many test images."""
    rows = []
    for name, c in cards.items():
        row = {"model": name, "method": "fp32", "w_bits": 32, "a_bits": 32, "granularity": "none",
               "top1": c["test_top1"], "source": "model card", "checkpoint_sha256": c["sha256"],
               "epochs": c["epochs"], "epochs_in_total": c.get("epochs_in_total", c["epochs"]),
               "train_seconds": c["train_seconds"]}
        if n_eval:
            from ..experiment import setup_experiment

            exp = setup_experiment("00_reference_models", model=name, n_calib=1, n_eval=n_eval, seed=seed,
                                   data_root=data_root, profile=profile)
            row["top1_reevaluated"] = round(exp.fp().top1, 3)
            row["n_eval"] = exp.n_eval
        rows.append(row)
    return rows
