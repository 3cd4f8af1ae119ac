"""A minimal TOML writer for the configs the rig generates (tables, arrays of tables, scalars)."""
from __future__ import annotations

import json
from typing import Any


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML scalar")


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_scalar(value)}")
    for key, value in tables:
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", dumps(value, name + ".").rstrip("\n")]
        else:
            for item in value:
                lines += ["", f"[[{name}]]", dumps(item, name + ".").rstrip("\n")]
    return "\n".join(line for line in lines if line is not None).lstrip("\n") + "\n"
