"""Command-line flags made from a job's settings model (:class:`sim2real.settings.Settings`).

A flag's type, help and default come from the model's field, so a setting is declared once;
a flag left out is not passed on (the model's default applies), and every other field is
reachable through ``--set KEY=VALUE``.

Example:
    >>> import argparse
    >>> from sim2real.perception.train_config import PretrainConfig
    >>> p = argparse.ArgumentParser()
    >>> add_setting_flags(p, PretrainConfig, ["epochs", "dilated"])
    >>> flag_settings(p.parse_args(["--epochs", "3"]), ["epochs", "dilated"])
    {'epochs': 3}
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel


def add_setting_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    names: Sequence[str],
    *,
    flags: Mapping[str, str] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """Add ``--NAME`` (underscores as dashes, or ``flags[name]``) for each field in ``names``.

    ``int``/``float``/``str`` fields take a value of that type; a ``bool`` field that is
    ``False`` by default is a switch; a ``Literal`` field lists its choices. ``helps[name]``
    replaces the field's description in ``--help``.
    """
    for name in names:
        field = model.model_fields[name]
        flag = "--" + (flags or {}).get(name, name.replace("_", "-"))
        text = (helps or {}).get(name) or field.description or name.replace("_", " ")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        kind, choices = _scalar(field.annotation)
        if kind is bool and field.default is False:
            kwargs["action"] = "store_true"
            parser.add_argument(flag, help=text, **kwargs)
            continue
        if choices:
            kwargs["choices"] = choices
        else:
            kwargs["metavar"] = flag[2:].upper().replace("-", "_")
            if kind in (int, float):
                kwargs["type"] = kind
        default = "none" if field.default is None else field.default
        parser.add_argument(flag, help=f"{text} (default {default})", **kwargs)


def flag_settings(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The settings among ``names`` that were given on the command line."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _scalar(annotation: Any) -> tuple[type | None, list[Any]]:
    """``(int | None) -> (int, [])``; ``Literal["a", "b"] -> (str, ["a", "b"])``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        values = list(typing.get_args(annotation))
        return type(values[0]), values
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(members[0]) if len(members) == 1 else (None, [])
    return (annotation, []) if isinstance(annotation, type) else (None, [])
