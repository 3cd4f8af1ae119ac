"""One codec between the persisted dataclasses and JSON, driven by their type hints.

``encode`` turns a dataclass into plain JSON data (enums by value, tuples as lists, nested
dataclasses as objects). ``decode`` builds it back and checks every value against the field's
type on the way: a saved state holding a number where a server name belongs is a damaged
file (TypeError or ValueError naming the field), never a state that half works. Unknown keys
are left out, so a file written by a later version still loads; missing keys take defaults.
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list, frozenset)):
        return [encode(v) for v in value]
    return value


def decode(hint: Any, data: Any, where: str = "") -> Any:
    """``data`` as the type ``hint`` (a dataclass, enum, tuple, union or plain type)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        problems = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return decode(arm, data, where)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
        raise TypeError("; ".join(problems))
    if origin is tuple:
        if not isinstance(data, list):
            raise TypeError(f"{where}: {data!r:.60} is not a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise TypeError(f"{where}: {data!r:.60} does not have {len(args)} items")
        return tuple(decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, data, where)
    return _plain(hint, data, where)


def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where or cls.__name__}: {data!r:.60} is not an object")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: decode(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items() if k in names})


def _plain(hint: Any, data: Any, where: str) -> Any:
    if hint is Any:
        return data
    if hint is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if hint in (int, str, bool) and isinstance(data, hint) and not (hint is int and isinstance(data, bool)):
        return data
    raise TypeError(f"{where}: {data!r:.60} is not {getattr(hint, '__name__', hint)}")
