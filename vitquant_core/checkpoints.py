"""Checkpoints: safetensors weights (no pickle) with a JSON model card beside each.

The card records the file's SHA-256, checked on every load, and the model it belongs to,
so weights of one architecture are never loaded under another's name.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .io import atomic_write


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def read_card(checkpoint: str | Path) -> dict[str, Any]:
    """The JSON model card beside ``checkpoint``, checked for the fields loading relies on."""
    path = card_path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(
            f"model card {path} is missing: every checkpoint needs its JSON card beside it "
            "(vitquant_core.models.save_checkpoint writes both)")
    fix = "restore it (git checkout) or write the checkpoint again with vitquant_core.models.save_checkpoint"
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"model card {path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {path} must hold a JSON object, not a {type(card).__name__}: {fix}")
    problems = []
    if not isinstance(card.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", card["sha256"]):
        problems.append(f"'sha256' must be the checkpoint's 64-hex-digit SHA-256, got {card.get('sha256')!r}")
    if not isinstance(card.get("model", ""), str):
        problems.append(f"'model' must be a model name, got {card['model']!r}")
    if not isinstance(card.get("builder_kwargs", {}), dict):
        problems.append(f"'builder_kwargs' must be an object, got {card['builder_kwargs']!r}")
    if problems:
        raise ValueError(f"model card {path} is malformed: {'; '.join(problems)}; {fix}")
    return card


def check_card_model(card: dict[str, Any], checkpoint: str | Path, name: str | None) -> None:
    """Refuse weights whose card names another model, before the state dict fails to fit."""
    if name is not None and card.get("model") and card["model"] != name:
        raise ValueError(
            f"checkpoint {checkpoint} holds weights for {card['model']!r} (its card's 'model'), but model "
            f"{name!r} was asked for: load it as {card['model']!r}, or pass a checkpoint of {name!r}")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str | None) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
        found = "; ".join(f"{what} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                          for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                             ("shape mismatches", shapes)) if keys)
        raise ValueError(
            f"checkpoint {path} does not fit model {name or type(model).__name__!r}: "
            f"{found or e}; it was saved from another architecture, pass the matching model name") from None


def save_checkpoint(model: nn.Module, path: str | Path, card: dict[str, Any],
                    weight_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Write ``model``'s weights as safetensors and a card (with their SHA-256) beside them.

    ``weight_dtype`` (e.g. ``torch.float16``) stores the conv and linear weights (tensors of
    two or more dimensions) in that type to halve the file; norms, biases and buffers stay
    as they are. Loading casts them back to the model's dtype.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if weight_dtype is not None:
        state = {k: v.to(weight_dtype) if v.is_floating_point() and v.ndim >= 2 else v
                 for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    card = dict(card)
    card["file"] = path.name
    card["sha256"] = sha256_file(path)
    card["size_bytes"] = path.stat().st_size
    card["n_parameters"] = sum(p.numel() for p in model.parameters())
    atomic_write(card_path(path), json.dumps(card, indent=2) + "\n")
    return card


def load_checkpoint(model: nn.Module, path: str | Path, verify: bool = True,
                    name: str | None = None) -> dict[str, Any]:
    """Load safetensors weights into ``model`` after checking the card's SHA-256.

    ``name``, the model asked for, is compared with the card's ``model`` field.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    card: dict[str, Any] = {}
    if verify:
        card = read_card(path)
        check_card_model(card, path, name)
        digest = sha256_file(path)
        if digest != card.get("sha256"):
            raise ValueError(
                f"checkpoint {path} has SHA-256 {digest}, but its card says "
                f"{card.get('sha256')}: the file is corrupt or was replaced; restore it "
                "(git checkout) or retrain it")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a bad header
        raise ValueError(f"checkpoint {path} is not a readable safetensors file ({e}): it is truncated or "
                         "not a checkpoint; restore it (git checkout) or save it again") from None
    _load_state(model, state, path, name)
    card.setdefault("sha256", sha256_file(path) if not verify else card.get("sha256"))
    return card
