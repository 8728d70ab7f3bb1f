"""The command line of :mod:`vitquant_core.training.train`: one ``--option`` per
:class:`~vitquant_core.training.config.TrainConfig` field, its help text from the field.

A bad value is refused while the line is parsed, by argparse's usage error naming the flag
and what it accepts, before any data is loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from .config import TrainConfig, check_device, check_lr, check_model_name


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _parse_bool_or_auto(text: str) -> bool | None:
    return None if text.lower() == "auto" else _parse_bool(text)


def _checked(parse: Callable[[str], Any], check: Callable[[Any], None]) -> Callable[[str], Any]:
    """``parse`` then ``check``, a check's ValueError becoming argparse's message for the flag."""
    def parse_and_check(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value
    return parse_and_check


def _name(text: str) -> str:
    return text


# options whose values are checked as they are parsed, beyond their type
_CHECKED = {
    "lr": _checked(float, check_lr),
    "device": _checked(_name, check_device),
    "teacher": _checked(_name, lambda name: check_model_name(name, "teacher")),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser: each field's type ("float | None" parses as float, "bool | None" also takes "auto")."""
    p = argparse.ArgumentParser(prog="python -m vitquant_core.training.train",
                                description="Train a reference model on CIFAR-10.")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        optional = type(None) in typing.get_args(hints[f.name])
        kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
        parse = _CHECKED.get(f.name) or {bool: _parse_bool_or_auto if optional else _parse_bool}.get(
            kinds[0], kinds[0])
        help = f.metadata["help"]
        if "default" not in help and f.default is not None:
            help += " (default: %(default)s)"
        p.add_argument(f"--{f.name.replace('_', '-')}", type=parse, default=f.default, help=help)
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line; a bad value exits with argparse's usage error."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        return TrainConfig(**vars(args))
    except (ValueError, FileNotFoundError) as e:  # a bad combination: a usage error, not a traceback
        p.error(str(e))
