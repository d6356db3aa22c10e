"""The base of every job's settings: one frozen, typed pydantic model per job.

A job's settings (:class:`~sim2real.perception.train_config.PretrainConfig`,
:class:`~sim2real.transfer.config.FinetuneConfig`) are declared once, as fields with their
constraints; the library function, the pipeline section and the CLI (``--set KEY=VALUE``)
all read them through that model, and the card records its :meth:`~pydantic.BaseModel.
model_dump`. A bad value raises :class:`~sim2real.errors.ConfigError` naming the field, what
was expected and what came; strings (the command line) are converted by pydantic, and
``"none"``/``"null"`` mean ``None`` for a field that allows it.

Example:
    >>> class Demo(Settings):
    ...     epochs: int = Field(3, ge=1)
    ...     lr: float | None = None
    >>> Demo.from_overrides({"epochs": "5", "lr": "none"})
    Demo(epochs=5, lr=None)
    >>> Demo(epochs=0)
    Traceback (most recent call last):
    ...
    sim2real.errors.ConfigError: epochs=0: expected a number >= 1
"""

from __future__ import annotations

import contextlib
import contextvars
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Self

from sim2real.errors import ConfigError

__all__ = ["Field", "Settings", "check_names", "describe_validation_error", "nested_validation"]

_NONE_WORDS = ("none", "null", "")
#: True while a model that reports pydantic's errors itself is being validated (a Settings, or
#: :func:`nested_validation`): a Settings inside it re-raises the ValidationError, whose
#: locations then name the whole dotted path.
_NESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("settings_nested", default=False)


@contextlib.contextmanager
def nested_validation() -> Iterator[None]:
    """Within this block, Settings raise pydantic's ``ValidationError`` (for a containing
    model that reports dotted keys, e.g. the pipeline's config), not ``ConfigError``."""
    token = _NESTED.set(True)
    try:
        yield
    finally:
        _NESTED.reset(token)


class Settings(BaseModel):
    """Frozen, unknown keys are errors; validation errors are :class:`ConfigError`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: What errors call these settings (``unknown fine-tuning settings [...]``).
    settings_name: ClassVar[str] = "settings"

    def __init__(self, **data: Any) -> None:
        token = _NESTED.set(True)  # a Settings inside this one reports to this one
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if token.old_value is True:  # nested: the outer model names the whole path
                raise
            raise ConfigError(describe_validation_error(exc, type(self))) from exc
        finally:
            _NESTED.reset(token)

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """``"none"``/``"null"``/``""`` (command-line strings) -> ``None`` where allowed."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            is_none_word = isinstance(value, str) and value.lower() in _NONE_WORDS
            if field is not None and is_none_word and _allows_none(field.annotation):
                out[name] = None
        return out

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None, **more: Any) -> Self:
        """Build from ``{field: value}`` (strings from the command line are converted).

        Raises:
            ConfigError: an unknown field (the valid ones listed), or a bad value.
        """
        values = {**(overrides or {}), **more}
        check_names(cls, values, cls.settings_name)
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` (field names of this model)."""
        check_names(type(self), changes, self.settings_name)
        return type(self)(**{**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the card's record)."""
        return self.model_dump(mode="json")


def check_names(model: type[BaseModel], values: Mapping[str, Any], what: str = "") -> None:
    """Raise :class:`ConfigError` if ``values`` has a key that is not a field of ``model``."""
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        what = what or f"{model.__name__} fields"
        raise ConfigError(f"unknown {what} {unknown}: expected {sorted(model.model_fields)}")


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: ``field=value: expected ...`` (validator messages as they are)."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"])
        if err["type"] == "value_error":  # a ConfigError from one of the model's validators
            problems.append(msg.removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            problems.append(
                f"unknown setting {loc!r}: expected one of {sorted(model.model_fields)}"
            )
        elif err["type"] == "missing":
            problems.append(f"{loc}: required, but not given")
        else:
            expected = _EXPECTED.get(str(err["type"]), "").format(**err.get("ctx", {}))
            if not expected:
                expected = msg.removeprefix("Input should be ").removeprefix("Value should be ")
            parts = [p for p in err["loc"] if not _is_union_tag(p)] or [model.__name__]
            name = str(parts[0]) + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[1:]
            )
            value = err.get("input")
            problems.append(f"{name}={value!r}: expected {expected}")
    return "; ".join(dict.fromkeys(problems))


#: pydantic's error types in the project's words (``expected ...``).
_EXPECTED = {
    "greater_than_equal": "a number >= {ge}",
    "greater_than": "a number > {gt}",
    "less_than_equal": "a number <= {le}",
    "less_than": "a number < {lt}",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
}


def _is_union_tag(part: Any) -> bool:
    """pydantic names the member of a union in ``loc`` (``tuple[int, int]``, ``literal[...]``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_allows_none(a) for a in typing.get_args(annotation))
    return False
