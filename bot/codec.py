"""Actions to JSON and back, so that the outbox can keep them in the database.

Only the project's own frozen dataclasses and enums are accepted on the way back: a row from
the database names a type, and the registry says which types exist.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from bot import events, richtext

_REGISTRY: dict[str, type[Any]] = {}
for _module in (events, richtext):
    for _name, _value in vars(_module).items():
        if isinstance(_value, type) and (
            dataclasses.is_dataclass(_value) or (issubclass(_value, Enum) and _value is not Enum)
        ):
            _REGISTRY[_name] = _value


_PLAIN = frozenset({str, int, float, bool})


@cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    # ``dataclasses.fields`` rebuilds its answer on every call; every relayed message is
    # encoded and decoded several times, so a class's fields are looked up once.
    return tuple(f.name for f in dataclasses.fields(cls))


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value`` (dataclasses, enums, datetimes, bytes, tuples)."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return {"__enum__": type(value).__name__, "value": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        body = {name: encode(getattr(value, name)) for name in _field_names(type(value))}
        return {"__type__": type(value).__name__, **body}
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`; lists come back as tuples, as the dataclasses expect."""
    if isinstance(value, list):
        return tuple(decode(item) for item in value)
    if not isinstance(value, dict):
        return value
    if "__type__" in value:
        cls = _REGISTRY[value["__type__"]]
        return cls(**{k: decode(v) for k, v in value.items() if k != "__type__"})
    if "__enum__" in value:
        return _REGISTRY[value["__enum__"]](value["value"])
    if "__datetime__" in value:
        return datetime.fromisoformat(value["__datetime__"])
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    return {k: decode(v) for k, v in value.items()}
